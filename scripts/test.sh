#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (the README's second command).
# Fast tier first (unit, API, integration), then the slow tier (fault injection, load).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# The dashboard's browser tests drive Debian's chromium (nothing downloads a browser); without it they
# are skipped with the reason. Install it when we may.
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  command -v chromium >/dev/null \
    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || { echo "scripts/test.sh: could not install chromium; the browser tests will be skipped" >&2
         if [ "${CI:-}" = "true" ]; then exit 1; fi; }  # CI must run them
fi

echo "== fast tier"
"$PY" -m pytest -q -m "not slow" --durations=10 "$@"
echo "== slow tier"
set +e
"$PY" -m pytest -q -m slow --durations=10 "$@"
rc=$?
set -e
# pytest exits 5 when a tier has no tests yet; that is not a failure of the suite.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
  exit "$rc"
fi
