#!/usr/bin/env bash
# Builds Prometheus's promtool from source through the Go module proxy and
# caches it under bin/. Prints the binary's path on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/.*github.com\/prometheus\/prometheus \(v[0-9.]*\).*/\1/p' "$ROOT/hack/tools/promtool/go.mod" | head -1)"
OUT="$ROOT/bin/promtool-$VERSION"
if [[ -x "$OUT" ]]; then
	echo "$OUT"
	exit 0
fi
mkdir -p "$ROOT/bin"
echo "[promtool] building promtool $VERSION from source (a few minutes cold)" >&2
start=$SECONDS
log() { echo "[promtool] $*" >&2; }
# shellcheck source=hack/progress.sh
source "$ROOT/hack/progress.sh"
with_progress "promtool" "$ROOT/bin/logs/build-promtool.log" \
	bash -c 'cd "$1/hack/tools/promtool" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$2" github.com/prometheus/prometheus/cmd/promtool' _ "$ROOT" "$OUT.tmp" ||
	{ echo "[promtool] FAILED to build promtool" >&2; exit 1; }
mv "$OUT.tmp" "$OUT"
echo "[promtool] built in $((SECONDS - start))s" >&2
echo "$OUT"
