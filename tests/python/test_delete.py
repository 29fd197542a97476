"""A run deleted over HTTP is gone for the unchanged pluto-ml SDK's read API
(`pluto.query`), while its sibling still answers; its id is never reused."""

import json
import urllib.error
import urllib.request

PROJECT = "sdk-delete"


def delete(server, path):
    req = urllib.request.Request(server.base + path, method="DELETE",
                                 headers={"authorization": f"Bearer {server.api_key}"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_deleted_run_is_gone_for_the_sdk(server, tmp_path):
    made, _ = server.sdk(
        f"""
        ids = []
        for name in ("keep-me", "drop-me"):
            run = pluto.init(project={PROJECT!r}, name=name, config={{"who": name}})
            for i in range(20):
                run.log({{"loss": 1.0 / (i + 1)}}, step=i)
            run.finish()
            ids.append(run.id)
        out.update(keep=ids[0], drop=ids[1])
        """,
        tmp_path,
    )
    status, answer = delete(server, f"/api/runs/{made['drop']}")
    assert status == 200, answer
    assert [r["runId"] for r in answer["deleted"]] == [made["drop"]]
    out, _ = server.sdk(
        f"""
        import pluto.query as q
        out["listed"] = sorted(r["name"] for r in q.list_runs({PROJECT!r}))
        out["kept"] = q.get_run({PROJECT!r}, {made['keep']})["name"]
        try:
            q.get_run({PROJECT!r}, {made['drop']})
            out["dropped"] = "found"
        except Exception as e:
            out["dropped"] = str(getattr(e, "status_code", "")) + " " + type(e).__name__ + " " + str(e)
        try:
            out["metrics"] = len(q.get_metrics({PROJECT!r}, {made['drop']}, metric_names=["loss"]))
        except Exception as e:
            out["metrics"] = str(e)
        again = pluto.init(project={PROJECT!r}, name="after")
        out["after"] = again.id
        again.finish()
        """,
        tmp_path,
    )
    assert out["listed"] == ["keep-me"], out
    assert out["kept"] == "keep-me"
    assert "404" in out["dropped"] or "not found" in out["dropped"].lower(), out
    assert out["metrics"] == 0 or "404" in str(out["metrics"]) or "unknown run" in str(out["metrics"]), out
    assert out["after"] > made["drop"]
    # Gone for SQL too, and the deletion is on record.
    assert server.sql(f"SELECT count(*) AS n FROM metrics WHERE run_id = {made['drop']}") == [{"n": 0}]
    (row,) = server.sql("SELECT run_id, cascade, purged FROM system.deletions")
    assert row == {"run_id": made["drop"], "cascade": False, "purged": False}
