"""A loopback OpenAI-compatible /v1/chat/completions server whose verdicts a test scripts.

`FakeJudgeServer(decide)` serves on 127.0.0.1 (a free port) in a thread. `decide(instruction, output_a,
output_b)` returns the reply text, or an int HTTP status to answer with that error. Every request is
recorded (`seen`: instruction, output_a, output_b, authorization header, model).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

_OUTPUTS = re.compile(r"## Instruction:\n(.*)\n\n## Output \(a\):\n(.*)\n\n## Output \(b\):\n(.*)\n\n## Which", re.S)


def always(text: str) -> Callable[[str, str, str], str]:
    return lambda instruction, a, b: text


class FakeJudgeServer:
    def __init__(self, decide: Callable[[str, str, str], str | int]):
        self.decide = decide
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                instruction, output_a, output_b = _OUTPUTS.search(request["messages"][-1]["content"]).groups()
                with server._lock:
                    server.seen.append({"instruction": instruction, "a": output_a, "b": output_b,
                                        "authorization": self.headers.get("Authorization"), "model": request["model"],
                                        "path": self.path})
                reply = server.decide(instruction, output_a, output_b)
                if isinstance(reply, int):
                    self.send_response(reply)
                    self.end_headers()
                    return
                body = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                if reply == "<not json>":
                    body = b"<html>oops</html>"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeJudgeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
