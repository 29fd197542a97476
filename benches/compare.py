#!/usr/bin/env python3
"""forkline against DuckDB and polars on the very same Parquet files.

    python benches/compare.py --store DIR --bin target/release/forkline [--reps 15] [--out FILE.md]

DIR is a store written by `forkline bench-data`. The harness
- starts `forkline serve` on the store and sends forkline's queries
  (benches/queries/*.sql, table functions, and benches/queries/naive/*.sql,
  the same answers as plain joins of `metrics` with a segments table) to
  `POST /api/sql`, decoding the Arrow IPC stream with pyarrow;
- lists the metrics table's current files with the `deltalake` package and
  runs DuckDB and polars (benches/bench_polars.py) over exactly those files;
- computes every run's segments from the `runs` table in Python (an oracle
  independent of forkline's lineage code);
- checks that all engines return the same rows for every query, and aborts if not;
- times each lineage query's raw-table floor: the plain `metrics` query that
  returns the owners' rows the lineage query is stitched from, each owner's
  range once, with the query's ordering or aggregate but no stitching (see
  `floor_sql`); the round-two target is lineage ≤ 1.5 × floor;
- warms every engine up once per query, then times `--reps` interleaved rounds
  and reports p50s, plus cold (fresh process) times for Q1 and Q3.

Requirements: benches/requirements.txt.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
from deltalake import DeltaTable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_polars  # noqa: E402

QUERY_DIR = os.path.join(HERE, "queries")
QUERIES = {
    "q1": "q1_stitched_one_metric",
    "q2": "q2_stitched_all_metrics",
    "q3": "q3_family_one_metric",
    "q4": "q4_leaderboard",
    "q5": "q5_full_scan",
    "q6": "q6_family_downsample",
    "q7": "q7_stitched_zoom",
    "q8": "q8_project_at_step",
}
TITLES = {
    "q1": "Q1 stitched, 1 metric, depth-8 run",
    "q2": "Q2 stitched, all metrics, depth-8 run",
    "q3": "Q3 family, 1 metric, {n} runs",
    "q4": "Q4 leaderboard, last point, {n} runs",
    "q5": "Q5 full-scan aggregate",
    "q6": "Q6 family downsample, 1,000 buckets",
    "q7": "Q7 zoom, 300 steps across a fork, depth-8 run",
    "q8": "Q8 one step, {n} runs",
}
LINEAGE = ["q1", "q2", "q3", "q4", "q6", "q7", "q8"]
# Q8's step: every run's stitched view holds it (each root logs 0..2,499).
Q8_STEP = 2000
ENGINES = ["forkline", "forkline-naive", "forkline-floor", "duckdb", "polars"]
# A floor with more owners than this selects them by a join with a table of
# owner ranges (and an IN list the scan prunes by), not by an OR per owner.
FLOOR_OR_OWNERS = 16
OPEN_END = 2**63 - 1
PROJECT = "bench"
PREFERRED_METRIC = "train/loss"

# DuckDB formulations of the lineage queries (`--try-variants` times both):
# "join": one scan joined to the segments table (DuckDB plans a hash join on
# run_id = owner and filters the step range); "union": one filtered scan per
# segment, UNION ALL. Measured with --try-variants --reps 3 on a scale-0.1
# store (100 runs, 5M points, 9 files) on the shared 2-core dev machine, p50:
#   q1 join 13.2 ms / union 28.3 ms;  q2 join 44.8 / union 57.6;
#   q3 join 98.7 / union 1,756;       q4 join 71.7 / union 1,605;
#   q6 join 96.3 / union 2,067.
# The join wins everywhere. Re-checked at scale 1 (1,000 runs, 50M points, 13
# files; --try-variants --reps 7, 2026-11-23): q1 join 19.8 / union 29.4;
# q2 join 28.6 / union 35.5; q3 join 75.2 / union 1,883; q4 join 657.6 (the
# 1,000-run union of q4 ran over 10 minutes and was stopped; q6 not re-run).
DUCKDB_DEFAULT = {
    "q1": "join",
    "q2": "join",
    "q3": "join",
    "q4": "join",
    "q6": "join",
    "q7": "join",
    "q8": "join",
}


def p50(xs):
    return statistics.median(xs)


# --------------------------------------------------------------------------- lineage oracle


def load_runs(store):
    """id -> (parent_id, fork_step, project, display_id), from the runs Delta table (latest revision)."""
    t = DeltaTable(os.path.join(store, "runs")).to_pyarrow_table(
        columns=["id", "rev", "parent_id", "fork_step", "project", "display_id"]
    )
    runs = {}
    best = {}
    for id_, rev, parent, fork, project, display in zip(*[t.column(c).to_pylist() for c in t.column_names]):
        if id_ not in best or rev > best[id_]:
            best[id_] = rev
            runs[id_] = (parent, fork, project, display)
    return runs


def chain(runs, run):
    """[(run, fork_step)] from the root to `run`; fork_step is None for the root."""
    out = []
    while run is not None:
        parent, fork, _, _ = runs[run]
        out.append((run, fork))
        run = parent
    return out[::-1]


def segments(runs, viewer):
    """(viewer, owner, from_step, to_step) rows of the viewer's stitched view (DESIGN.md, Segments)."""
    c = chain(runs, viewer)
    out = []
    lo = 0
    for i, (owner, _) in enumerate(c):
        hi = c[i + 1][1] if i + 1 < len(c) else OPEN_END
        out.append((viewer, owner, lo, hi))
        lo = hi + 1 if hi != OPEN_END else hi
    return out


