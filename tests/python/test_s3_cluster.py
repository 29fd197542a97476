"""Several forkline processes on one S3 bucket (moto on loopback, tests/python/s3_server.py).

Clients speak the SDK's wire protocol (`/api/runs/create`, `/ingest/metrics`)
over plain HTTP, the way `pluto` sends it, so that eight of them fit in one test
process. Everything a client was answered 2xx for is recorded and checked
afterwards against what the store holds, through a read-only replica.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import BIN, Server

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKET = "forkline-cluster"
REFRESH_MS = 500
PROJECTS = ("alpha", "beta")
METRICS = ("loss", "acc", "lr")


class S3:
    """tests/python/s3_server.py in its own process; `down()`/`up()` stop and restart it."""

    def __init__(self, log):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "s3_server.py"), "--bucket", BUCKET],
            stdout=subprocess.PIPE,
            stderr=open(log, "w"),
            text=True,
        )
        self.endpoint = self.proc.stdout.readline().strip()
        assert self.endpoint.startswith("http://"), f"the S3 server did not start: {open(log).read()}"
        self.port = int(self.endpoint.rsplit(":", 1)[1])

    def _accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _signal(self, sig, accepting):
        self.proc.send_signal(sig)
        deadline = time.monotonic() + 15
        while self._accepts() != accepting:
            assert time.monotonic() < deadline, f"the S3 server did not go {'up' if accepting else 'down'}"
            time.sleep(0.05)

    def down(self):
        self._signal(signal.SIGUSR1, False)

    def up(self):
        self._signal(signal.SIGUSR2, True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def store(self):
        return f"s3://{BUCKET}/{uuid.uuid4().hex}"

    def flags(self):
        return ["--s3-endpoint", self.endpoint, "--s3-allow-http", "--s3-region", "us-east-1"]

    def env(self):
        env = dict(os.environ)
        for k in [k for k in env if k.startswith(("AWS_", "FORKLINE_"))]:
            del env[k]
        env.update(AWS_ACCESS_KEY_ID="forkline-test", AWS_SECRET_ACCESS_KEY="forkline-test")
        return env


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3(str(tmp_path_factory.mktemp("s3") / "s3.log"))
    yield server
    server.stop()


def start_servers(s3, tmp_path, store, count, *args, **env_extra):
    """`count` writers on one store. Global flags go through the environment:
    `Server` puts its arguments after `serve`."""
    env = s3.env()
    env.update(
        FORKLINE_S3_ENDPOINT=s3.endpoint,
        FORKLINE_S3_ALLOW_HTTP="true",
        FORKLINE_S3_REGION="us-east-1",
        FORKLINE_REFRESH_INTERVAL_MS=str(REFRESH_MS),
        **env_extra,
    )
    servers = [Server(store, args=args, log=str(tmp_path / f"serve-{i}.log"), env=env) for i in range(count)]
    return servers, env


def call(base, path, body, run_id=None, timeout=60):
    """POSTs like the SDK; returns (HTTP status, decoded JSON or text). Status 0: no answer."""
    headers = {"content-type": "application/json", "authorization": "Bearer local-test-key"}
    if run_id is not None:
        headers["x-run-id"] = str(run_id)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, repr(e)


def sql(base, query):
    status, rows = call(base, "/api/sql", {"sql": query}, timeout=120)
    assert status == 200, f"{query}: HTTP {status}: {rows}"
    return rows


class Ledger:
    """What the clients were told was stored: runs (with their lineage) and points."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runs = {}  # id -> {project, seq, display, parent, fork_step, max_step}
        self.points = {}  # (run, metric, step) -> value
        self.statuses = []  # (time, path, status, body)
        self.run_acks = []  # when each run's create was answered 200, in order

    def add_run(self, reply, parent=None, fork_step=None):
        with self.lock:
            self.run_acks.append(time.monotonic())
            self.runs[reply["runId"]] = dict(
                project=reply["projectName"],
                seq=reply["number"],
                display=reply["displayId"],
                parent=parent,
                fork_step=fork_step,
                max_step=-1,
            )

    def owner(self, run, step):
        """The run whose own point is `step` of `run`'s stitched view (DESIGN.md: inheritance)."""
        while True:
            r = self.runs[run]
            if r["parent"] is None or step > r["fork_step"]:
                return run
            run = r["parent"]

    def stitched(self, run, metric):
        top = self.runs[run]["max_step"]
        out = {}
        for step in range(top + 1):
            value = self.points.get((self.owner(run, step), metric, step))
            if value is not None:
                out[step] = value
        return out


