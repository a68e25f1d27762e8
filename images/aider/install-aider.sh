#!/bin/sh
# Installs aider-chat 0.86.2 into a venv at /venv (runs as root in the throwaway build stage).
# From the wheels in /tmp/runner/wheels when there are any (no index is contacted), else from
# PyPI, trusting the system store (which holds the build's CA bundle, if one was given).
set -eu
version=0.86.2

python3 - <<'PY' || exit 1
import sys
if not (3, 10) <= sys.version_info[:2] <= (3, 12):
    sys.exit("images/aider: aider-chat needs Python 3.10-3.12; the base image has %d.%d" % sys.version_info[:2])
PY

python3 -m venv /venv
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off \
  PIP_NO_INPUT=1 PIP_NO_COLOR=1 PIP_ROOT_USER_ACTION=ignore
if [ -s /tmp/runner/ca-bundle.crt ]; then
  # pip in a venv trusts its bundled certifi, not the system store.
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi

if [ -n "$(find /tmp/runner/wheels -type f 2>/dev/null | head -n 1)" ]; then
  echo "images/aider: installing aider-chat $version from the wheels in the build context (no index)"
  /venv/bin/pip install --no-index --find-links /tmp/runner/wheels "aider-chat==$version"
else
  echo "images/aider: installing aider-chat $version from the package index"
  /venv/bin/pip install "aider-chat==$version"
fi
/venv/bin/aider --version