def values_sql(segs):
    return ", ".join(f"({v}, {o}, {a}, {b})" for v, o, a, b in segs)


# --------------------------------------------------------------------------- forkline over HTTP


class Forkline:
    def __init__(self, binary, store):
        self.log = open(os.path.join(tempfile.gettempdir(), "forkline-compare-serve.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--store", store, "serve", "--listen", "127.0.0.1:0", "--flight-listen", "off"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("forkline serving"):
            self.proc.kill()
            raise SystemExit(f"forkline serve did not start: {line!r} (log: {self.log.name})")
        base = next(w for w in line.split() if w.startswith("http://"))
        host, port = base[len("http://") :].rstrip("/").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)

    def query(self, sql):
        self.conn.request(
            "POST",
            "/api/sql",
            body=json.dumps({"sql": sql}),
            headers={"content-type": "application/json", "accept": "application/vnd.apache.arrow.stream"},
        )
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"forkline answered {resp.status}: {body[:2000]!r}\nquery: {sql[:2000]}")
        return pa.ipc.open_stream(body).read_all()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def read_query(name, naive=False):
    path = os.path.join(QUERY_DIR, "naive" if naive else "", QUERIES[name] + ".sql")
    with open(path) as f:
        return f.read()


def fill(text, params):
    for k, v in params.items():
        text = text.replace("{" + k + "}", str(v))
    return text


# --------------------------------------------------------------------------- DuckDB


def duckdb_setup(files, threads):
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return [f"SET threads = {threads}", f"CREATE VIEW metrics AS SELECT * FROM read_parquet([{listed}])"]