class Client(threading.Thread):
    """One experiment script: creates runs, forks any run it has seen, logs points."""

    def __init__(self, n, servers, ledger, deadline, check_visibility):
        super().__init__(daemon=True)
        self.rng = random.Random(n)
        self.servers = servers
        self.ledger = ledger
        self.deadline = deadline
        self.check_visibility = check_visibility
        self.mine = []
        self.failures = []
        self.visibility = []  # seconds from ack to a first successful read on the other process
        self.actions = 0

    def record(self, path, status, body):
        with self.ledger.lock:
            self.ledger.statuses.append((time.monotonic(), path, status, body))
        if status != 200:
            self.failures.append((path, status, str(body)[:300]))
        return status == 200

    def server(self):
        i = self.rng.randrange(len(self.servers))
        return i, self.servers[i].base

    def create(self):
        i, base = self.server()
        project = self.rng.choice(PROJECTS)
        status, reply = call(base, "/api/runs/create", {"projectName": project, "runName": f"root-{self.rng.random():.6f}"})
        if self.record("create", status, reply):
            self.ledger.add_run(reply)
            self.mine.append(reply["runId"])
            self.seen_elsewhere(i, f"SELECT count(*) AS n FROM runs WHERE id = {reply['runId']}", 1)

    def fork(self):
        with self.ledger.lock:
            candidates = [r for r, v in self.ledger.runs.items() if v["max_step"] >= 0]
        if not candidates:
            return self.create()
        run = self.rng.choice(candidates)
        with self.ledger.lock:
            step = self.rng.randint(0, self.ledger.runs[run]["max_step"])
            expected_parent = self.ledger.owner(run, step)
        _, base = self.server()
        status, reply = call(base, "/api/runs/create", {"projectName": self.ledger.runs[run]["project"], "runName": "fork", "forkRunId": run, "forkStep": step})
        if self.record("fork", status, reply):
            if reply["forkedFromRunId"] != expected_parent or reply["forkStep"] != step:
                self.failures.append(("fork", "lineage", f"fork of {run} at {step}: {reply}, expected parent {expected_parent}"))
            self.ledger.add_run(reply, parent=reply["forkedFromRunId"], fork_step=step)
            with self.ledger.lock:
                self.ledger.runs[reply["runId"]]["max_step"] = step
            self.mine.append(reply["runId"])

    def log(self):
        run = self.rng.choice(self.mine)
        with self.ledger.lock:
            first = self.ledger.runs[run]["max_step"] + 1
        steps = range(first, first + self.rng.randint(1, 25))
        lines = []
        values = {}
        for step in steps:
            data = {m: round(self.rng.uniform(-10, 10), 6) for m in METRICS}
            values.update({(run, m, step): v for m, v in data.items()})
            lines.append(json.dumps({"time": time.time() * 1000, "step": step, "data": data}))
        i, base = self.server()
        status, reply = call(base, "/ingest/metrics", "\n".join(lines).encode(), run_id=run)
        if self.record("metrics", status, reply):
            with self.ledger.lock:
                self.ledger.points.update(values)
                self.ledger.runs[run]["max_step"] = steps[-1]
            self.seen_elsewhere(i, f"SELECT max(step) AS n FROM metrics WHERE run_id = {run}", steps[-1])

    def seen_elsewhere(self, writer, query, expected):
        """A query the other process starts one refresh interval after the ack must see the write."""
        if not self.check_visibility or len(self.servers) < 2 or self.rng.random() > 0.2:
            return
        acked = time.monotonic()
        time.sleep(REFRESH_MS / 1000 + 0.01)
        other = self.servers[1 - writer].base
        status, rows = call(other, "/api/sql", {"sql": query})
        if status != 200 or rows[0]["n"] != expected:
            self.failures.append(("visibility", status, f"{query}: {rows}, expected {expected}"))
        else:
            self.visibility.append(time.monotonic() - acked)

    def run(self):
        while time.monotonic() < self.deadline:
            self.actions += 1
            roll = self.rng.random()
            if not self.mine or roll < 0.08:
                self.create()
            elif roll < 0.2:
                self.fork()
            else:
                self.log()


