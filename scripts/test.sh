#!/usr/bin/env bash
# The whole test suite: install what the end-to-end tests need (they run real sshd, real Nix and
# network namespaces, so: root on Linux), then unit, CLI and sandbox-fleet tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --quiet --all-targets
cargo test --no-fail-fast -- --test-threads="${NIXDEPLOY_TEST_THREADS:-4}"
