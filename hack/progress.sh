# shellcheck shell=bash
# Sourced by the scripts that run long builds. Needs a log function.

# with_progress WHAT LOG CMD...: runs CMD with its output in LOG, saying
# every 15 s that it is still at it; on failure the end of LOG is shown.
with_progress() {
	local what="$1" logf="$2" t0=$SECONDS
	shift 2
	mkdir -p "$(dirname "$logf")"
	"$@" >"$logf" 2>&1 &
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		for _ in $(seq 15); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 1
		done
		kill -0 "$pid" 2>/dev/null && log "  $what: still at it ($((SECONDS - t0))s; log: $logf)"
	done
	if ! wait "$pid"; then
		log "ERROR: $what failed; the end of $logf:"
		tail -30 "$logf" >&2
		return 1
	fi
}
