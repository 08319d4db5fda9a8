"""What the tests share: paths, the tiny job, and loopback servers (hub, s3, twitter_api)."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "job" / "samples" / "sourdough_sam.jsonl"


class QuietServer(ThreadingHTTPServer):
    """The loopback servers' base: a client that hangs up (huggingface_hub on a 401, a stalled
    request's timeout, a pooled connection closed at the end) is no error of the server's, and
    socketserver's default would print its traceback into whatever test runs next."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def start(self) -> None:
        """Serve from a daemon thread. ``shutdown()`` waits for the loop's next poll: at
        socketserver's 0.5 s a test that starts and stops a server pays ~0.25 s for nothing."""
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.005}, daemon=True
        ).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def get_json(storage: Any, key: str) -> Any:
    """A record as a test reads it back (the job reads through job/records.py): the parsed
    JSON, or None where the key is absent or holds no JSON object."""
    import json

    data = storage.get_bytes(key)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
