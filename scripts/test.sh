#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit / SQL-logic / CLI / HTTP tests,
# then the real pluto-ml SDK against a real `forkline serve` (tests/python), then
# the integration suites again with every store on a loopback S3 server (moto).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# INSTA_UPDATE=no: a changed snapshot fails and no `.snap.new` is written
# (review changes with INSTA_UPDATE=always cargo test --test report).
INSTA_UPDATE=no cargo test
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
FORKLINE_BIN="$PWD/target/debug/forkline" .venv/bin/python -m pytest -q tests/python
# Each test's store becomes a fresh s3:// prefix on moto (tests/common/mod.rs),
# and the tests read and damage its objects through object_store whatever the
# backend. Every suite that uses temp_store() runs here; sql_logic and
# lineage_props are left out because they keep their store in memory://, so a
# second run would test nothing new.
INSTA_UPDATE=no .venv/bin/python tests/python/s3_server.py -- \
  cargo test --test lineage_docs --test compact --test http --test cli --test export --test crash \
  --test report --test maintenance --test ingest_http --test bench_data --test multi_process \
  --test cluster_processes
