#!/usr/bin/env bash
# The README's second command: set up, then run every check and every test (Docker,
# PostgreSQL and browser tests included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure-docker.sh
SHUYU_TEST_POSTGRES_URL=${SHUYU_TEST_POSTGRES_URL:-$(bash scripts/ensure-postgres.sh)}
export SHUYU_TEST_POSTGRES_URL
bash scripts/ensure-chromium.sh
echo "== lint: ruff, mypy --strict, import layers"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
echo "== sandbox image"
.venv/bin/shuyu image build
echo "== tests"
exec .venv/bin/pytest -p no:cacheprovider "$@"
