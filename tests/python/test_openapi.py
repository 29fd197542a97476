"""The OpenAPI document a real `forkline serve` serves at /api/openapi.json:
it is a valid OpenAPI 3.1 document, the HTTP examples of the README and of
every page of docs/ are requests it allows, and the real pluto SDK's traffic
(requests and answers, recorded by a proxy between SDK and server) matches it."""

import glob
import json
import os
import re
import shlex
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from conftest import ROOT, Server

# Every page that may show an HTTP request: the README and the reference in
# docs/, a new page included. Not the wire protocol: it writes down Pluto's own
# server, routes forkline does not serve and `<placeholder>` paths included.
WIRE_PROTOCOL = os.path.join(ROOT, "docs", "pluto-wire-protocol.md")
DOCS = [os.path.join(ROOT, "README.md")] + sorted(
    p for p in glob.glob(os.path.join(ROOT, "docs", "*.md")) if p != WIRE_PROTOCOL
)


def fetch_document(base):
    with urllib.request.urlopen(base + "/api/openapi.json") as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def document(server):
    return fetch_document(server.base)


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on the first violation of the 3.1 schema


def test_document_is_served_without_a_key(tmp_path):
    """With a key in the store, the document still needs none (as /health),
    while the keyed routes refuse an anonymous call."""
    import subprocess

    from conftest import BIN

    store = str(tmp_path / "keyed")
    out = subprocess.run([BIN, "--store", store, "keys", "create"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    srv = Server(store, api_key=out.stdout.strip())
    try:
        doc = fetch_document(srv.base)
        assert "/api/sql" in doc["paths"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(srv.base + "/api/runs/projects")
        assert refused.value.code == 401
        assert json.loads(refused.value.read())["error"] == "Unauthorized"
    finally:
        srv.stop()


def describe(error):
    return f"{type(error).__name__}: {error} {error.__cause__ or ''}"


# --- the HTTP examples of the README and docs/ -------------------------------


def doc_examples():
    """Every HTTP request the README and the pages of docs/ show."""
    examples = []
    for path in DOCS:
        name = os.path.relpath(path, ROOT)
        examples += [(*e[:4], f"{name}: {e[4]}") for e in page_examples(open(path).read())]
    return examples


def page_examples(text):
    """Every HTTP request one page shows: `curl` command lines in its code
    blocks, and inline `` `GET /path?query` `` spans. Each as
    (method, path, query pairs, JSON body or None, where)."""
    examples = []
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    for line in joined.splitlines():
        line = line.strip()
        if not line.startswith("curl "):
            continue
        # The request is the command before any comment or pipe.
        args = shlex.split(line.split(" #")[0].split(" | ")[0])
        method, body, url = None, None, None
        i = 1
        while i < len(args):
            a = args[i]
            if a in ("-X", "--request"):
                method, i = args[i + 1], i + 2
            elif a in ("-d", "--data", "--data-raw", "--data-binary"):
                body, i = args[i + 1], i + 2
            elif a in ("-H", "--header", "-o", "--output"):
                i += 2
            elif a.startswith("-"):
                i += 1
            else:
                url, i = a, i + 1
        assert url, line
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        method = method or ("POST" if body is not None else "GET")
        examples.append((method, parts.path, urllib.parse.parse_qsl(parts.query, keep_blank_values=True), body, line))
    for method, target in re.findall(r"`(GET|POST|PUT) (/[^`\s]*)`", text):
        parts = urllib.parse.urlsplit(target)
        # `…` stands for parameters the prose leaves out: the rest are checked.
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if "…" not in k]
        examples.append((method, parts.path, query, None, f"`{method} {target}`"))
    return examples


def test_doc_examples_are_requests_the_document_allows(document):
    examples = doc_examples()
    curls = [e for e in examples if ": curl " in e[4]]
    assert len(curls) >= 3, examples
    paths = {m + " " + p for m, p, *_ in examples}
    for needed in ("POST /api/sql", "GET /api/report", "GET /api/export"):
        assert needed in paths, paths
    openapi = OpenAPI.from_dict(document)
    for method, path, query, body, where in examples:
        item = document["paths"].get(path)
        assert item is not None, f"{where}: {path} is not in the document"
        assert method.lower() in item, f"{where}: {method} {path} is not in the document"
        if ": curl " not in where and "?" not in where:
            continue  # prose naming the route, not a request
        request = MockRequest(
            "http://127.0.0.1:7070",
            method.lower(),
            path,
            args=dict(query),
            # The examples' server is keyless on loopback; a keyed one takes this header.
            headers={"Authorization": "Bearer key"},
            data=body.encode() if body is not None else None,
            content_type="application/json" if body is not None else None,
        )
        errors = list(openapi.iter_request_errors(request))
        if "…" in where:
            # The prose elides some parameters: those it shows must still be valid.
            errors = [e for e in errors if "MissingRequired" not in type(e).__name__]
        assert not errors, f"{where}: {[describe(e) for e in errors]}"


def test_a_request_outside_the_document_is_refused(document):
    """The check above can fail: a wrong parameter type, an unknown format of
    body, a missing required parameter are all reported."""
    openapi = OpenAPI.from_dict(document)
    auth = {"Authorization": "Bearer key"}
    bad = [
        MockRequest("http://h", "post", "/api/sql", headers=auth, data=b'{"query": "SELECT 1"}'),
        MockRequest("http://h", "get", "/api/export", headers=auth, args={"stitched": "maybe", "run": "VS-6"}),
        MockRequest("http://h", "get", "/api/report", headers=auth, args={"format": "pdf", "project": "p"}),
        MockRequest("http://h", "get", "/api/report", headers=auth, args={"format": "json"}),
    ]
    for request in bad:
        assert list(openapi.iter_request_errors(request)), (request.path, request.parameters)


# --- the SDK's real traffic -------------------------------------------------


class Recorder:
    """A reverse proxy that forwards to `target` and records each exchange."""

    def __init__(self):
        self.target = None
        self.exchanges = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                req = urllib.request.Request(recorder.target + self.path, data=body or None, method=self.command)
                for k, v in self.headers.items():
                    if k.lower() not in ("host", "content-length", "connection", "accept-encoding"):
                        req.add_header(k, v)
                try:
                    with urllib.request.urlopen(req) as resp:
                        status, headers, data = resp.status, dict(resp.headers), resp.read()
                except urllib.error.HTTPError as e:
                    status, headers, data = e.code, dict(e.headers), e.read()
                recorder.exchanges.append((self.command, self.path, dict(self.headers), body, status, headers, data))
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _forward

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


def ndjson_lines_valid(document, schema_name, body):
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    validator = OAS31Validator(schema)
    for line in body.decode().splitlines():
        if line.strip():
            validator.validate(json.loads(line))


LINE_SCHEMAS = {"/ingest/metrics": "MetricLine", "/ingest/logs": "LogLine", "/ingest/data": "DataLine"}


def test_sdk_traffic_matches_the_document(tmp_path):
    recorder = Recorder()
    srv = Server(str(tmp_path / "sdk-store"), args=["--public-url", recorder.base])
    recorder.target = srv.base
    try:
        document = fetch_document(srv.base)
        srv.base = recorder.base  # the SDK talks to the proxy
        out, _ = srv.sdk(
            """
            import numpy as np
            import pluto.query as q
            run = pluto.init(project="openapi", name="traced", config={"lr": 0.1, "layers": [1, 2]}, tags=["a"])
            for step in range(5):
                run.log({"train/loss": 1.0 / (step + 1), "train/acc": step / 10})
            run.log({"hist": pluto.Histogram(np.array([1.0, 2.0, 2.0, 3.0]))})
            run.log({"notes": pluto.Text("hello", caption="greeting")}, step=3)
            print("a console line")
            run.add_tags(["b"])
            run.update_config({"lr": 0.2})
            out["id"] = run.id
            run.finish()
            fork = pluto.init(project="openapi", name="fork", fork_run_id=out["id"], fork_step=2)
            fork.log({"train/loss": 0.1})
            fork.finish()
            out["runs"] = len(q.list_runs("openapi"))
            q.list_projects()
            q.get_run("openapi", out["id"])
            q.get_metric_names("openapi")
            q.get_metrics("openapi", out["id"])
            q.get_statistics("openapi", out["id"])
            q.compare_runs("openapi", [out["id"], fork.id], "train/loss")
            q.leaderboard("openapi", "train/loss")
            q.get_logs("openapi", out["id"])
            out["files"] = len(q.get_files("openapi", out["id"]))
            """,
            tmp_path,
        )
        assert out["runs"] == 2 and out["files"] == 1, out
    finally:
        srv.stop()
        recorder.stop()
    openapi = OpenAPI.from_dict(document)
    templates = {re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(t)) + "$"): t for t in document["paths"]}

    def template_of(path):
        if path in document["paths"]:
            return path
        return next((t for pattern, t in templates.items() if pattern.match(path)), None)

    checked, problems = set(), []
    for method, target, headers, body, status, resp_headers, data in recorder.exchanges:
        parts = urllib.parse.urlsplit(target)
        template = template_of(parts.path)
        if template is None:
            continue  # a route forkline does not serve (the SDK's alerts, model graphs)
        content_type = (headers.get("Content-Type") or headers.get("content-type") or "").split(";")[0] or None
        args = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        lowered = {k.title(): v for k, v in headers.items()}
        request = MockRequest(srv.base, method.lower(), parts.path, args=args, headers=lowered, data=body or None, content_type=content_type)
        where = f"{method} {parts.path} -> {status}"
        assert status == 200, f"{where}: {data[:500]!r}"
        if parts.path in LINE_SCHEMAS:
            # NDJSON is a string to OpenAPI 3.1: each line is checked against its schema.
            ndjson_lines_valid(document, LINE_SCHEMAS[parts.path], body)
            # openapi-core hands a body of a media type it does not parse on as bytes.
            request = MockRequest(srv.base, method.lower(), parts.path, args=args, headers=lowered, data=body.decode(), content_type=content_type)
        errors = list(openapi.iter_request_errors(request))
        problems += [f"{where} request: {describe(e)}" for e in errors]
        resp_type = (resp_headers.get("Content-Type") or resp_headers.get("content-type") or "").split(";")[0]
        response = MockResponse(data, status_code=status, content_type=resp_type)
        problems += [f"{where} answer: {describe(e)}" for e in openapi.iter_response_errors(request, response)]
        checked.add(f"{method} {template}")
    assert not problems, "\n".join(problems)
    for route in (
        "POST /api/runs/create",
        "POST /ingest/metrics",
        "POST /ingest/logs",
        "POST /ingest/data",
        "POST /api/runs/status/update",
        "POST /api/runs/tags/update",
        "POST /api/runs/config/update",
        "GET /api/runs/list",
        "GET /api/runs/projects",
        "GET /api/runs/metrics",
        "GET /api/runs/statistics",
        "GET /api/runs/compare",
        "GET /api/runs/leaderboard",
        "GET /api/runs/logs",
        "GET /api/runs/files",
        "GET /api/runs/details/{id}",
        "POST /files",
        "PUT /files/upload/{run}/{file}",
    ):
        assert route in checked, f"the SDK never called {route}: {sorted(checked)}"
