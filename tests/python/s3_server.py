"""An S3-compatible server (moto) on a free loopback port, with one bucket, for tests.

    python tests/python/s3_server.py [--bucket NAME] [-- COMMAND ARGS...]

Starts moto's S3 on 127.0.0.1 (a port the OS picks), creates the bucket, then
either prints the endpoint (`http://127.0.0.1:PORT`) on stdout and serves until
SIGINT/SIGTERM, or, given a command after `--`, runs it with
`FORKLINE_TEST_S3=<endpoint>`, `FORKLINE_TEST_S3_BUCKET=<bucket>`,
`AWS_ENDPOINT_URL=<endpoint>`, `AWS_ALLOW_HTTP=true`, `AWS_REGION=us-east-1` and
dummy credentials in its environment, stops the server and exits with the
command's status. Needs `moto[server]==5.2.5` in the running interpreter.

moto checks `If-None-Match: *` and `If-Match` on PutObject and
CompleteMultipartUpload, but as a lookup followed by a store with no lock, so
two concurrent conditional puts of one key can both succeed (seen with moto
5.2.5's threaded server). Delta commits rely on put-if-absent being atomic, so
this server runs every request that can change state (anything but GET/HEAD)
under one lock; reads stay concurrent.
"""

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server


class SerializedWrites:
    """WSGI middleware: one state-changing request at a time, so conditional puts are atomic."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return self.app(environ, start_response)
        with self.lock:
            # Drain the body inside the lock: moto may store lazily while it is iterated.
            return list(self.app(environ, start_response))


def start(bucket: str) -> tuple[BaseWSGIServer, str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = SerializedWrites(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    # moto does not check signatures: a plain PUT creates the bucket.
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", data=b"")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
        server.shutdown()
        raise SystemExit(f"creating bucket {bucket}: HTTP {e.code}: {e.read().decode()}")
    return server, endpoint


def main() -> int:
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", default="forkline-test")
    args = parser.parse_args(argv)

    server, endpoint = start(args.bucket)
    try:
        if command:
            env = dict(os.environ)
            env.update(
                FORKLINE_TEST_S3=endpoint,
                FORKLINE_TEST_S3_BUCKET=args.bucket,
                # For in-process stores (tests/common/mod.rs); spawned binaries get --s3-* flags.
                AWS_ENDPOINT_URL=endpoint,
                AWS_ALLOW_HTTP="true",
                AWS_REGION="us-east-1",
                AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", "forkline-test"),
                AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", "forkline-test"),
            )
            return subprocess.call(command, env=env)
        print(endpoint, flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        return 0
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
