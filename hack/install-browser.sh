#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the browser tests when
# they are missing (needs root and apt-get; elsewhere it says what to do and
# the browser tests skip, except in CI where they fail).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
	exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
	echo "[browser] installing Debian's chromium and chromium-driver" >&2
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
	exit 0
fi
echo "[browser] chromium is missing: install it (apt-get install chromium chromium-driver) to run the browser tests" >&2
