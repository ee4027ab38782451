#!/usr/bin/env bash
# Starts a mediaserver on loopback, runs mediaload against it and stops it.
# Extra arguments go to mediaload (e.g. hack/load.sh -publishers 50 -viewers 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p bin
go build -o bin/mediaserver ./cmd/mediaserver
go build -o bin/mediaload ./cmd/mediaload
PORT=18080 ADMIN_PORT=19090 MAX_SESSIONS=5000 LOG_LEVEL=warn \
	bin/mediaserver -listen-host=127.0.0.1 -ice-loopback -ice-interfaces=lo &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fsS http://127.0.0.1:19090/readyz >/dev/null 2>&1 && break; sleep 0.1; done
bin/mediaload -url http://127.0.0.1:18080 -admin http://127.0.0.1:19090 \
	-publishers 20 -viewers 4 -ws 12 -rate 20 -duration 30s -json bin/load-summary.json "$@"
echo "summary written to bin/load-summary.json"
