#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, SQL-logic, CLI and HTTP tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
