#!/usr/bin/env bash
# make test-e2e-repeat N: the end-to-end suite N times in a row against one
# cluster (started or refreshed once by make dev), stopping at the first
# failure. Each run's output goes to bin/e2e-runs/run-<i>.log; a line per
# run says how it went and how long it took.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
n="${1:-10}"
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 N (N >= 1)" >&2; exit 2; }
hack/dev.sh
logs="$ROOT/bin/e2e-runs"
mkdir -p "$logs"
go test -race -tags e2e -c -o "$ROOT/bin/e2e.test" ./hack/e2e/
start=$SECONDS
for i in $(seq 1 "$n"); do
	t0=$SECONDS
	log="$logs/run-$i.log"
	if (cd hack/e2e && KUBECONFIG="$ROOT/bin/dev/kubeconfig" "$ROOT/bin/e2e.test" -test.count=1 -test.v -test.timeout 30m) >"$log" 2>&1; then
		echo "[e2e-repeat] run $i/$n passed in $((SECONDS - t0))s ($log)"
	else
		echo "[e2e-repeat] run $i/$n FAILED after $((SECONDS - t0))s; the failures:"
		grep -E -- '--- FAIL|_test.go:[0-9]+:' "$log" | head -40 || true
		echo "[e2e-repeat] whole log: $log"
		exit 1
	fi
done
echo "[e2e-repeat] $n of $n runs passed in $((SECONDS - start))s"
