#!/usr/bin/env bash
# Sets up, makes sure PostgreSQL and Redis answer, and runs every test (unit, integration, the
# real-model and real-video tests) with nextest. Tests make their own databases and key prefixes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
eval "$(scripts/services.sh)"
# Tests create their own database on this server and their own Redis key prefix.
export ITS_TEST_POSTGRES_URL=${ITS__POSTGRES__URL%/*}/postgres
export ITS_TEST_REDIS_URL=$ITS__REDIS__URL
unset ITS__POSTGRES__URL ITS__REDIS__URL
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
PATH="$PWD/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 cargo nextest run --release --locked --no-fail-fast "$@"
