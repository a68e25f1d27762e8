#!/usr/bin/env bash
# Installs what tests/browser.rs drives: Debian's headless Chromium and its WebDriver
# (chromedriver), when chromedriver is missing. Needs root or sudo, like the base image step.
set -euo pipefail
if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
echo "installing chromium and chromium-driver for the browser test (apt-get)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromedriver >/dev/null
