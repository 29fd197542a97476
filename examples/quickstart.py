# Quickstart: a forked run family from forkline into pandas, polars and matplotlib.
#
# This script is the source of examples/quickstart.ipynb: each `# %%` line starts a
# notebook cell (`# %% [markdown]` a text cell). After editing it, regenerate the
# notebook with `python examples/make_notebook.py`; tests/python/test_quickstart.py
# fails while the two disagree. Run either against a server started with
#
#     forkline demo && forkline serve
#
# (HTTP on 127.0.0.1:7070, Arrow Flight SQL on 127.0.0.1:7071).

# %% [markdown]
# # forkline quickstart
#
# Runs in forkline can **fork** from a parent at a step and inherit its metric
# history. This notebook loads the stitched training loss of a whole run family
# from a running `forkline serve` (`forkline demo && forkline serve` gives you
# one) into pandas and polars, and plots every run of the family with its fork
# points.
#
# The short version — connect over Arrow Flight SQL and run one query into a
# pandas DataFrame:
#
# ```python
# import adbc_driver_flightsql.dbapi
#
# conn = adbc_driver_flightsql.dbapi.connect("grpc://127.0.0.1:7071", autocommit=True)
# loss = conn.execute("SELECT * FROM family_metrics('VS-1', 'train/loss')").fetch_df()
# ```
#
# Settings come from environment variables: `FORKLINE_FLIGHT` (Flight SQL
# endpoint, default `grpc://127.0.0.1:7071`), `FORKLINE_HTTP` (HTTP endpoint,
# default `http://127.0.0.1:7070`), `FORKLINE_API_KEY` (only needed once the
# store has API keys) and `QUICKSTART_FIGURE` (where the plot is saved,
# default `docs/stitched.png`).

# %%
import os

import adbc_driver_flightsql.dbapi

FLIGHT_URI = os.environ.get("FORKLINE_FLIGHT", "grpc://127.0.0.1:7071")
HTTP_URI = os.environ.get("FORKLINE_HTTP", "http://127.0.0.1:7070")
API_KEY = os.environ.get("FORKLINE_API_KEY")  # a key from `forkline keys create --project …`
FIGURE = os.environ.get("QUICKSTART_FIGURE", "docs/stitched.png")
AUTH = {"adbc.flight.sql.authorization_header": f"Bearer {API_KEY}"} if API_KEY else {}
# forkline is read-only and has no transactions: `autocommit=True` saves ADBC from asking for them.

# %% [markdown]
# ## The two lines: Flight SQL into pandas
#
# `family_metrics(run, metric)` returns, for every run of the family `run`
# belongs to, that run's **stitched** series: the steps it inherited from its
# ancestors (`inherited = true`, `source_run_id` = the ancestor owning the step)
# followed by its own points.

# %%
conn = adbc_driver_flightsql.dbapi.connect(FLIGHT_URI, db_kwargs=AUTH, autocommit=True)
loss = conn.execute("SELECT * FROM family_metrics('VS-1', 'train/loss')").fetch_df()
loss.sort_values(["run_id", "step"])

# %% [markdown]
# The family's runs — who forked from whom, and at which step — come from
# `family_runs(run)`, here through the DB-API cursor and an Arrow table.

# %%
FAMILY = "VS-1"
LOSS_SQL = f"SELECT * FROM family_metrics('{FAMILY}', 'train/loss')"
RUNS_SQL = f"SELECT * FROM family_runs('{FAMILY}')"

with conn.cursor() as cur:
    cur.execute(RUNS_SQL)
    runs = cur.fetch_arrow_table().to_pandas()
runs

# %% [markdown]
# ## The same data over plain HTTP, into polars
#
# `POST /api/sql` with `Accept: application/vnd.apache.arrow.stream` answers an
# Arrow IPC stream, batch by batch; `pyarrow.ipc.open_stream` reads it and
# `polars.from_arrow` takes the table without copying.

# %%
import json
import urllib.error
import urllib.request

import polars as pl
import pyarrow.ipc