def verify(ledger, base, failures_allowed):
    """The store holds every acknowledged run and point, ids are gapless, lineage is right."""
    runs = {r["id"]: r for r in sql(base, "SELECT id, project, display_id, parent_id, fork_step FROM runs")}
    for r in runs.values():
        r["seq"] = int(r["display_id"].rsplit("-", 1)[1])
    for project in PROJECTS:
        seqs = sorted(r["seq"] for r in runs.values() if r["project"] == project)
        assert seqs == list(range(1, len(seqs) + 1)), f"{project}: display numbers {seqs}"
        assert len({r["display_id"] for r in runs.values() if r["project"] == project}) == len(seqs)
    for run, want in ledger.runs.items():
        got = runs.get(run)
        assert got is not None, f"acknowledged run {run} ({want['display']}) is missing"
        assert (got["project"], got["seq"], got["display_id"]) == (want["project"], want["seq"], want["display"]), f"run {run}: {got} vs {want}"
        assert (got["parent_id"], got["fork_step"]) == (want["parent"], want["fork_step"]), f"lineage of run {run}: {got} vs {want}"
    if not failures_allowed:
        assert set(runs) == set(ledger.runs), f"runs nobody was told about: {set(runs) - set(ledger.runs)}"

    stored = {(p["run_id"], p["metric"], p["step"]): p["value"] for p in sql(base, "SELECT run_id, metric, step, value FROM metrics")}
    missing = [k for k in ledger.points if k not in stored]
    assert not missing, f"{len(missing)} of {len(ledger.points)} acknowledged points are missing, e.g. {missing[:5]}"
    wrong = [(k, v, stored[k]) for k, v in ledger.points.items() if stored[k] != v]
    assert not wrong, f"{len(wrong)} acknowledged points changed value, e.g. {wrong[:5]}"
    if not failures_allowed:
        assert len(stored) == len(ledger.points), f"{len(stored) - len(ledger.points)} points nobody was told about"

    forks = [r for r, v in ledger.runs.items() if v["parent"] is not None]
    for run in random.Random(7).sample(forks, min(len(forks), 25)):
        segments = sql(base, f"SELECT run_id, from_step, to_step FROM lineage({run}) ORDER BY depth")
        chain = []
        r = run
        while r is not None:
            chain.append(r)
            r = ledger.runs[r]["parent"]
        assert [s["run_id"] for s in segments] == chain[::-1], f"lineage({run}): {segments}"
        got = {p["step"]: p["value"] for p in sql(base, f"SELECT step, value FROM stitched_metrics({run}, 'loss')")}
        want = ledger.stitched(run, "loss")
        assert got == want, f"stitched loss of fork {run}: {len(got)} steps, expected {len(want)}"
    return runs, stored


