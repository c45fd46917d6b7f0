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

# Containment tests (tests/worker/test_sandbox.py, tests/integration/test_containment.py) run chunks
# under bubblewrap and in docker for real: install both, start dockerd ourselves (no init system on a
# CI machine) and build the chunk image locally (no registry). Without root they skip where the tools
# are missing; under CI they must not.
ci_must() {  # a step CI cannot do without: fail there, warn elsewhere
  echo "scripts/test.sh: $1; the containment tests that need it will be skipped" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
}
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  { command -v bwrap >/dev/null && command -v dockerd >/dev/null; } \
    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap docker.io >/dev/null) \
    || ci_must "could not install bubblewrap and docker.io"
  if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    (dockerd >/tmp/rvidia-test-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || ci_must "dockerd did not start (see /tmp/rvidia-test-dockerd.log)"
  fi
fi
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  bash scripts/build_chunk_image.sh || ci_must "could not build the chunk image"
fi

# The fault suite (tests/faults) cuts a worker off for real (ip netns, veth, iptables) and fills a tmpfs:
# it needs root and these tools. Without root those cases skip with the reason; under CI they must run.
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  { command -v ip >/dev/null && command -v iptables >/dev/null; } \
    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null) \
    || { echo "scripts/test.sh: could not install iproute2 and iptables; the network-cut test will fail" >&2
         if [ "${CI:-}" = "true" ]; then exit 1; fi; }
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
