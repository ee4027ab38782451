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
( cd "$ROOT/hack/tools/promtool" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT.tmp" github.com/prometheus/prometheus/cmd/promtool ) >&2 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
	sleep 15
	kill -0 "$pid" 2>/dev/null && echo "[promtool]   still building ($((SECONDS - start))s)" >&2
done
wait "$pid" || { echo "[promtool] FAILED to build promtool" >&2; exit 1; }
mv "$OUT.tmp" "$OUT"
echo "[promtool] built in $((SECONDS - start))s" >&2
echo "$OUT"
