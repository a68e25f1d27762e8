#!/usr/bin/env bash
# Installs the Python packages the tests use as independent readers of runner's output, when
# missing: junitparser reads the --junit report in tests/github_actions.rs. From PyPI, pinned.
set -euo pipefail
PYTHON=${PYTHON:-python3}
PACKAGES=('junitparser==5.0.3')
MODULES='import junitparser'
if "$PYTHON" -c "$MODULES" >/dev/null 2>&1; then
    exit 0
fi
echo "installing ${PACKAGES[*]} for the tests (pip)" >&2
"$PYTHON" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
"$PYTHON" -c "$MODULES"