def duckdb_sql(name, metric, segs, width, variant=None, window=None):
    variant = variant or DUCKDB_DEFAULT.get(name)
    if name == "q5":
        return (
            "SELECT metric, count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max "
            "FROM metrics GROUP BY metric ORDER BY metric"
        )
    mfilter = f"metric = '{metric}'" if name != "q2" else "metric IS NOT NULL"
    if window is not None:
        # Q7, Q8: the step window a user writes, which the peer pushes into its scan.
        mfilter += f" AND step BETWEEN {window[0]} AND {window[1]}"
    if variant == "union":
        stitched = " UNION ALL ".join(
            f"SELECT {v}::BIGINT AS viewer, metric, step, value FROM metrics "
            f"WHERE run_id = {o} AND step BETWEEN {a} AND {b} AND {mfilter}"
            for v, o, a, b in segs
        )
    else:
        stitched = (
            "SELECT s.viewer, m.metric, m.step, m.value FROM metrics m "
            f"JOIN (VALUES {values_sql(segs)}) AS s(viewer, owner, from_step, to_step) "
            "ON m.run_id = s.owner AND m.step BETWEEN s.from_step AND s.to_step "
            f"WHERE m.{mfilter}"
        )
    if name == "q1":
        return f"SELECT step, value FROM ({stitched}) ORDER BY step"
    if name == "q2":
        return f"SELECT metric, step, value FROM ({stitched}) ORDER BY metric, step"
    if name == "q3":
        return f"SELECT viewer AS run_id, step, value FROM ({stitched}) ORDER BY run_id, step"
    if name == "q7":
        return f"SELECT step, value FROM ({stitched}) ORDER BY step"
    if name == "q8":
        return f"SELECT viewer AS run_id, value FROM ({stitched}) ORDER BY run_id"
    if name == "q4":
        return (
            f"SELECT viewer AS run_id, max(step) AS step, arg_max(value, step) AS value FROM ({stitched}) "
            "GROUP BY viewer ORDER BY run_id"
        )
    if name == "q6":
        return (
            f"SELECT viewer AS run_id, step // {width} AS bucket, min(value) AS min, max(value) AS max, "
            f"arg_max(value, step) AS last, count(*) AS n FROM ({stitched}) "
            f"GROUP BY viewer, step // {width} ORDER BY run_id, bucket"
        )
    raise ValueError(name)


# --------------------------------------------------------------------------- raw-table floor


def owner_ranges(segs):
    """(owner, from_step, to_step) once per owner: the union of its segments.

    An owner's segments start at the same step in every viewer's view (the
    step after its own fork), so the union of its ranges is one range."""
    ranges = {}
    for _, o, a, b in segs:
        lo, hi = ranges.get(o, (a, b))
        ranges[o] = (min(lo, a), max(hi, b))
    return sorted((o, a, b) for o, (a, b) in ranges.items())


def floor_sql(name, metric, segs, width, window=None):
    """The raw-table floor of a lineage query (forkline SQL over `metrics`).

    It returns the owners' rows the lineage query reads, each owner's range
    once: for one viewer (Q1, Q2, Q7) the same rows as the query; for a family
    or a project the owner rows the views are stitched from (fewer rows than
    the views, which repeat inherited prefixes); Q4, Q6 and Q8 apply the
    query's aggregate or step to those rows, grouped by owner."""
    owners = owner_ranges(segs)
    conds = [] if name == "q2" else [f"m.metric = '{metric}'"]
    if window is not None:
        conds.append(f"m.step BETWEEN {window[0]} AND {window[1]}")
    if len(owners) <= FLOOR_OR_OWNERS:
        conds.append(
            "(" + " OR ".join(f"(m.run_id = {o} AND m.step BETWEEN {a} AND {b})" for o, a, b in owners) + ")"
        )
        source = "metrics m"
    else:
        conds.append("m.run_id IN (" + ", ".join(str(o) for o, _, _ in owners) + ")")
        listed = ", ".join(f"({o}, {a}, {b})" for o, a, b in owners)
        source = (
            f"metrics m JOIN (VALUES {listed}) AS o(owner, from_step, to_step) "
            "ON m.run_id = o.owner AND m.step BETWEEN o.from_step AND o.to_step"
        )
    owned = f"(SELECT m.run_id, m.metric, m.step, m.value FROM {source} WHERE {' AND '.join(conds)}) AS owned"
    if name in ("q1", "q7"):
        return f"SELECT step, value FROM {owned} ORDER BY step"
    if name == "q2":
        return f"SELECT metric, step, value FROM {owned} ORDER BY metric, step"
    if name == "q3":
        return f"SELECT run_id, step, value FROM {owned} ORDER BY run_id, step"
    if name == "q4":
        return (
            f"SELECT run_id, max(step) AS step, last_value(value ORDER BY step) AS value FROM {owned} "
            "GROUP BY run_id ORDER BY run_id"
        )
    if name == "q6":
        return (
            f"SELECT run_id, step / {width} AS bucket, min(value) AS min, max(value) AS max, "
            f"last_value(value ORDER BY step) AS last, count(*) AS n FROM {owned} "
            f"GROUP BY run_id, step / {width} ORDER BY run_id, bucket"
        )
    if name == "q8":
        return f"SELECT run_id, value FROM {owned} ORDER BY run_id"
    raise ValueError(name)


