"""The unchanged pluto-ml SDK against forkline: lifecycle, forks, resume, failures and queries,
each checked again through SQL over the lineage table functions."""

import math

import pytest

PROJECT = "sdk-compat"


@pytest.fixture(scope="module")
def family(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sdk")
    base, _ = server.sdk(
        f"""
        run = pluto.init(project={PROJECT!r}, name="base",
                         config={{"lr": 0.1, "opt": {{"name": "adam", "betas": [0.9, 0.99]}}}}, tags=["baseline"])
        for i in range(1000):
            run.log({{"loss": 1.0 / (i + 1), "acc": i / 1000, "odd": float("nan") if i == 7 else float(i)}}, step=i)
        run.finish()
        out.update(id=run.id)
        """,
        tmp,
    )
    base_row = server.sql(f"SELECT id, display_id FROM runs WHERE project = '{PROJECT}' AND name = 'base'")[0]
    fork, _ = server.sdk(
        f"""
        run = pluto.init(project={PROJECT!r}, name="fork-sgd", config={{"opt": {{"name": "sgd"}}}},
                         fork_run_id={base_row["display_id"]!r}, fork_step=500, inherit_tags=True)
        out.update(id=run.id, parent=run.fork_run_id, step=run.fork_step)
        for i in range(501, 801):
            run.log({{"loss": 0.5 / (i + 1), "acc": 0.9}}, step=i)
        run.finish()
        """,
        tmp,
    )
    # Forking the fork at a step inside the base's segment attaches to the base.
    deep, _ = server.sdk(
        f"""
        run = pluto.init(project={PROJECT!r}, name="fork-early", fork_run_id={fork["id"]}, fork_step=200)
        out.update(id=run.id, parent=run.fork_run_id, step=run.fork_step)
        run.log({{"loss": 0.01}}, step=201)
        run.finish()
        """,
        tmp,
    )
    return {"base": base_row, "fork": fork, "deep": deep, "tmp": tmp}


def test_run_lifecycle_and_metrics_land(server, family):
    base_id = family["base"]["id"]
    rows = server.sql(
        f"SELECT metric, count(*) AS n, min(step) AS lo, max(step) AS hi FROM metrics "
        f"WHERE run_id = {base_id} AND metric NOT LIKE 'sys/%' GROUP BY metric ORDER BY metric"
    )
    assert rows == [
        {"metric": "acc", "n": 1000, "lo": 0, "hi": 999},
        {"metric": "loss", "n": 1000, "lo": 0, "hi": 999},
        {"metric": "odd", "n": 1000, "lo": 0, "hi": 999},
    ]
    (run,) = server.sql(f"SELECT status, config, tags FROM runs WHERE id = {base_id}")
    assert run["status"] == "COMPLETED"
    assert run["tags"] == ["baseline"]
    nan = server.sql(f"SELECT count(*) AS n FROM metrics WHERE run_id = {base_id} AND metric = 'odd' AND isnan(value)")
    assert nan == [{"n": 1}]


def test_fork_resolution_config_and_tags(server, family):
    base_id, fork, deep = family["base"]["id"], family["fork"], family["deep"]
    assert fork["parent"] == base_id and fork["step"] == 500
    (row,) = server.sql(f"SELECT parent_id, fork_step, config, tags, experiment FROM runs WHERE id = {fork['id']}")
    assert row["parent_id"] == base_id and row["fork_step"] == 500
    import json

    assert json.loads(row["config"]) == {"lr": 0.1, "opt": {"name": "sgd", "betas": [0.9, 0.99]}}
    assert row["tags"] == ["baseline"] and row["experiment"] == "base"
    # Requested on the fork at step 200, resolved up the chain to the base.
    assert deep["parent"] == base_id and deep["step"] == 200
    (row,) = server.sql(f"SELECT parent_id FROM runs WHERE id = {deep['id']}")
    assert row["parent_id"] == base_id


def test_stitched_views_in_sql(server, family):
    base_id, fork_id = family["base"]["id"], family["fork"]["id"]
    rows = server.sql(
        f"SELECT source_run_id AS src, inherited, count(*) AS n, min(step) AS lo, max(step) AS hi "
        f"FROM stitched_metrics({fork_id}, 'loss') GROUP BY 1, 2 ORDER BY lo"
    )
    assert rows == [
        {"src": base_id, "inherited": True, "n": 501, "lo": 0, "hi": 500},
        {"src": fork_id, "inherited": False, "n": 300, "lo": 501, "hi": 800},
    ]
    (v,) = server.sql(f"SELECT value FROM stitched_metrics({fork_id}, 'loss') WHERE step = 600")
    assert math.isclose(v["value"], 0.5 / 601)
    fam = server.sql(
        f"SELECT run_id, count(*) AS n FROM family_metrics({base_id}, 'loss') GROUP BY run_id ORDER BY run_id"
    )
    assert [r["n"] for r in fam] == [1000, 801, 202]
    # System metrics are never inherited.
    sys_inherited = server.sql(f"SELECT count(*) AS n FROM stitched_metrics({fork_id}) WHERE inherited AND metric LIKE 'sys/%'")
    assert sys_inherited == [{"n": 0}]


def test_resume_reopens_and_close_keeps_running(server, family):
    """Resuming a finished run re-opens it (as Pluto's server does); close() sends no status."""
    base_id = family["base"]["id"]
    (row,) = server.sql(f"SELECT status FROM runs WHERE id = {base_id}")
    assert row["status"] == "COMPLETED"
    server.sdk(
        f"""
        run = pluto.init(project={PROJECT!r}, run_id={base_id}, resume=True)
        for i in range(1000, 1010):
            run.log({{"loss": 0.001}}, step=i)
        run.close()
        """,
        family["tmp"],
    )
    (row,) = server.sql(f"SELECT status FROM runs WHERE id = {base_id}")
    assert row["status"] == "RUNNING"
    (n,) = server.sql(f"SELECT count(*) AS n FROM metrics WHERE run_id = {base_id} AND metric = 'loss'")
    assert n["n"] == 1010
    events = server.sql(
        f"SELECT from_status, to_status, source FROM run_status_events WHERE run_id = {base_id} ORDER BY rev"
    )
    assert [(e["from_status"], e["to_status"], e["source"]) for e in events] == [
        (None, "RUNNING", "create"),
        ("RUNNING", "COMPLETED", "api"),
        ("COMPLETED", "RUNNING", "resume"),
    ]


def test_exception_marks_run_failed(server, family):
    out, proc = server.sdk(
        f"""
        run = pluto.init(project={PROJECT!r}, name="crashes")
        out.update(id=run.id)
        open({str(family["tmp"] / "crash-id")!r}, "w").write(str(run.id))
        run.log({{"loss": 1.0}}, step=0)
        raise RuntimeError("boom")
        """,
        family["tmp"],
        expect_ok=False,
    )
    assert proc.returncode != 0
    run_id = int((family["tmp"] / "crash-id").read_text())
    (row,) = server.sql(f"SELECT status FROM runs WHERE id = {run_id}")
    assert row["status"] == "FAILED"


def test_query_client_reads_back_what_was_logged(server, family):
    base = family["base"]
    out, _ = server.sdk(
        f"""
        import pluto.query as q
        m = q.get_metrics({PROJECT!r}, {base["id"]}, metric_names=["loss"], limit=10000)
        out["metrics"] = [(r["metric"], r["step"], r["value"]) for r in (m.to_dict("records") if hasattr(m, "to_dict") else m)]
        r = q.get_run({PROJECT!r}, {base["display_id"]!r})
        out["run"] = {{"id": r["id"], "config": r["config"], "displayId": r["displayId"]}}
        out["compare"] = q.compare_runs({PROJECT!r}, [{base["display_id"]!r}, {family["fork"]["id"]}], "loss")
        """,
        family["tmp"],
    )
    loss = [m for m in out["metrics"] if m[0] == "loss"]
    assert len(loss) == 1010
    assert loss[0][1:] == [0, 1.0] and math.isclose(loss[999][2], 1 / 1000)
    assert out["run"]["id"] == base["id"] and out["run"]["config"]["opt"]["name"] == "adam"
    runs = {r["runId"]: r for r in out["compare"]["runs"]}
    assert runs[base["id"]]["count"] == 1010 and math.isclose(runs[base["id"]]["last"], 0.001)
    assert math.isclose(runs[family["fork"]["id"]]["last"], 0.5 / 801)
    # Lowest last loss wins: the fork ends at 0.5 / 801 < 0.001.
    assert out["compare"]["bestRun"]["runId"] == family["fork"]["id"]


def test_files_upload_and_download(server, family):
    out, _ = server.sdk(
        f"""
        import os, tempfile
        run = pluto.init(project={PROJECT!r}, name="with-files")
        run.log({{"notes": pluto.Text("hello from forkline", caption="greeting")}}, step=3)
        run.finish()
        import pluto.query as q
        files = q.get_files({PROJECT!r}, run.id)
        out["files"] = [{{k: f[k] for k in ("fileName", "fileType", "logName", "step", "fileSize")}} for f in files]
        dest = tempfile.mkdtemp()
        path = q.download_file({PROJECT!r}, run.id, files[0]["fileName"], destination=dest)
        out["content"] = open(path).read()
        # query.upload_file takes the same presigned route.
        src = os.path.join(dest, "extra.txt")
        open(src, "w").write("uploaded directly")
        q.upload_file({PROJECT!r}, run.id, "extra", src, step=4)
        out["after"] = sorted(f["logName"] for f in q.get_files({PROJECT!r}, run.id))
        out["id"] = run.id
        """,
        family["tmp"],
    )
    (f,) = out["files"]
    assert f["logName"] == "notes" and f["step"] == 3 and f["fileType"] == "txt"
    assert out["content"] == "hello from forkline"
    assert f["fileSize"] == len("hello from forkline")
    assert out["after"] == ["extra", "notes"]
    # Both files are recorded for this run only.
    (row,) = server.sql(f"SELECT count(*) AS n FROM files WHERE run_id = {out['id']}")
    assert row["n"] == 2


def test_an_all_projects_key_logs_to_two_projects_and_a_project_key_to_one(tmp_path):
    """As with Pluto's organization keys: `keys create` without `--project`
    opens every project, and `init(project="new")` creates it."""
    import subprocess

    from conftest import BIN, Server

    store = str(tmp_path / "keyed")

    def key(*args):
        out = subprocess.run([BIN, "--store", store, "keys", "create", *args], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    everywhere, only_one = key(), key("--project", "keyed-one")
    srv = Server(store, api_key=everywhere)
    try:
        out, _ = srv.sdk(
            """
            for project in ("keyed-one", "keyed-two"):
                run = pluto.init(project=project, name=f"run-{project}")
                for i in range(5):
                    run.log({"loss": float(i)}, step=i)
                run.finish()
                out[project] = run.id
            """,
            tmp_path,
        )
        rows = srv.sql("SELECT r.project, count(*) AS n FROM metrics m JOIN runs r ON m.run_id = r.id "
                       "WHERE m.metric = 'loss' GROUP BY r.project ORDER BY r.project")
        assert rows == [{"project": "keyed-one", "n": 5}, {"project": "keyed-two", "n": 5}]
        # A key of one project logs there, and cannot reach the other.
        srv.api_key = only_one
        out, proc = srv.sdk(
            """
            run = pluto.init(project="keyed-one", name="scoped")
            run.log({"loss": 1.0}, step=0)
            run.finish()
            out["id"] = run.id
            from pluto.iface import PlutoRequestError
            try:
                pluto.init(project="keyed-two", name="denied")
                out["denied"] = None
            except Exception as e:
                # The SDK wraps the server's refusal of /api/runs/create.
                cause = e.__cause__
                out["denied"] = {
                    "type": type(e).__name__,
                    "cause": type(cause).__name__,
                    "request_error": isinstance(cause, PlutoRequestError),
                    "status": getattr(cause, "status_code", None),
                    "message": str(e),
                }
            """,
            tmp_path,
        )
        assert out["id"], proc.stderr[-2000:]
        denied = out["denied"]
        assert denied is not None, "init in another project succeeded"
        # Refused by the server with 403 for that project, not failed some other way.
        assert denied["request_error"] and denied["status"] == 403, (denied, proc.stderr[-2000:])
        assert denied["type"] == "RuntimeError", denied
        assert "this API key does not open project `keyed-two`" in denied["message"], denied
        assert srv.sql("SELECT DISTINCT project FROM runs ORDER BY project") == [{"project": "keyed-one"}]
    finally:
        srv.stop()
