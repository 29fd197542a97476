"""The benchmark queries for polars, over the metrics table's Parquet files.

Kept apart from compare.py so that a cold measurement (a fresh interpreter)
imports polars only. `segments` are rows (viewer, owner, from_step, to_step),
the open end as to_step = 2**63 - 1; computed by compare.py from `runs`.

Two formulations of a lineage query were tried (`compare.py --try-variants`):
- "join": one scan, an equi-join of the points with the segments table on
  run_id = owner, then the step range as a filter;
- "union": one filtered scan per segment (run_id, step range pushed into
  the Parquet scan), concatenated.
DEFAULT below keeps the faster one per query; the measurement it rests on is in
the comment next to it.
"""

import polars as pl

# Measured with compare.py --try-variants --reps 3 on a scale-0.1 store
# (100 runs, 5M points, 9 files) on the shared 2-core dev machine, p50:
#   q1 join 19.9 ms / union 32.4 ms;  q2 join 137.8 / union 48.6;
#   q3 join 94.1 / union 1,054;       q4 join 41.2 / union 1,789;
#   q6 join 106.0 / union 2,301.
# Re-checked at scale 1 (1,000 runs, 50M points, 13 files; --try-variants
# --reps 7, 2026-11-23): q1 join 67.3 / union 31.3; q2 join 557.1 / union
# 49.6; q3 join 129.3 / union 1,054 (q4, q6 not re-run: see compare.py).
DEFAULT = {
    "q1": "union",
    "q2": "union",
    "q3": "join",
    "q4": "join",
    "q6": "join",
    "q7": "union",
    "q8": "join",
}


def scan(files):
    return pl.scan_parquet(files)


def _segments_frame(segments):
    viewer, owner, lo, hi = zip(*segments)
    return pl.LazyFrame(
        {"viewer": list(viewer), "owner": list(owner), "from_step": list(lo), "to_step": list(hi)},
        schema={"viewer": pl.Int64, "owner": pl.Int64, "from_step": pl.Int64, "to_step": pl.Int64},
    )


def _stitched(lf, segments, metric, variant, window=None):
    """Points of every viewer's stitched view: columns viewer, metric, step, value."""
    if metric is not None:
        lf = lf.filter(pl.col("metric") == metric)
    if window is not None:
        lf = lf.filter(pl.col("step").is_between(window[0], window[1]))
    if variant == "union":
        parts = [
            lf.filter((pl.col("run_id") == o) & (pl.col("step") >= a) & (pl.col("step") <= b)).select(
                pl.lit(v, dtype=pl.Int64).alias("viewer"), "metric", "step", "value"
            )
            for v, o, a, b in segments
        ]
        return pl.concat(parts)
    return (
        lf.select("run_id", "metric", "step", "value")
        .join(_segments_frame(segments), left_on="run_id", right_on="owner")
        .filter((pl.col("step") >= pl.col("from_step")) & (pl.col("step") <= pl.col("to_step")))
        .select("viewer", "metric", "step", "value")
    )


def query(name, files, metric, segments, width, variant=None, window=None):
    """The LazyFrame answering query `name` (q1 … q8; `window`: Q7's and Q8's step range)."""
    lf = scan(files)
    variant = variant or DEFAULT.get(name)
    if name == "q1":
        return _stitched(lf, segments, metric, variant).select("step", "value").sort("step")
    if name == "q2":
        return _stitched(lf, segments, None, variant).select("metric", "step", "value").sort("metric", "step")
    if name == "q3":
        return (
            _stitched(lf, segments, metric, variant)
            .select(pl.col("viewer").alias("run_id"), "step", "value")
            .sort("run_id", "step")
        )
    if name == "q4":
        return (
            _stitched(lf, segments, metric, variant)
            .group_by("viewer")
            .agg(pl.col("step").max(), pl.col("value").get(pl.col("step").arg_max()))
            .rename({"viewer": "run_id"})
            .sort("run_id")
        )
    if name == "q7":
        return _stitched(lf, segments, metric, variant, window).select("step", "value").sort("step")
    if name == "q8":
        return (
            _stitched(lf, segments, metric, variant, window)
            .select(pl.col("viewer").alias("run_id"), "value")
            .sort("run_id")
        )
    if name == "q5":
        return (
            lf.group_by("metric")
            .agg(
                pl.len().alias("n"),
                pl.col("value").sum().alias("sum"),
                pl.col("value").min().alias("min"),
                pl.col("value").max().alias("max"),
            )
            .sort("metric")
        )
    if name == "q6":
        return (
            _stitched(lf, segments, metric, variant)
            .with_columns((pl.col("step") // width).alias("bucket"))
            .group_by("viewer", "bucket")
            .agg(
                pl.col("value").min().alias("min"),
                pl.col("value").max().alias("max"),
                pl.col("value").get(pl.col("step").arg_max()).alias("last"),
                pl.len().alias("n"),
            )
            .rename({"viewer": "run_id"})
            .sort("run_id", "bucket")
        )
    raise ValueError(f"unknown query {name}")


def run(spec):
    """Runs one query described by a dict (the cold measurement's entry point); returns an Arrow table."""
    return (
        query(spec["query"], spec["files"], spec.get("metric"), spec.get("segments"), spec.get("width"), spec.get("variant"))
        .collect()
        .to_arrow()
    )
