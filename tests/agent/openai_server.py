"""A small local HTTP server speaking the OpenAI chat-completions protocol, for tests."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], str]
# The whole response body instead of one built around ``reply``'s text (malformed replies).
Payload = Callable[[dict[str, Any]], Any]


class ChatServer:
    def __init__(
        self,
        reply: Reply,
        status: int = 200,
        delay_s: float = 0.0,
        payload: Payload | None = None,
        byte_delay_s: float = 0.0,
    ) -> None:
        self.reply = reply
        self.status = status
        self.delay_s = delay_s
        self.payload = payload
        self.byte_delay_s = byte_delay_s
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.base_url = ""


@contextmanager
def chat_server(
    reply: Reply,
    status: int = 200,
    delay_s: float = 0.0,
    payload: Payload | None = None,
    byte_delay_s: float = 0.0,
) -> Iterator[ChatServer]:
    """``byte_delay_s``: send the body one byte at a time, this far apart (a server that
    trickles its reply, each read well within any per-read timeout)."""
    state = ChatServer(reply, status, delay_s, payload, byte_delay_s)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            state.headers.append(dict(self.headers))
            if self.path != "/v1/chat/completions":
                self.send_response(404)
                self.end_headers()
                return
            time.sleep(state.delay_s)
            text = state.reply(body)
            payload = {
                "id": "cmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                    "completion_tokens": len(text.split()),
                },
            }
            if state.payload is not None:
                payload = state.payload(body)
            data = json.dumps(payload).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
                if not state.byte_delay_s:
                    self.wfile.write(data)
                for byte in data if state.byte_delay_s else b"":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(state.byte_delay_s)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