def http_sql(sql):
    """Runs one query through forkline's HTTP API; returns a pyarrow Table."""
    headers = {"Content-Type": "application/json", "Accept": "application/vnd.apache.arrow.stream"}
    if API_KEY:
        headers["Authorization"] = f"Bearer {API_KEY}"
    request = urllib.request.Request(f"{HTTP_URI}/api/sql", data=json.dumps({"sql": sql}).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return pyarrow.ipc.open_stream(response).read_all()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"forkline answered {e.code}: {e.read().decode(errors='replace')}") from None


loss_pl = pl.from_arrow(http_sql(LOSS_SQL))

# Each run's last step and loss, from its own stitched series.
final = (
    loss_pl.sort("step")
    .group_by("run_id")
    .agg(pl.col("step").last().alias("last_step"), pl.col("value").last().alias("final_loss"))
    .join(pl.from_pandas(runs[["run_id", "display_id", "fork_step"]]), on="run_id")
    .with_columns(pl.col("fork_step").cast(pl.Int64))  # null for the root
    .sort("final_loss")
)
final

# %% [markdown]
# ## Every run's stitched loss, with the fork points
#
# One line per run. Runs are drawn deepest first, so where a fork's view repeats
# its ancestor's history the ancestor's colour stays on top, and each colour
# shows where that run's own points begin. Dashed lines mark the fork steps.
# The lower panel zooms in on the steps from the first fork on.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

SMOOTH = 200  # steps of the rolling mean drawn; the raw points are in `loss`

display_of = dict(zip(runs["run_id"], runs["display_id"]))
forks = runs[runs["parent_id"].notna()]
palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # no grey: that is for fork lines
if len(runs) > len(palette):
    palette = list(plt.get_cmap("tab20").colors)

fig, (ax, zoom) = plt.subplots(2, 1, figsize=(11, 9), dpi=110, height_ratios=[3, 2])
run_lines = {}
zoom_from = forks["fork_step"].min() if len(forks) else 0
zoom_values = []
for i, run in enumerate(runs.itertuples()):
    series = loss[loss["run_id"] == run.run_id].sort_values("step")
    smooth = series["value"].rolling(SMOOTH, min_periods=1).mean()
    if pd.isna(run.parent_id):
        label = f"{run.display_id} (root)"
    else:
        label = f"{run.display_id} ← {display_of[int(run.parent_id)]} @ {int(run.fork_step)}"
    style = dict(color=palette[i % len(palette)], linewidth=1.4, zorder=len(runs) - run.depth)
    (run_lines[run.display_id],) = ax.plot(series["step"], smooth, label=label, **style)
    zoom.plot(series["step"], smooth, **style)
    zoom_values.append(smooth[series["step"] >= zoom_from])

fork_lines = {}
for step, group in forks.groupby("fork_step"):
    fork_lines[int(step)] = ax.axvline(step, linestyle="--", color="0.4", linewidth=0.9, zorder=0)
    zoom.axvline(step, linestyle="--", color="0.4", linewidth=0.9, zorder=0)
    ax.annotate(
        ", ".join(group["display_id"]),
        xy=(step, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(2, -4),
        textcoords="offset points",
        rotation=90,
        va="top",
        fontsize=8,
        color="0.3",
    )

ax.set_yscale("log")
ax.set_ylabel("train/loss (log scale)")
ax.set_title(
    f"Stitched train/loss of the {FAMILY} family: {len(runs)} runs, {len(forks)} forks"
    f" (rolling mean over {SMOOTH} steps)"
)
ax.legend(title="run ← parent @ fork step", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
ax.grid(True, alpha=0.3)
tail_values = pd.concat(zoom_values)
if len(tail_values):
    low, high = tail_values.min(), tail_values.max()
    zoom.set_xlim(zoom_from - SMOOTH, ax.get_xlim()[1])
    zoom.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
zoom.set_title(f"from the first fork (step {int(zoom_from)}) on, linear scale", fontsize=10)
zoom.set_xlabel("step")
zoom.set_ylabel("train/loss")
zoom.grid(True, alpha=0.3)
fig.tight_layout()
os.makedirs(os.path.dirname(os.path.abspath(FIGURE)), exist_ok=True)
fig.savefig(FIGURE)
print(f"{len(run_lines)} runs, fork lines at steps {sorted(fork_lines)}; saved {FIGURE}")
