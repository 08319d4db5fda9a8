"""S3 on loopback: moto in server mode, and a proxy in front of it that injects faults."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlparse

from tests.helpers import QuietServer

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


# moto's server, ended by the kernel once the thread that started it is gone (the main
# thread of a worker or a bench); the starter's pid is checked once the signal is asked for,
# as it may have died before.
# moto 5.2 finds each request's service by listing its own package folder, twice a request
# (werkzeug_app.get_backend_for_host: ~175 stat calls each). The folder cannot change while
# the server runs: it is listed once. Measured here: 1.0 of ~3.3 ms of the server's CPU a
# request; ~1,400 requests make the unit tier.
ORPHANLESS = """
import ctypes, os, runpy, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != {parent}:
    sys.exit(0)
from moto import backends
modules = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: modules
sys.argv[0] = "moto.server"
runpy.run_module("moto.server", run_name="__main__")
"""


class MotoS3:
    """moto's S3 and Batch in server mode, as its own process on 127.0.0.1.

    ``start`` returns at once: the server imports its backends on the other core while the
    tests that need no S3 run, and ``wait`` blocks only until it answers.
    """

    def start(self) -> MotoS3:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # It dies with the process that started it (PR_SET_PDEATHSIG, set before moto's own
        # code runs): a session killed outright (SIGKILL, a closed terminal's workers) never
        # calls stop, and left a ~200 MB server behind a run.
        server = ORPHANLESS.format(parent=os.getpid())
        self.process = subprocess.Popen(
            [sys.executable, "-c", server, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ready = False
        # Load its S3 and Batch backends now, on the other core, while tests that need no S3
        # run: the first request to each costs ~1.5 s otherwise.
        threading.Thread(target=self._warm, daemon=True).start()
        return self

    def _warm(self) -> None:
        import requests

        try:
            self.wait()
            requests.get(f"{self.url}/", timeout=30)  # S3: list buckets
            requests.post(f"{self.url}/v1/describejobqueues", json={}, timeout=30)  # Batch
            for service, action in (("ec2", "DescribeVpcs"), ("iam", "ListRoles")):
                scope = f"testing/20260101/us-east-1/{service}/aws4_request"
                requests.post(
                    f"{self.url}/",
                    data={"Action": action, "Version": "2016-11-15"},
                    headers={"Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, x"},
                    timeout=30,
                )
        except Exception:  # only a head start: the tests' own requests say what is wrong
            pass

    def wait(self, timeout: float = 60) -> MotoS3:
        import requests

        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                requests.get(f"{self.url}/moto-api/", timeout=5)
                self.ready = True
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # a test server: nothing to save, and its shutdown takes ~1 s
        self.process.wait(timeout=10)

    def reset(self) -> None:
        import requests

        requests.post(f"{self.url}/moto-api/reset", timeout=10)


class FaultProxy:
    """Forwards HTTP to ``target``; ``hook(method, path)`` may answer instead: with a status
    (an S3 error of it), or a status and the body to send (an answer S3 gives inside a 200).

    The hook may also act (kill the client, say) before the request is forwarded.
    """

    def __init__(self, target: str) -> None:
        self.target = urlparse(target)
        self.hook: Callable[[str, str], int | tuple[int, bytes] | None] = lambda m, p: None
        self.echo = False  # injected errors quote the request's Authorization header
        self.requests: list[tuple[str, str]] = []
        self.body = b""  # the request the hook is asked about (a DeleteObjects names its keys)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out in two writes: with Nagle on, the second waits for the
            # client's delayed ACK, 40 ms a request on loopback.
            disable_nagle_algorithm = True

            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                body = self.read_body()
                proxy.requests.append((self.command, self.path))
                proxy.body = body
                answer = proxy.hook(self.command, self.path)
                if answer is not None:
                    status, data = answer if isinstance(answer, tuple) else (answer, b"")
                    code = {403: "AccessDenied", 404: "NoSuchKey"}.get(status, "InternalError")
                    said = "injected"
                    if proxy.echo:  # as a hostile or broken server might
                        said = f"you sent {self.headers.get('Authorization')}"
                        code = f"{code} {said}"
                    if not data:
                        error = f"<Error><Code>{code}</Code><Message>{said}</Message></Error>"
                        data = error.encode()
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(
                    proxy.target.hostname, proxy.target.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                # a HEAD's answer has no body, and says the object's own length
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
