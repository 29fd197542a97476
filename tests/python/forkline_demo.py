"""Demo stores, `forkline serve` with its Flight SQL endpoint, and the CLI as the SQL oracle.

Shared by test_quickstart.py and test_flight.py (conftest.py holds the SDK suite's server).
"""

import io
import os
import queue
import shutil
import subprocess
import threading

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FORKLINE_BIN", os.path.join(ROOT, "target", "debug", "forkline"))

_demo_cache = {}


def demo_store(tmp_path_factory):
    """A demo store built once per test process (`forkline demo`); treat it as read-only."""
    if "store" not in _demo_cache:
        base = tmp_path_factory.mktemp("demo")
        store = str(base / "warehouse")
        queries = base / "no-queries"  # skip the demo's query tour: only the store is wanted
        queries.mkdir()
        proc = subprocess.run(
            [BIN, "--store", store, "demo", "--queries", str(queries)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"forkline demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        _demo_cache["store"] = store
    return _demo_cache["store"]


def copy_store(store, dest):
    """A private copy of a store, for tests that change it (keys)."""
    shutil.copytree(store, dest)
    return str(dest)


def cli(store, *args, timeout=600):
    """Runs `forkline --store STORE ARGS…`; returns stdout, failing the test on a non-zero exit."""
    proc = subprocess.run([BIN, "--store", store, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"forkline {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def cli_sql(store, sql):
    """The CLI's answer to `sql` (`forkline sql --format csv`) as a pandas DataFrame."""
    out = cli(store, "sql", "--format", "csv", sql)
    return pd.read_csv(io.StringIO(out))


def cli_columns(store, sql, scratch):
    """The column names of the CLI's answer to `sql`, from its Arrow IPC output (CSV has no
    nested types and prints no header for an empty result)."""
    import pyarrow.ipc

    path = os.path.join(str(scratch), f"columns-{os.urandom(4).hex()}.arrows")
    cli(store, "sql", "--format", "arrow", "--output", path, sql)
    with open(path, "rb") as f:
        return pyarrow.ipc.open_stream(f).schema.names


def cli_sql_fails(store, sql):
    """The CLI's error for `sql`, or None when the query succeeds."""
    proc = subprocess.run([BIN, "--store", store, "sql", sql], capture_output=True, text=True, timeout=120)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


class Server:
    """`forkline serve` with HTTP and Flight SQL on loopback ports chosen by the OS."""

    def __init__(self, store, memory_mb=None, env=None):
        self.store = store
        self.log_path = f"{store}.serve-{os.getpid()}-{id(self)}.log"
        args = [BIN, "--store", store]
        if memory_mb is not None:
            args += ["--memory-mb", str(memory_mb)]
        args += ["serve", "--listen", "127.0.0.1:0", "--flight-listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "w"),
            text=True,
            env=env,
        )
        lines = queue.Queue()

        def drain():  # keeps reading so the server never blocks on a full stdout pipe
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        self.http = self.flight = None
        try:
            for _ in range(2):
                line = lines.get(timeout=60)
                if line is None:
                    break
                for word in line.split():
                    if word.startswith("http://"):
                        self.http = word
                    elif word.startswith("grpc://"):
                        self.flight = word
        except queue.Empty:
            pass
        if not (self.http and self.flight):
            self.stop()
            raise AssertionError(
                f"`{' '.join(args)}` did not announce both endpoints "
                f"(http={self.http}, flight={self.flight}); its log:\n{self.log()}"
            )

    def log(self):
        with open(self.log_path) as f:
            return f.read()[-3000:]

    def connect(self, key=None):
        import adbc_driver_flightsql.dbapi

        db_kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {key}"} if key else {}
        return adbc_driver_flightsql.dbapi.connect(self.flight, db_kwargs=db_kwargs, autocommit=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def _normalised(col):
    if pd.api.types.is_datetime64_any_dtype(col) or isinstance(col.dtype, pd.DatetimeTZDtype):
        col = pd.to_datetime(col, utc=True)
        return col.astype("object").map(lambda v: None if pd.isna(v) else v), "exact"
    if pd.api.types.is_bool_dtype(col):
        return col.astype(bool), "exact"
    if pd.api.types.is_numeric_dtype(col):
        return col.astype("float64"), "float"
    return col.astype("object").where(col.notna(), None).map(lambda v: None if v is None else str(v)), "exact"


def assert_same_rows(actual, expected, keys, what):
    """`actual` holds the same rows as `expected` (the CLI's answer), in any order.

    Columns must match by name and order; floats are compared with a relative tolerance,
    timestamps to the microsecond (the CLI's CSV carries ISO strings).
    """
    assert list(actual.columns) == list(expected.columns), (
        f"{what}: columns {list(actual.columns)} differ from the CLI's {list(expected.columns)}"
    )
    assert len(actual) == len(expected), f"{what}: {len(actual)} rows, the CLI answers {len(expected)}"
    actual = actual.sort_values(keys, kind="stable").reset_index(drop=True)
    expected = expected.sort_values(keys, kind="stable").reset_index(drop=True)
    for name in expected.columns:
        exp_col = expected[name]
        act_col = actual[name]
        if pd.api.types.is_datetime64_any_dtype(act_col) or isinstance(act_col.dtype, pd.DatetimeTZDtype):
            exp_col = pd.to_datetime(exp_col, utc=True, format="ISO8601")
        a, kind = _normalised(act_col)
        e, _ = _normalised(exp_col)
        if kind == "float":
            av, ev = a.to_numpy(), e.to_numpy()
            same = np.isclose(av, ev, rtol=1e-9, atol=1e-12, equal_nan=True)
        else:
            same = np.array([x == y for x, y in zip(a, e)])
        if not same.all():
            bad = np.flatnonzero(~same)[:5]
            rows = "\n".join(
                f"  row {i} ({', '.join(f'{k}={expected.at[i, k]}' for k in keys)}): "
                f"{actual.at[i, name]} != CLI {expected.at[i, name]}"
                for i in bad
            )
            raise AssertionError(f"{what}: column {name!r} differs in {(~same).sum()} rows, e.g.\n{rows}")
