"""A real S3 API server on loopback for tests and benchmarks: moto in server mode (HTTP, SigV4,
the real botocore client on our side), never a client-side mock."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from citewell.ingestion.sources import S3Source

ACCESS_KEY = "citewell-test-access"
SECRET_KEY = "citewell-test-secret-do-not-log"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def env(self) -> dict[str, str]:
        """What the standard AWS chain reads: credentials, region and the endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


def bucket_with(server: S3Server, objects: Mapping[str, str | bytes], name: str = "t") -> str:
    """A new, uniquely named bucket on ``server`` holding ``objects`` (key -> body)."""
    bucket = f"{name}-{uuid.uuid4().hex[:10]}"
    client = server.client()
    client.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return bucket


def s3_source(bucket: str, prefix: str = "", **options: Any) -> S3Source:
    """An S3Source for the test server: quick retries and timeouts, the default scheme and a
    10,000-byte size limit unless ``options`` say otherwise."""
    from citewell.core.models import ClassificationScheme
    from citewell.ingestion.sources import S3Location, S3Source

    defaults: dict[str, Any] = {
        "scheme": ClassificationScheme(),
        "max_file_bytes": 10_000,
        "max_attempts": 2,
        "timeout_s": 5,
    }
    return S3Source(S3Location(bucket=bucket, prefix=prefix), **{**defaults, **options})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_s3_server(own_process: bool = False) -> Iterator[S3Server]:
    """``own_process``: the server runs in a child process (benchmarks: its request handling
    then does not compete with the client for this process's GIL)."""
    if own_process:
        with _moto_process() as child:
            yield child
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@dataclass(frozen=True)
class FaultProxy:
    """A loopback HTTP proxy in front of the S3 server that answers the requests ``fails``
    selects with an S3 ``InternalError`` (HTTP 500), the way a store fails mid-run."""

    endpoint_url: str
    failed: list[str]


@contextmanager
def running_fault_proxy(
    upstream_url: str, fails: Callable[[str, str], bool]
) -> Iterator[FaultProxy]:
    """``fails(method, path_and_query)`` decides which requests fail; the rest are forwarded
    to ``upstream_url`` unchanged (moto does not check signatures)."""
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlparse

    upstream = urlparse(upstream_url)
    failed: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if fails(self.command, self.path):
                failed.append(f"{self.command} {self.path}")
                error = (
                    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                    b"<Message>injected</Message></Error>"
                )
                self.send_response(500)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            connection = http.client.HTTPConnection(upstream.netloc, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = upstream.netloc
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FaultProxy(endpoint_url=f"http://127.0.0.1:{server.server_port}", failed=failed)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def _moto_process() -> Iterator[S3Server]:
    import subprocess
    import sys
    import time

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.2)
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
