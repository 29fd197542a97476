"""A real `forkline serve` on a loopback port with a fresh store, and helpers to drive it."""

import json
import os
import subprocess
import sys
import textwrap
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FORKLINE_BIN", os.path.join(ROOT, "target", "debug", "forkline"))


class Server:
    """`forkline serve` on a free loopback port; `args` go after `serve`, `log` gets its stderr."""

    def __init__(self, store, args=(), log=None, env=None, api_key="local-test-key"):
        self.store = store
        self.api_key = api_key
        self.log = log or store + ".log"
        self.proc = subprocess.Popen(
            [BIN, "--store", store, "serve", "--listen", "127.0.0.1:0", "--flight-listen", "off", "--commit-window-ms", "50", *args],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "w"),
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"forkline serve did not start: {open(self.log).read()[-3000:]}")
        self.base = next(w for w in line.split() if w.startswith("http://"))

    def env(self):
        env = dict(os.environ)
        for k in ("APP", "API", "INGEST", "PY"):
            env[f"PLUTO_URL_{k}"] = self.base
        env["PLUTO_API_KEY"] = self.api_key
        env["PLUTO_DISABLE_TELEMETRY"] = "1"
        return env

    def sql(self, query):
        req = urllib.request.Request(
            self.base + "/api/sql",
            data=json.dumps({"sql": query}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {self.api_key}"},
        )
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    def sdk(self, code, tmp_path, expect_ok=True):
        """Runs `code` with the real SDK in a fresh interpreter; returns the dict it stores in `out`."""
        result = tmp_path / f"out-{os.urandom(4).hex()}.json"
        script = "import json, pluto\nout = {}\n" + textwrap.dedent(code)
        script += f"\nopen({str(result)!r}, 'w').write(json.dumps(out))\n"
        # Outside the repository: the SDK records `git diff` of its working directory and writes .pluto/ there.
        proc = subprocess.run(
            [sys.executable, "-c", script], env=self.env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=300
        )
        if expect_ok:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return (json.loads(result.read_text()) if result.exists() else {}), proc

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("store") / "warehouse"))
    yield srv
    srv.stop()
