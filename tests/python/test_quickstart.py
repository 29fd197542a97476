"""examples/quickstart.ipynb, executed headless against a real server on a fresh demo store.

The notebook's DataFrames (pandas over Flight SQL, polars over HTTP) must equal the CLI's
answers to the same SQL, and its figure must draw one line per run of the family and one
dashed line per fork step.
"""

import json
import os
import sys
import importlib.util

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from forkline_demo import ROOT, Server, assert_same_rows, cli_sql, demo_store

EXAMPLES = os.path.join(ROOT, "examples")
NOTEBOOK = os.path.join(EXAMPLES, "quickstart.ipynb")
SCRIPT = os.path.join(EXAMPLES, "quickstart.py")

# Appended to the notebook by the test only: hands the notebook's state to the test process.
EXPORT_CELL = """
import json as _json, os as _os
_out = _os.environ["QUICKSTART_EXPORT"]
loss.to_parquet(_os.path.join(_out, "loss_pandas.parquet"))
loss_pl.write_parquet(_os.path.join(_out, "loss_polars.parquet"))
runs.to_parquet(_os.path.join(_out, "runs_pandas.parquet"))
_lines = ax.get_lines()
_json.dump(
    {
        "loss_sql": LOSS_SQL,
        "runs_sql": RUNS_SQL,
        "run_lines": [
            {"label": l.get_label(), "steps": [float(x) for x in l.get_xdata()]}
            for l in _lines if l.get_linestyle() != "--"
        ],
        "dashed_lines": [float(l.get_xdata()[0]) for l in _lines if l.get_linestyle() == "--"],
        "legend": [t.get_text() for t in ax.get_legend().get_texts()],
    },
    open(_os.path.join(_out, "notebook.json"), "w"),
)
"""


def load_generator():
    spec = importlib.util.spec_from_file_location("make_notebook", os.path.join(EXAMPLES, "make_notebook.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_generated_from_the_script():
    generator = load_generator()
    with open(SCRIPT, encoding="utf-8") as f:
        expected = generator.render(f.read())
    with open(NOTEBOOK, encoding="utf-8") as f:
        actual = f.read()
    assert actual == expected, "examples/quickstart.ipynb is out of date: run python examples/make_notebook.py"


def test_the_two_lines_come_first():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    first_text = next(c for c in nb.cells if c.cell_type == "markdown").source
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    two_lines = [l for l in code[1].splitlines() if l.strip() and not l.startswith("#")][:2]
    assert two_lines[0].startswith("conn = adbc_driver_flightsql.dbapi.connect("), code[1]
    assert ".fetch_df()" in two_lines[1] and "family_metrics(" in two_lines[1], code[1]
    assert "connect(" in first_text and "fetch_df()" in first_text, "the intro should show the two lines"
    assert not any(".fetch_df()" in c or "http_sql(" in c for c in code[:1]), "settings cell should only configure"


def kernel_spec_dir(tmp_path):
    """A kernelspec running this interpreter, so the notebook sees the test's own packages."""
    spec = tmp_path / "jupyter" / "kernels" / "forkline-quickstart"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "forkline quickstart test",
                "language": "python",
            }
        )
    )
    return str(tmp_path / "jupyter")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Runs the notebook against a server on a fresh demo store; yields what it exported."""
    store = demo_store(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("quickstart")
    out = tmp / "export"
    out.mkdir()
    figure = tmp / "figures" / "stitched.png"
    server = Server(store)
    saved = dict(os.environ)
    try:
        os.environ.update(
            FORKLINE_HTTP=server.http,
            FORKLINE_FLIGHT=server.flight,
            QUICKSTART_FIGURE=str(figure),
            QUICKSTART_EXPORT=str(out),
            JUPYTER_PATH=kernel_spec_dir(tmp),
            MPLBACKEND="Agg",
        )
        os.environ.pop("FORKLINE_API_KEY", None)
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(EXPORT_CELL))
        client = NotebookClient(
            nb,
            timeout=300,
            kernel_name="forkline-quickstart",
            resources={"metadata": {"path": str(tmp)}},
        )
        try:
            client.execute()
        except Exception as e:  # CellExecutionError carries the traceback of the failing cell
            raise AssertionError(f"the notebook failed:\n{e}\nserver log:\n{server.log()}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
    with open(out / "notebook.json") as f:
        state = json.load(f)
    yield {"store": store, "out": out, "figure": figure, "state": state, "nb": nb}


def test_pandas_frame_over_flight_equals_the_cli(executed):
    sql = executed["state"]["loss_sql"]
    assert "family_metrics(" in sql and "train/loss" in sql, sql
    expected = cli_sql(executed["store"], sql)
    assert len(expected) > 0, f"the CLI answers no rows to {sql}"
    actual = pd.read_parquet(executed["out"] / "loss_pandas.parquet")
    assert_same_rows(actual, expected, ["run_id", "metric", "step"], "pandas frame from Flight SQL")


def test_polars_frame_over_http_equals_the_cli(executed):
    sql = executed["state"]["loss_sql"]
    expected = cli_sql(executed["store"], sql)
    actual = pd.read_parquet(executed["out"] / "loss_polars.parquet")
    assert_same_rows(actual, expected, ["run_id", "metric", "step"], "polars frame from HTTP Arrow")


def test_runs_frame_equals_the_cli(executed):
    sql = executed["state"]["runs_sql"]
    assert "family_runs(" in sql, sql
    expected = cli_sql(executed["store"], sql)
    actual = pd.read_parquet(executed["out"] / "runs_pandas.parquet")
    assert_same_rows(actual, expected, ["run_id"], "family_runs frame")


def test_figure_has_one_line_per_run_and_a_dashed_line_per_fork_step(executed):
    state = executed["state"]
    runs = cli_sql(executed["store"], state["runs_sql"])
    series = cli_sql(executed["store"], state["loss_sql"])
    lines = state["run_lines"]
    labels = [l["label"].split()[0] for l in lines]
    assert sorted(labels) == sorted(runs["display_id"]), f"one line per run: lines {labels}"
    assert state["legend"] == [l["label"] for l in lines], "every run line is in the legend"
    steps_of = {
        display: sorted(series.loc[series["run_id"] == run_id, "step"].astype(float))
        for run_id, display in zip(runs["run_id"], runs["display_id"])
    }
    for line in lines:
        display = line["label"].split()[0]
        assert sorted(line["steps"]) == steps_of[display], f"line {display} does not plot its stitched series"
    forks = runs[runs["parent_id"].notna()]
    assert len(forks) > 0, "the family should have forks"
    assert sorted(state["dashed_lines"]) == sorted(set(forks["fork_step"].astype(float))), (
        f"dashed lines at {state['dashed_lines']}, fork steps {sorted(forks['fork_step'])}"
    )


def test_figure_is_a_real_png(executed):
    figure = executed["figure"]
    assert figure.exists(), f"no figure at {figure}"
    data = figure.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 600 and height >= 400, f"figure is only {width}x{height}"
    assert len(data) > 30_000, f"figure is only {len(data)} bytes"
