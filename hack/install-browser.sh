#!/usr/bin/env bash
# Installs what the browser tests need when it is missing: Debian's
# Chromium, and certutil (libnss3-tools) with which the HTTPS test makes
# Chromium trust a test CA. No recommended packages; apt's output goes to a
# log file and one line says what happened. Needs root and apt-get;
# elsewhere it says what to do and the browser tests skip (in CI they fail).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v certutil >/dev/null 2>&1 || need+=(libnss3-tools)
((${#need[@]} == 0)) && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
	mkdir -p "$ROOT/bin/logs"
	logf="$ROOT/bin/logs/apt-browser.log"
	start=$SECONDS
	echo "[browser] installing ${need[*]} from Debian (log: $logf)" >&2
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$logf" 2>&1; then
		echo "[browser] apt-get failed; the end of $logf:" >&2
		tail -20 "$logf" >&2
		exit 1
	fi
	echo "[browser] installed ${need[*]} in $((SECONDS - start))s" >&2
	exit 0
fi
echo "[browser] missing: ${need[*]}; install them (apt-get install --no-install-recommends chromium libnss3-tools) to run the browser tests" >&2