def test_two_writers_and_a_replica_share_one_bucket(s3, tmp_path):
    store = s3.store()
    writers, env = start_servers(s3, tmp_path, store, 2, "--compact-every-s", "5", "--compact-min-files", "8")
    replica = Server(store, args=["--read-only"], log=str(tmp_path / "replica.log"), env=env)
    try:
        ledger = Ledger()
        deadline = time.monotonic() + float(os.environ.get("FORKLINE_CLUSTER_SECONDS", "30"))
        clients = [Client(n, writers, ledger, deadline, check_visibility=True) for n in range(8)]
        for c in clients:
            c.start()
        # The replica answers SQL while the writers work, and refuses writes.
        # Each count of runs it gives sees every run acknowledged a refresh
        # interval before the query started, never more than were created by
        # the time it answered (acknowledged, or in flight: one per client),
        # and never fewer than its previous count.
        replica_reads, previous, most_required = 0, 0, 0
        while any(c.is_alive() for c in clients):
            started = time.monotonic()
            with ledger.lock:
                required = sum(1 for t in ledger.run_acks if t < started - REFRESH_MS / 1000 - 0.01)
            n = sql(replica.base, "SELECT count(*) AS n FROM runs")[0]["n"]
            with ledger.lock:
                created = len(ledger.run_acks)
            assert required <= n <= created + len(clients), (
                f"the replica counts {n} runs: {required} were acknowledged over {REFRESH_MS} ms "
                f"before the query, {created} by its answer"
            )
            assert n >= previous, f"the replica's count of runs went from {previous} to {n}"
            previous, most_required = n, max(most_required, required)
            replica_reads += 1
            # Reads interleave with the writers however fast they finish.
            time.sleep(0.2)
        status, _ = call(replica.base, "/api/runs/create", {"projectName": "alpha"})
        assert status == 403
        failures = [f for c in clients for f in c.failures]
        assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}"
        for s in writers + [replica]:
            assert s.proc.poll() is None, f"a server died: {open(s.log).read()[-3000:]}"
        time.sleep(REFRESH_MS / 1000 + 0.1)
        runs, stored = verify(ledger, replica.base, failures_allowed=False)
        seen = [v for c in clients for v in c.visibility]
        forks = sum(1 for r in runs.values() if r["parent_id"] is not None)
        print(
            f"\n{sum(c.actions for c in clients)} requests, {len(runs)} runs ({forks} forks), {len(stored)} points; "
            f"{len(seen)} cross-process reads, each within {REFRESH_MS} ms; {replica_reads} replica reads, "
            f"which had to see up to {most_required} acknowledged runs"
        )
        # Enough happened that the two processes' commits really interleaved.
        assert forks >= 5 and len(runs) >= 20 and len(stored) >= 2000, (forks, len(runs), len(stored))
        assert len(seen) >= 10, "too few cross-process visibility checks ran"
        assert replica_reads >= 10
        assert most_required >= 10, f"the replica's reads were checked against {most_required} runs at most"
    finally:
        for s in writers + [replica]:
            s.stop()
    check = subprocess.run([BIN, "--store", store, "check"], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_s3_outage_mid_ingest_gives_503_and_loses_nothing_acknowledged(s3, tmp_path):
    store = s3.store()
    # A retry budget of 1 s, so the 6 s outage outlasts it.
    writers, env = start_servers(s3, tmp_path, store, 2, "--compact-every-s", "0", FORKLINE_STORE_RETRY_S="1")
    try:
        ledger = Ledger()
        start = time.monotonic()
        clients = [Client(100 + n, writers, ledger, start + 16, check_visibility=False) for n in range(6)]
        for c in clients:
            c.start()
        time.sleep(4)
        s3.down()
        down_at = time.monotonic()
        time.sleep(6)
        s3.up()
        up_at = time.monotonic()
        for c in clients:
            c.join()
        for s in writers:
            assert s.proc.poll() is None, f"a server died during the outage: {open(s.log).read()[-3000:]}"
        statuses = sorted(ledger.statuses)
        odd = [(p, st, str(b)[:200]) for _, p, st, b in statuses if st not in (200, 503)]
        assert not odd, f"answers other than 200 and 503: {odd[:5]}"
        during = [st for t, _, st, _ in statuses if down_at + 2 < t < up_at]
        assert during and all(st == 503 for st in during), f"answers while S3 was down: {sorted(set(during))}"
        # Recovery without a restart: requests sent after S3 returned succeed again.
        after = [st for t, _, st, _ in statuses if t > up_at + 3]
        assert after and all(st == 200 for st in after), f"answers after S3 came back: {after}"
        wrong = [f for c in clients for f in c.failures if f[1] == "lineage"]
        assert not wrong, wrong[:5]
        ok_before = sum(1 for t, _, st, _ in statuses if t < down_at and st == 200)
        assert ok_before > 0
        time.sleep(REFRESH_MS / 1000 + 0.1)
        verify(ledger, writers[0].base, failures_allowed=True)
        verify(ledger, writers[1].base, failures_allowed=True)
        print(
            f"\n{len(statuses)} requests: {sum(1 for *_, st, _ in statuses if st == 503)} got 503, "
            f"{len(ledger.points)} acknowledged points all present"
        )
    finally:
        for s in writers:
            s.stop()
    check = subprocess.run([BIN, "--store", store, "check"], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
