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
# The multi-process cluster test runs once, on the S3 pass below, where its
# store is a bucket as a cluster's would be.
INSTA_UPDATE=no cargo test -- --skip a_cluster_of_separate_processes
# The benches' own equality checks (the cluster's rows against local ones,
# the report against per-run queries, fork depth's series), at a tiny scale:
# without `--bench`, which only `cargo bench` passes, each runs in seconds.
cargo test --bench cluster --bench report --bench fork_depth --bench catalog
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
FORKLINE_BIN="$PWD/target/debug/forkline" .venv/bin/python -m pytest -q tests/python
# Each test's store becomes a fresh s3:// prefix on moto (tests/common/mod.rs),
# and the tests read and damage its objects through object_store whatever the
# backend. sql_logic and lineage_props keep their store in memory://, so a
# second run would test nothing new; `cli`, `export`, `report` and
# `bench_data` read and write through the same store layer as the suites
# here and run on local disk only, to keep CI within its time.
INSTA_UPDATE=no .venv/bin/python tests/python/s3_server.py -- \
  cargo test --test lineage_docs --test compact --test http --test crash \
  --test maintenance --test ingest_http --test multi_process
INSTA_UPDATE=no .venv/bin/python tests/python/s3_server.py -- \
  cargo test --test cluster_processes a_cluster_of_separate_processes
