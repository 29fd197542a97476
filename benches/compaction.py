#!/usr/bin/env python3
"""Q1-Q4 on a compacted store built from many small ingest commits against the
same rows written in one batch.

    forkline --store /tmp/b-batch bench-data --scale 0.2 && forkline --store /tmp/b-batch compact
    forkline --store /tmp/b-small bench-data --scale 0.2 --commits 10000 && forkline --store /tmp/b-small compact
    python benches/compaction.py --batch /tmp/b-batch --small /tmp/b-small --bin target/release/forkline

Both stores come from the same seed and scale, so they hold the same runs
(same ids) and the same points. One `forkline serve` per store; the queries of
benches/queries run interleaved against both after a warm-up, rows are checked
equal, and the p50 of each is reported with the ratio small / batch.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare import (  # noqa: E402
    PREFERRED_METRIC,
    PROJECT,
    Forkline,
    chain,
    fill,
    load_runs,
    p50,
    read_query,
    rows_of,
    same,
)

QUERIES = {
    "q1": "q1_stitched_one_metric",
    "q2": "q2_stitched_all_metrics",
    "q3": "q3_family_one_metric",
    "q4": "q4_leaderboard",
}


def targets(store):
    runs = load_runs(store)
    bench = sorted(i for i, r in runs.items() if r[2] == PROJECT)
    if not bench:
        raise SystemExit(f"{store} has no `{PROJECT}` project")
    depth = {i: len(chain(runs, i)) - 1 for i in bench}
    target = min(i for i in bench if depth[i] == max(depth.values()))
    root = chain(runs, target)[0][0]
    return {"run": runs[target][3], "family": runs[root][3], "metric": PREFERRED_METRIC, "width": 1}


def files_of(store):
    from deltalake import DeltaTable

    return len(DeltaTable(os.path.join(store, "metrics")).file_uris())


def commits_of(store):
    from deltalake import DeltaTable

    return DeltaTable(os.path.join(store, "metrics")).version()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", required=True, help="store written in one batch (then compacted)")
    ap.add_argument("--small", required=True, help="same seed and scale, written in many commits, then compacted")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "forkline"))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", help="also write the Markdown table here")
    args = ap.parse_args()
    stores = {"batch": os.path.abspath(args.batch), "small": os.path.abspath(args.small)}
    params = {k: targets(s) for k, s in stores.items()}
    if params["batch"] != params["small"]:
        raise SystemExit(f"the stores differ: {params}")
    texts = {q: fill(read_query(q), params["batch"]) for q in QUERIES}
    servers = {k: Forkline(os.path.abspath(args.bin), s) for k, s in stores.items()}
    try:
        for q in QUERIES:
            a, b = (rows_of(servers[k].query(texts[q])) for k in ("batch", "small"))
            diff = same(q, a, b)
            if diff:
                raise SystemExit(f"MISMATCH in {q}: {diff}")
            print(f"{q}: {len(a):,} rows, both stores agree", file=sys.stderr)
        times = {(q, k): [] for q in QUERIES for k in stores}
        for r in range(args.reps):
            order = ["batch", "small"] if r % 2 == 0 else ["small", "batch"]
            for q in QUERIES:
                for k in order:
                    t0 = time.perf_counter()
                    servers[k].query(texts[q])
                    times[(q, k)].append(time.perf_counter() - t0)
    finally:
        for s in servers.values():
            s.stop()
    lines = [
        f"stores: batch {stores['batch']} ({files_of(stores['batch'])} files), "
        f"small {stores['small']} ({files_of(stores['small'])} files, metrics table version "
        f"{commits_of(stores['small'])}); p50 of {args.reps} interleaved rounds",
        "",
        "| query | one batch, compacted | small commits, compacted | small / batch |",
        "|---|---:|---:|---:|",
    ]
    for q in QUERIES:
        a, b = p50(times[(q, "batch")]) * 1e3, p50(times[(q, "small")]) * 1e3
        lines.append(f"| {q} | {a:,.1f} ms | {b:,.1f} ms | {b / a:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
