"""Servers on loopback that never finish: one that accepts and says nothing, one that answers a
byte at a time. Each stops when the test ends (its threads are daemons, its socket closed)."""

from __future__ import annotations

import socket
import threading
import time


class Stall:
    """Accepts every connection; ``drip`` None: never sends a byte. Else it sends an HTTP 200
    head for a large body, then one byte of it every ``drip`` seconds, forever: each read
    gets a byte in time, so no read times out."""

    def __init__(self, drip: float | None = None) -> None:
        self.drip = drip
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.stop = threading.Event()
        self._held: list[socket.socket] = []

    def __enter__(self) -> Stall:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self._held:
            conn.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)
            if self.drip is not None:
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        assert self.drip is not None
        try:
            conn.recv(65536)  # the request
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                f'Content-Length: 100000000\r\nETag: "x"\r\nX-Repo-Commit: {"0" * 40}\r\n\r\n'
            )
            conn.sendall(head.encode())
            while not self.stop.wait(self.drip):
                conn.sendall(b"x")
        except OSError:
            return


def wait_for(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
