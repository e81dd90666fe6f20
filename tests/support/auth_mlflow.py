"""An MLflow server behind HTTP basic auth, as a team's shared server is: a real `mlflow server` on 127.0.0.1 and,
in front of it, a reverse proxy (a thread of the test process, on 127.0.0.1) that answers 401 to every request
without `Authorization: Basic USER:PASSWORD` and forwards the others. The proxy counts what it let through, so a
test sees that the sweep's processes did authenticate. The password is never on a command line: the proxy
holds it in memory.
"""
from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

USER = "sweeper"
PASSWORD = "pw-5b0e7c41-kept-from-ray"
START_TIMEOUT_S = 90
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class AuthServer:
    proxy_port: int            # where clients connect (basic auth)
    upstream: str              # the mlflow server itself, for the test to read what was recorded
    folder: Path               # the server's store (mlflow.db) and artifacts
    passed: int = 0            # requests with the right credentials
    refused: int = 0           # requests without them

    def uri(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.proxy_port}"


def _handler(server: AuthServer, upstream_port: int):
    expected = basic(USER, PASSWORD)

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            body = self._body()
            if self.headers.get("Authorization") != expected:
                server.refused += 1
                self._reply(401, {"WWW-Authenticate": 'Basic realm="mlflow"'}, b"unauthorized")
                return
            server.passed += 1
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"authorization"}}
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                self._reply(answer.status, {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP
                                            and k.lower() != "content-length"}, answer.read())
            finally:
                conn.close()

        def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    return Proxy


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up (exit code {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its own session, started here), then SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def mlflow_behind_auth(folder: Path):
    """A running `mlflow server` (runs in `folder`/mlflow.db, artifacts in `folder`/artifacts) behind the
    proxy; both stopped at the end."""
    port = free_port()
    log = folder / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "artifacts")]
    # MLflow's background job runner starts processes the sweep never uses.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    httpd = None
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/health", proc, log)
        server = AuthServer(proxy_port=0, upstream=f"http://127.0.0.1:{port}", folder=folder)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server, port))
        httpd.daemon_threads = True
        server.proxy_port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield server
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        _stop(proc)
