"""Download and upload progress of one source, as DownloadProgress reports.

`Meter` counts bytes for one URI and hands a DownloadProgress to a callback (the status
reporter, which rate-limits its lines itself). `meter_tqdm` makes a tqdm class that feeds a
meter: huggingface_hub draws its byte bars with the tqdm_class it is given.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from kubetune_api.reports import DownloadProgress

ProgressSink = Callable[[DownloadProgress], None]


def ignore(_: DownloadProgress) -> None:
    """A sink that drops reports (no reporter: a laptop run, a test)."""


class Meter:
    """Bytes moved for one source; thread-safe (huggingface_hub downloads files in threads)."""

    def __init__(self, source: str, sink: Optional[ProgressSink] = None, total: Optional[int] = None):
        self.source, self.sink, self.total = source, sink or ignore, total
        self.bytes = 0
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total = (self.total or 0) + n

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
        self.sink(self.snapshot())

    def snapshot(self, done: bool = False) -> DownloadProgress:
        elapsed = time.monotonic() - self._started
        rate = self.bytes / elapsed if elapsed > 0 and self.bytes else None
        return DownloadProgress(source=self.source, bytes=self.bytes, total_bytes=self.total,
                                bytes_per_second=rate, done=done)

    def finish(self) -> None:
        self.sink(self.snapshot(done=True))


class _Nowhere:
    """A file that drops what tqdm draws."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def meter_tqdm(meter: Meter):
    """A tqdm class whose byte bars (unit 'B') add to `meter` and print nothing.

    huggingface_hub passes it for its aggregate bars ("Downloading bytes", total growing as files
    start) and for its file-count bar (unit 'it'), which is ignored."""
    from tqdm.auto import tqdm

    class MeterTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = _Nowhere()  # the report line is the progress; no bar in the log
            # The bytes written; not the "Downloading bytes" bar, which counts the same bytes again.
            self._counts_bytes = kwargs.get("unit") == "B" and kwargs.get("desc") != "Downloading bytes"
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if self._counts_bytes and n:
                meter.add(int(n))
            return super().update(n)

        def __setattr__(self, name, value):
            # huggingface_hub grows a bar's total as files start: the meter follows it.
            if name == "total" and getattr(self, "_counts_bytes", False) and value:
                meter.total = int(value)
            super().__setattr__(name, value)

    return MeterTqdm
