"""A moto S3 server on 127.0.0.1 for tests, serving one request at a time.

moto checks a conditional PUT's precondition and stores the object in two steps, so its usual
threaded server can let two racing `If-None-Match: *` PUTs both succeed, which S3 itself never does.
Served one request at a time, each request is atomic as on S3, and a test of the lease protocol
tests the protocol rather than moto's thread safety. `python loopback_s3.py PORT` runs the server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[dict[str, str]]:
    """Run the server with `bucket` created; yields the AWS_* environment that points clients at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        import boto3

        client = boto3.session.Session().client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                                                aws_access_key_id="test", aws_secret_access_key="test")
        deadline = time.monotonic() + 90  # generous: a busy machine starts it slowly
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the moto server on port {port} did not start") from None
                time.sleep(0.2)
        yield env
    finally:
        server.kill()
        server.wait()


def _serve(port: int) -> None:
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    run_simple("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
