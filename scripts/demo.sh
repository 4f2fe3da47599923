#!/usr/bin/env bash
# The README's first command: set everything up and run the full demo on the embedded
# defaults (SQLite, a local key file, the local Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure-docker.sh
export SHUYU_HOME=${SHUYU_HOME:-$HOME/.shuyu-demo}
exec .venv/bin/shuyu demo run "$@"
