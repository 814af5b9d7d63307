#!/usr/bin/env bash
# Sets up, checks formatting and lints, makes sure PostgreSQL and Redis answer, and runs every test
# (unit, integration, the real-model and real-video tests) with nextest. Tests make their own
# databases and key prefixes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# cargo against the venv's libtorch (tch builds with LIBTORCH_USE_PYTORCH), test tools on PATH.
project_cargo() { PATH="$PWD/.venv/bin:$PWD/.tools/bin:$PATH" LIBTORCH_USE_PYTORCH=1 cargo "$@"; }
# The lint gate, before any test: unformatted code or a clippy warning fails the run.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
project_cargo fmt --check
project_cargo clippy --release --all-targets --locked -- -D warnings
# The build without FFmpeg (the GPU bundle's: raw:// and sim:// cameras only) keeps compiling.
project_cargo check --release --locked --no-default-features --bin its-analytics
# Tools the deployment and API tests run: promtool and a real Prometheus (Debian), and
# kubernetes-validate (Kubernetes schemas, offline) and schemathesis (PyPI) in a venv of their own.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # policy-rc.d may refuse to start the packaged service; the tests run their own Prometheus.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null || command -v promtool >/dev/null
fi
if ! .tools/bin/kubernetes-validate --version >/dev/null 2>&1 || ! .tools/bin/schemathesis --version >/dev/null 2>&1; then
  python3 -m venv .tools
  .tools/bin/pip install -q --disable-pip-version-check kubernetes-validate==1.37.0 schemathesis==4.32.5
fi
eval "$(scripts/services.sh)"
# Tests create their own database on this server and their own Redis key prefix.
export ITS_TEST_POSTGRES_URL=${ITS__POSTGRES__URL%/*}/postgres
export ITS_TEST_REDIS_URL=$ITS__REDIS__URL
unset ITS__POSTGRES__URL ITS__REDIS__URL
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
project_cargo nextest run --release --locked --no-fail-fast "$@"
