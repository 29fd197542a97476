"""The Arrow Flight SQL endpoint of `forkline serve`, driven by the real ADBC Flight SQL driver.

Every answer is checked against the CLI's answer to the same SQL on the same store.
"""

import os
import subprocess

import adbc_driver_manager.dbapi as dbapi
import pyarrow.compute as pc
import pytest

from forkline_demo import (
    BIN,
    Server,
    assert_same_rows,
    cli,
    cli_columns,
    cli_sql,
    cli_sql_fails,
    copy_store,
    demo_store,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return demo_store(tmp_path_factory)


@pytest.fixture(scope="module")
def server(store):
    srv = Server(store)
    yield srv
    srv.stop()


@pytest.fixture
def conn(server):
    with server.connect() as c:
        yield c


def run_id_of(store, display_id):
    ids = cli_sql(store, f"SELECT id FROM runs WHERE display_id = '{display_id}'")["id"].tolist()
    assert len(ids) == 1, f"{display_id}: {ids}"
    return int(ids[0])


def test_prepared_statement_with_a_bound_run_id(store, conn):
    sql = "SELECT step, value FROM metrics WHERE run_id = $1 AND metric = 'train/loss' ORDER BY step"
    with conn.cursor() as cur:
        # The same statement twice with different values: the second execution rebinds.
        for display_id in ("VS-6", "VS-1"):
            run_id = run_id_of(store, display_id)
            cur.execute(sql, parameters=(run_id,))
            actual = cur.fetch_df()
            expected = cli_sql(store, sql.replace("$1", str(run_id)))
            assert len(expected) > 0, f"{display_id} has no train/loss points"
            assert_same_rows(actual, expected, ["step"], f"metrics of run {run_id} ({display_id})")
            assert actual["step"].is_monotonic_increasing, "ORDER BY step not kept"


def test_bound_display_id_as_a_table_function_argument(store, conn):
    sql = "SELECT count(*) AS n, max(step) AS last FROM stitched_metrics($1, 'train/loss')"
    with conn.cursor() as cur:
        for display_id in ("VS-6", "vs-3"):
            cur.execute(sql, parameters=(display_id,))
            actual = cur.fetch_df()
            expected = cli_sql(store, sql.replace("$1", f"'{display_id}'"))
            assert int(expected["n"][0]) > 0, f"the CLI finds no stitched points for {display_id}"
            assert_same_rows(actual, expected, ["n"], f"stitched_metrics({display_id!r})")


def test_unknown_bound_run_is_an_error(store, conn):
    sql = "SELECT count(*) FROM stitched_metrics($1, 'train/loss')"
    assert cli_sql_fails(store, sql.replace("$1", "'VS-999999'")), "the CLI should refuse an unknown run"
    with conn.cursor() as cur:
        with pytest.raises(dbapi.Error):
            cur.execute(sql, parameters=("VS-999999",))
            cur.fetchall()


def tables_of(conn):
    """{table name: [column names]} over every catalog and schema from ADBC's GetObjects;
    tables outside the default schema are named `schema.table` (`system.files` beside `files`)."""
    tables = {}
    for catalog in conn.adbc_get_objects(depth="all").read_all().to_pylist():
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                columns = sorted(table["table_columns"] or [], key=lambda c: c["ordinal_position"] or 0)
                name = table["table_name"]
                if schema["db_schema_name"] != "public":
                    name = f"{schema['db_schema_name']}.{name}"
                tables[name] = [c["column_name"] for c in columns]
    return tables


def test_get_objects_lists_tables_and_columns(store, conn, tmp_path):
    tables = tables_of(conn)
    for name in ("runs", "metrics", "metric_writes", "logs", "data", "files", "run_status_events",
                 "system.queries", "system.commits", "system.files", "system.compactions",
                 "system.run_status_events"):
        assert name in tables, f"{name} missing from GetObjects: {sorted(tables)}"
    assert tables["metrics"][:5] == ["run_id", "metric", "step", "value", "time"], tables["metrics"]
    for name in ("runs", "metrics", "metric_writes", "logs", "data", "files", "run_status_events"):
        expected = cli_columns(store, f"SELECT * FROM {name}", tmp_path)
        assert tables[name] == expected, f"{name}: GetObjects says {tables[name]}, the CLI {expected}"


def test_get_info_names_the_server(conn):
    info = conn.adbc_get_info()
    vendor = info.get("vendor_name")
    assert isinstance(vendor, str) and vendor, f"no vendor name in {info}"
    assert "forkline" in vendor.lower(), vendor
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert info.get("vendor_version") == version, f"vendor_version {info.get('vendor_version')!r}, binary {version}"


WRITES = [
    "CREATE TABLE x AS SELECT 1 AS a",
    "INSERT INTO metrics SELECT run_id, metric, step + 1000000, value, time FROM metrics LIMIT 1",
    "COPY (SELECT 1 AS a) TO '{tmp}/copied.csv'",
    "SET datafusion.execution.batch_size = 1",
    "CREATE VIEW v AS SELECT 1 AS a",
    "DROP TABLE runs",
]


@pytest.mark.parametrize("statement", WRITES)
def test_write_statements_are_refused(store, conn, tmp_path, statement):
    statement = statement.format(tmp=tmp_path)
    before = cli_sql(store, "SELECT count(*) AS n FROM metrics")
    with conn.cursor() as cur:
        with pytest.raises(dbapi.Error) as refused:
            cur.execute(statement)
            cur.fetchall()
    assert str(refused.value).strip(), "the refusal should say why"
    assert not (tmp_path / "copied.csv").exists(), "COPY wrote a file"
    assert cli_sql_fails(store, "SELECT * FROM x"), "table x exists after the refused statement"
    assert cli_sql(store, "SELECT count(*) AS n FROM metrics").equals(before), "metrics changed"
    # The connection is still usable after a refusal.
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM runs")
        assert cur.fetchone()[0] == int(cli_sql(store, "SELECT count(*) AS n FROM runs")["n"][0])


def test_writes_are_refused_as_prepared_statements_and_updates(store, conn):
    with conn.cursor() as cur:
        with pytest.raises(dbapi.Error):
            cur.execute("CREATE TABLE y AS SELECT $1 AS a", parameters=(1,))
            cur.fetchall()
    with conn.cursor() as cur:
        with pytest.raises(dbapi.Error):  # DBAPI executemany is a Flight SQL prepared update
            cur.executemany("CREATE TABLE z AS SELECT $1 AS a", [(1,), (2,)])
    assert cli_sql_fails(store, "SELECT * FROM y") and cli_sql_fails(store, "SELECT * FROM z")


def count_runs(connection):
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs")
        return cur.fetchone()[0]


def test_api_keys(store, tmp_path):
    keyed = copy_store(store, tmp_path / "keyed")
    expected = int(cli_sql(keyed, "SELECT count(*) AS n FROM runs")["n"][0])
    srv = Server(keyed)
    try:
        with srv.connect() as c:
            assert count_runs(c) == expected, "a store without keys should answer without a key"
    finally:
        srv.stop()

    key = cli(keyed, "keys", "create", "--project", "vision-sweep").strip().split()[-1]
    assert len(key) >= 16, f"`keys create` printed {key!r}"

    srv = Server(keyed)
    try:
        with pytest.raises(dbapi.Error) as no_key:
            with srv.connect() as c:
                count_runs(c)
        assert "unauthenticated" in str(no_key.value).lower() or "key" in str(no_key.value).lower(), no_key.value
        with pytest.raises(dbapi.Error):
            with srv.connect(key="not-" + key) as c:
                count_runs(c)
        # A key opens its own project only: the other project's runs and points do not exist.
        own_runs = int(cli_sql(keyed, "SELECT count(*) AS n FROM runs WHERE project = 'vision-sweep'")["n"][0])
        own_points = int(
            cli_sql(
                keyed,
                "SELECT count(*) AS n FROM metrics JOIN runs ON metrics.run_id = runs.id WHERE project = 'vision-sweep'",
            )["n"][0]
        )
        assert 0 < own_runs < expected
        with srv.connect(key=key) as c:
            assert count_runs(c) == own_runs, "the key should open its project's runs only"
            with c.cursor() as cur:
                cur.execute("SELECT count(*) FROM metrics")
                assert cur.fetchone()[0] == own_points
                with pytest.raises(dbapi.Error, match="unknown run"):
                    cur.execute("SELECT * FROM stitched_metrics('LP-1')")
                    cur.fetchall()
            tables = {
                t["table_name"]
                for cat in c.adbc_get_objects().read_all().to_pylist()
                for sch in cat["catalog_db_schemas"]
                for t in sch["db_schema_tables"]
            }
            assert {"runs", "metrics"} <= tables
    finally:
        srv.stop()


def test_a_result_larger_than_the_memory_pool_streams(store):
    memory_mb = 64
    sql = "SELECT value, value * 2 AS v2 FROM range(20000000)"
    expected = cli_sql(store, f"SELECT count(*) AS n, sum(v2) AS s FROM ({sql})")
    srv = Server(store, memory_mb=memory_mb)
    try:
        rows = total = nbytes = batches = 0
        with srv.connect() as c, c.cursor() as cur:
            cur.execute(sql)
            for batch in cur.fetch_record_batch():
                batches += 1
                rows += batch.num_rows
                nbytes += batch.nbytes
                total += pc.sum(batch.column("v2")).as_py() or 0
                assert pc.all(pc.equal(batch.column("v2"), pc.multiply(batch.column("value"), 2))).as_py()
        assert srv.proc.poll() is None, f"the server died:\n{srv.log()}"
    finally:
        srv.stop()
    assert nbytes > memory_mb << 20, f"the result ({nbytes} bytes) should exceed the {memory_mb} MiB pool"
    assert batches > 1, "the result came as a single batch"
    assert rows == int(expected["n"][0]), f"{rows} rows through Flight, the CLI counts {expected['n'][0]}"
    assert total == int(expected["s"][0]), f"sum(v2) {total} through Flight, the CLI says {expected['s'][0]}"
