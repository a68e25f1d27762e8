#!/usr/bin/env bash
# Installs the Python packages the tests use as independent readers of runner's output, when
# missing: junitparser reads the --junit report (tests/github_actions.rs); jsonschema and PyYAML
# validate job files against `runner schema` (tests/schema.rs). From PyPI, pinned.
set -euo pipefail
PYTHON=${PYTHON:-python3}
PACKAGES=('junitparser==5.0.3' 'jsonschema==4.26.0' 'PyYAML==6.0.3')
MODULES='import junitparser, jsonschema, yaml'
if "$PYTHON" -c "$MODULES" >/dev/null 2>&1; then
    exit 0
fi
echo "installing ${PACKAGES[*]} for the tests (pip)" >&2
"$PYTHON" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
"$PYTHON" -c "$MODULES"
