"""A sweep as a job array starts one: 64 processes of the real pluto-ml SDK call
`pluto.init` at the same moment against one server, a fifth of them forks of
one base run. Every run must be created once, with a unique, gapless display
id, within a bound; the catalog commits them together (issue 34)."""

import json
import os
import subprocess
import sys
import textwrap
import time

from conftest import Server

PROJECT = "sweep-sdk"
TRIALS = 64
# From the start signal to the last `pluto.init` returning, on a 2-core
# machine shared by the 64 interpreters and the server. Measured here
# (2026-12-07, debug server): first 7.6 s, median 15.1 s, last 21.6 s — the
# SDK's own start-up work on two cores dominates; the server's part is a
# few catalog commits (see benches/catalog.rs for the server alone).
BOUND_S = 60.0


def test_sixty_four_parallel_inits_each_create_one_run(tmp_path):
    server = Server(str(tmp_path / "warehouse"))
    try:
        base, _ = server.sdk(
            f"""
            run = pluto.init(project={PROJECT!r}, name="base")
            for i in range(100):
                run.log({{"loss": 1.0 / (i + 1)}}, step=i)
            run.finish()
            out.update(id=run.id)
            """,
            tmp_path,
        )
        go = tmp_path / "go"
        procs = []
        for trial in range(TRIALS):
            fork = f", fork_run_id={base['id']}, fork_step={trial % 100}" if trial % 5 == 0 else ""
            script = textwrap.dedent(
                f"""
                import json, os, time, pluto
                open({str(tmp_path / f"ready-{trial}")!r}, "w").close()
                while not os.path.exists({str(go)!r}):
                    time.sleep(0.01)
                run = pluto.init(project={PROJECT!r}, name="trial-{trial}", config={{"trial": {trial}}}{fork})
                created = time.time()
                run.finish()
                json.dump({{"id": run.id, "created": created}}, open({str(tmp_path / f"out-{trial}.json")!r}, "w"))
                """
            )
            workdir = tmp_path / f"w{trial}"
            workdir.mkdir()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", script],
                    env=server.env(),
                    cwd=str(workdir),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        # Every interpreter has imported the SDK: start them at once.
        deadline = time.time() + 300
        while not all((tmp_path / f"ready-{t}").exists() for t in range(TRIALS)):
            assert time.time() < deadline, "the interpreters did not start"
            time.sleep(0.05)
        started = time.time()
        go.touch()
        for trial, proc in enumerate(procs):
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"trial {trial}: {err[-3000:]}"
        outs = [json.loads((tmp_path / f"out-{t}.json").read_text()) for t in range(TRIALS)]
        returned = sorted(o["created"] - started for o in outs)
        took = returned[-1]
        print(
            f"{TRIALS} parallel pluto.init after the start signal: first returned {returned[0]:.2f} s, "
            f"median {returned[TRIALS // 2]:.2f} s, last {took:.2f} s"
        )
        assert took < BOUND_S, took

        rows = server.sql(
            f"SELECT id, name, display_id, parent_id, fork_step FROM runs "
            f"WHERE project = '{PROJECT}' AND name <> 'base' ORDER BY id"
        )
        assert sorted(r["id"] for r in rows) == sorted(o["id"] for o in outs)
        by_name = {r["name"]: r for r in rows}
        assert len(by_name) == TRIALS
        for trial in range(TRIALS):
            row = by_name[f"trial-{trial}"]
            if trial % 5 == 0:
                assert row["parent_id"] == base["id"] and row["fork_step"] == trial % 100, row
            else:
                assert row["parent_id"] is None, row
        # The base is number 1; the sweep took 2..=65, each once.
        numbers = sorted(int(r["display_id"].rsplit("-", 1)[1]) for r in rows)
        assert numbers == list(range(2, TRIALS + 2)), numbers
        # One creation event per run and one finish each: nothing doubled.
        events = server.sql(
            f"SELECT e.run_id, count(*) AS n FROM run_status_events e JOIN runs r ON e.run_id = r.id "
            f"WHERE r.project = '{PROJECT}' AND r.name <> 'base' GROUP BY e.run_id"
        )
        assert len(events) == TRIALS and all(e["n"] == 2 for e in events), events
    finally:
        server.stop()
