#!/usr/bin/env bash
# Build the docker image that `rvidia worker --isolation docker` runs chunks in (default tag
# rvidia-chunk:local), locally, with no registry: `docker import` of a tar of mount points only. The
# host's system directories, Python runtime and packages are bound into each container read-only at
# run time (docs/security.md). Usage: scripts/build_chunk_image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
exec "$PY" -m rvidia.worker.dockerbox "$@"