# Floors whose rows equal the lineage query's (one viewer; Q4: every run's
# last point is its own): checked like an engine's answer.
FLOOR_SAME_ROWS = ("q1", "q2", "q4", "q7")


# --------------------------------------------------------------------------- comparison


def rows_of(table):
    cols = [c.to_pylist() for c in table.columns]
    return sorted(zip(*cols), key=lambda r: tuple((x is None, x) for x in r))


def same(name, a, b):
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if len(x) != len(y):
            return f"row {i}: {x} vs {y}"
        for j, (u, v) in enumerate(zip(x, y)):
            if u == v:
                continue
            # Q5's sum adds 10^5+ floats in an engine-specific order: equal up to rounding.
            if name == "q5" and j == 2 and math.isclose(u, v, rel_tol=1e-9):
                continue
            return f"row {i}: {x} vs {y}"
    return None


# --------------------------------------------------------------------------- machine


def machine(binary, store, files, nbytes, points, bench_runs):
    cpu = "?"
    mem = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            kb = int(next(l.split()[1] for l in f if l.startswith("MemTotal")))
            mem = f"{kb / 2**20:.1f} GiB"
    except OSError:
        pass
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}; "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; {version} ({binary}), duckdb {duckdb.__version__}, "
        f"polars {pl.__version__}, pyarrow {pa.__version__}; scale {bench_runs / 1000:g} "
        f"({bench_runs} runs), {points:,} points, {len(files)} files, {nbytes:,} bytes"
    )


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="store directory written by forkline bench-data")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "forkline"))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cold-reps", type=int, default=5)
    ap.add_argument("--out", help="also write the Markdown tables here")
    ap.add_argument("--try-variants", action="store_true", help="time both peer formulations of each lineage query")
    args = ap.parse_args()
    store = os.path.abspath(args.store)
    binary = os.path.abspath(args.bin)
    threads = os.cpu_count()

    # Targets, chosen deterministically from the runs table.
    runs = load_runs(store)
    bench = sorted(i for i, r in runs.items() if r[2] == PROJECT)
    if not bench:
        raise SystemExit(f"{store} has no `{PROJECT}` project: write it with forkline bench-data")
    depth = {i: len(chain(runs, i)) - 1 for i in bench}
    deepest = max(depth.values())
    if deepest != 8:
        print(f"warning: the deepest run has depth {deepest}, not 8", file=sys.stderr)
    target = min(i for i in bench if depth[i] == deepest)
    root = chain(runs, target)[0][0]
    family = [i for i in bench if chain(runs, i)[0][0] == root]

    files = DeltaTable(os.path.join(store, "metrics")).file_uris()
    files = [f[len("file://") :] if f.startswith("file://") else f for f in files]
    nbytes = sum(os.path.getsize(f) for f in files)
    points = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    metrics = sorted(
        pl.scan_parquet(files).select(pl.col("metric").unique()).collect()["metric"].to_list()
    )
    metric = PREFERRED_METRIC if PREFERRED_METRIC in metrics else metrics[0]

    segs = {
        "q1": segments(runs, target),
        "q2": segments(runs, target),
        "q3": [s for v in family for s in segments(runs, v)],
        "q4": [s for v in bench for s in segments(runs, v)],
        "q6": [s for v in family for s in segments(runs, v)],
    }
    segs["q7"] = segs["q1"]
    segs["q8"] = segs["q4"]
    # Q7's window: 150 steps either side of the start of the run's own segment.
    zoom_lo = segs["q1"][-1][2] - 150
    windows = {"q7": (zoom_lo, zoom_lo + 299), "q8": (Q8_STEP, Q8_STEP)}
    max_step = (
        pl.scan_parquet(files)
        .filter(pl.col("run_id").is_in(family) & (pl.col("metric") == metric))
        .select(pl.col("step").max())
        .collect()
        .item()
    )
    width = math.ceil((max_step + 1) / 1000)
    base = {
        "run": runs[target][3],
        "family": runs[root][3],
        "metric": metric,
        "width": width,
        "lo": windows["q7"][0],
        "hi": windows["q7"][1],
        "step": Q8_STEP,
    }
    print(
        f"targets: run {runs[target][3]} (id {target}, depth {deepest}), family {runs[root][3]} "
        f"({len(family)} runs), metric {metric}, bucket width {width}; {len(files)} files, {points:,} points",
        file=sys.stderr,
    )

    fl = Forkline(binary, store)
    con = duckdb.connect()
    for stmt in duckdb_setup(files, threads):
        con.execute(stmt)
    try:
        texts = {}
        for q in QUERIES:
            texts[(q, "forkline")] = fill(read_query(q), base)
            if q in LINEAGE:
                texts[(q, "forkline-naive")] = fill(read_query(q, naive=True), {**base, "segments": values_sql(segs[q])})
                texts[(q, "forkline-floor")] = floor_sql(q, metric, segs[q], width, windows.get(q))
            texts[(q, "duckdb")] = duckdb_sql(q, metric, segs.get(q), width, window=windows.get(q))

        def run(q, engine, variant=None):
            if engine == "forkline":
                return fl.query(texts[(q, engine)])
            if engine in ("forkline-naive", "forkline-floor"):
                return fl.query(texts[(q, engine)])
            if engine == "duckdb":
                sql = (
                    texts[(q, engine)]
                    if variant is None
                    else duckdb_sql(q, metric, segs.get(q), width, variant, windows.get(q))
                )
                return con.sql(sql).to_arrow_table()
            lf = bench_polars.query(q, files, metric, segs.get(q), width, variant, windows.get(q))
            return lf.collect().to_arrow()

        def engines_of(q):
            return [e for e in ENGINES if e not in ("forkline-naive", "forkline-floor") or q in LINEAGE]

        if args.try_variants:
            for q in LINEAGE:
                for engine in ("duckdb", "polars"):
                    for variant in ("join", "union"):
                        run(q, engine, variant)
                        ts = []
                        for _ in range(max(args.reps, 1)):
                            t0 = time.perf_counter()
                            run(q, engine, variant)
                            ts.append(time.perf_counter() - t0)
                        print(f"{q} {engine:7} {variant:5} p50 {p50(ts) * 1e3:9.1f} ms", file=sys.stderr)
            return

        # Warm-up, and the check that every engine gives the same rows.
        nrows = {}
        for q in QUERIES:
            answers = {e: rows_of(run(q, e)) for e in engines_of(q)}
            ref = answers["forkline"]
            for e, rows in answers.items():
                if e == "forkline-floor" and q not in FLOOR_SAME_ROWS:
                    continue
                diff = same(q, ref, rows)
                if diff:
                    raise SystemExit(f"MISMATCH in {q}: forkline vs {e}: {diff}")
            if not ref:
                raise SystemExit(f"{q} returned no rows")
            nrows[q] = len(ref)
            print(f"{q}: {len(ref):,} rows, all engines agree", file=sys.stderr)

        # Interleaved rounds: every engine runs each query once per round, engine order rotated.
        times = {(q, e): [] for q in QUERIES for e in engines_of(q)}
        for r in range(args.reps):
            order = ENGINES[r % len(ENGINES) :] + ENGINES[: r % len(ENGINES)]
            for q in QUERIES:
                for e in order:
                    if (q, e) not in times:
                        continue
                    t0 = time.perf_counter()
                    run(q, e)
                    times[(q, e)].append(time.perf_counter() - t0)
            print(f"round {r + 1}/{args.reps} done", file=sys.stderr)
    finally:
        fl.stop()

    # Cold: a fresh process per query.
    cold = {}
    with tempfile.TemporaryDirectory() as tmp:
        for q in ("q1", "q3"):
            sql_file = os.path.join(tmp, f"{q}.sql")
            with open(sql_file, "w") as f:
                f.write(texts[(q, "forkline")])
            duck_file = os.path.join(tmp, f"{q}.duckdb.json")
            with open(duck_file, "w") as f:
                json.dump({"setup": duckdb_setup(files, threads), "query": texts[(q, "duckdb")]}, f)
            polars_file = os.path.join(tmp, f"{q}.polars.json")
            with open(polars_file, "w") as f:
                json.dump({"query": q, "files": files, "metric": metric, "segments": segs[q], "width": width}, f)
            commands = {
                "forkline": [binary, "--store", store, "sql", "-f", sql_file, "--format", "csv", "-o", os.devnull],
                "duckdb": [
                    sys.executable,
                    "-c",
                    "import duckdb, json, sys\n"
                    "spec = json.load(open(sys.argv[1]))\n"
                    "con = duckdb.connect()\n"
                    "[con.execute(s) for s in spec['setup']]\n"
                    "con.sql(spec['query']).to_arrow_table()\n",
                    duck_file,
                ],
                "polars": [
                    sys.executable,
                    "-c",
                    "import json, sys\n"
                    f"sys.path.insert(0, {HERE!r})\n"
                    "import bench_polars\n"
                    "bench_polars.run(json.load(open(sys.argv[1])))\n",
                    polars_file,
                ],
            }
            for r in range(args.cold_reps):
                for e, cmd in commands.items():
                    t0 = time.perf_counter()
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    elapsed = time.perf_counter() - t0
                    if proc.returncode != 0:
                        raise SystemExit(f"cold {q} {e} failed: {proc.stderr[-2000:]}")
                    cold.setdefault((q, e), []).append(elapsed)

    ms = lambda s: f"{s * 1e3:,.1f} ms"  # noqa: E731
    lines = [
        f"forkline vs DuckDB vs polars on the same {len(files)} Parquet files, p50 of {args.reps} interleaved rounds "
        "(warm: server and peers' connections already up)",
        "",
        "| query | rows | forkline | forkline naive join | raw floor | forkline / floor | DuckDB | polars | faster peer / forkline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in QUERIES:
        m = {e: p50(times[(q, e)]) for e in engines_of(q)}
        peer = min(m["duckdb"], m["polars"])
        title = TITLES[q].format(n=len(family) if q in ("q3", "q6") else len(bench))
        naive = ms(m["forkline-naive"]) if "forkline-naive" in m else "—"
        floor = ms(m["forkline-floor"]) if "forkline-floor" in m else "—"
        over_floor = f"{m['forkline'] / m['forkline-floor']:.2f}x" if "forkline-floor" in m else "—"
        lines.append(
            f"| {title} | {nrows[q]:,} | {ms(m['forkline'])} | {naive} | {floor} | {over_floor} | "
            f"{ms(m['duckdb'])} | {ms(m['polars'])} | {peer / m['forkline']:.2f}x |"
        )
    lines += [
        "",
        f"Cold: a fresh process per query, p50 of {args.cold_reps} (forkline: `forkline sql -f Q --format csv -o /dev/null`, "
        "opening the store; DuckDB and polars: a fresh `python -c` that imports the library and runs the query, "
        "so their figures include Python start-up and import)",
        "",
        "| query | forkline | DuckDB (incl. Python start) | polars (incl. Python start) |",
        "|---|---:|---:|---:|",
    ]
    for q in ("q1", "q3"):
        lines.append(
            f"| {TITLES[q].format(n=len(family))} | {ms(p50(cold[(q, 'forkline')]))} | "
            f"{ms(p50(cold[(q, 'duckdb')]))} | {ms(p50(cold[(q, 'polars')]))} |"
        )
    lines += [
        "",
        "Peers' formulations of the lineage queries: DuckDB "
        + ", ".join(f"{q} {v}" for q, v in DUCKDB_DEFAULT.items())
        + "; polars "
        + ", ".join(f"{q} {v}" for q, v in bench_polars.DEFAULT.items())
        + " (join: one scan joined to the segments table; union: one filtered scan per segment).",
        "",
        "Machine: " + machine(binary, store, files, nbytes, points, len(bench)),
    ]
    if "/debug/" in binary:
        lines += ["", "**forkline is a debug build here: its figures are a smoke test, not a measurement.**"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
