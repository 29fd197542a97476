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

Outages, for fault tests: in the serving mode, SIGUSR1 takes the server down as
a crashed S3 endpoint would look (the port refuses connections and every open
connection is reset, mid-request or idle in a client's pool) and SIGUSR2 brings
it back on the same port with every object intact. `S3Server.down()` / `.up()`
do the same in-process.
"""

import argparse
import logging
import os
import signal
import socket
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


class _TrackedHandler(MotoRequestHandler):
    """Registers each open connection with its server, so an outage can reset them."""

    def setup(self):
        super().setup()
        with self.server.live_lock:
            self.server.live.add(self.connection)

    def finish(self):
        with self.server.live_lock:
            self.server.live.discard(self.connection)
        super().finish()


class S3Server:
    """moto's S3 on one loopback port that can be taken down and brought back."""

    def __init__(self, bucket: str):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.app = SerializedWrites(DomainDispatcherApplication(create_backend_app))
        self.port = 0
        self.server: BaseWSGIServer | None = None
        self.up()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # moto does not check signatures: a plain PUT creates the bucket.
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT", data=b"")
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as e:
            self.down()
            raise SystemExit(f"creating bucket {bucket}: HTTP {e.code}: {e.read().decode()}")

    def up(self) -> None:
        if self.server is not None:
            return
        server = make_server("127.0.0.1", self.port, self.app, threaded=True, request_handler=_TrackedHandler)
        server.live, server.live_lock = set(), threading.Lock()
        # Closing must not wait for handlers of connections idle in a client's pool.
        server.block_on_close = False
        server.daemon_threads = True
        self.port = server.server_port
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server
        print(f"S3 up on port {self.port}", file=sys.stderr, flush=True)

    def down(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.live_lock:
            live = list(server.live)
        for conn in live:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        print(f"S3 down: port {self.port} closed, {len(live)} open connections reset", file=sys.stderr, flush=True)


def main() -> int:
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", default="forkline-test")
    args = parser.parse_args(argv)

    s3 = S3Server(args.bucket)
    endpoint = s3.endpoint
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
        # Handlers only queue the request: down() waits for serve_forever,
        # which must not run inside a signal handler.
        wanted: list[str] = []
        changed = threading.Event()
        for sig, what in ((signal.SIGINT, "stop"), (signal.SIGTERM, "stop"), (signal.SIGUSR1, "down"), (signal.SIGUSR2, "up")):
            signal.signal(sig, lambda *_, what=what: (wanted.append(what), changed.set()))
        while True:
            # A signal may land on a server thread; Python runs its handler only
            # when the main thread next executes bytecode, so wake up often.
            changed.wait(timeout=0.05)
            changed.clear()
            while wanted:
                what = wanted.pop(0)
                if what == "stop":
                    return 0
                getattr(s3, what)()
    finally:
        s3.down()


if __name__ == "__main__":
    sys.exit(main())
