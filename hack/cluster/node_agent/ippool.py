"""Pod IPs: every pod (but hostNetwork ones) gets its own loopback address."""
from __future__ import annotations

import threading

from .common import HOST_IP, NotReady


class IPPool:
    """Pod IPs 127.0.0.2 .. 127.0.0.254, lowest free first, reused once released."""

    def __init__(self):
        self.used: set[int] = set()
        self.lock = threading.Lock()

    def allocate(self) -> str:
        with self.lock:
            for n in range(2, 255):
                if n not in self.used:
                    self.used.add(n)
                    return f"127.0.0.{n}"
        raise NotReady("IPExhausted", "no free pod IP on this node")

    def release(self, ip: str | None):
        """Ignores what the pool never hands out (None, the host IP, other addresses)."""
        if ip and ip.startswith("127.0.0.") and ip != HOST_IP:
            with self.lock:
                self.used.discard(int(ip.rsplit(".", 1)[1]))
