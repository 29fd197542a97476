#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit / SQL-logic / CLI / HTTP tests,
# then the real pluto-ml SDK against a real `forkline serve` (tests/python).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
FORKLINE_BIN="$PWD/target/debug/forkline" .venv/bin/python -m pytest -q tests/python
