"""Container logs as the kubelet serves them (GET /containerLogs/{ns}/{pod}/{container}):
which file a request names, its options, and copying the bytes out (following while the
container runs). No HTTP here: kubelet_api.py serves it."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from .process import ContainerFiles, proc_start_time

PREFIX = "/containerLogs/"
# What the API allows: DNS-1123 labels for namespaces and containers, subdomains for pods.
# No "/", "..", leading dot or ".previous": each name is one entry of the pod directories.
LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
NAMES = re.compile(rf"/containerLogs/(?P<ns>{LABEL})/(?P<pod>{LABEL}(\.{LABEL})*)"
                   rf"/(?P<container>{LABEL})")
CHUNK = 64 * 1024
FOLLOW_POLL_S = 0.25


class LogError(Exception):
    """A request the kubelet refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LogRequest:
    files: ContainerFiles
    tail_lines: int | None = None
    limit_bytes: int | None = None
    previous: bool = False
    follow: bool = False

    @property
    def path(self) -> Path:
        return self.files.previous_log if self.previous else self.files.log


def _int(query: dict[str, str], key: str, minimum: int) -> int | None:
    if key not in query:
        return None
    value = query[key]
    if not re.fullmatch(r"[0-9]+", value) or int(value) < minimum:  # no "+1", " 1", "1_0"
        raise LogError(400, f"{key} must be an integer >= {minimum}")
    return int(value)


def _bool(query: dict[str, str], key: str) -> bool:
    """Go's strconv.ParseBool, which the kubelet's query decoding uses."""
    value = query.get(key, "false")
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise LogError(400, f"{key} must be true or false")


def parse(pods_root: Path, path: str, query: dict[str, str]) -> LogRequest:
    """The request for `path` (/containerLogs/ns/pod/container) and its query (sinceSeconds,
    sinceTime and timestamps are accepted and ignored); the log must exist."""
    if not path.startswith(PREFIX):
        raise LogError(404, f"no such path: {path}")
    if not (names := NAMES.fullmatch(path)):
        raise LogError(400, "expected /containerLogs/{namespace}/{pod}/{container}")
    namespace, pod, container = names["ns"], names["pod"], names["container"]
    req = LogRequest(ContainerFiles(pods_root / namespace / pod, container),
                     tail_lines=_int(query, "tailLines", 0),
                     limit_bytes=_int(query, "limitBytes", 1),
                     previous=_bool(query, "previous"), follow=_bool(query, "follow"))
    _bool(query, "timestamps")  # validated only: log lines carry no timestamps here
    if not req.files.log.is_file():
        raise LogError(404, f"container {container!r} of pod {namespace}/{pod} not found")
    if req.previous and not req.files.previous_log.is_file():
        # The kubelet's answer (400) when there was no earlier run.
        raise LogError(400, f"previous terminated container {container!r} in pod {pod!r} "
                            "not found")
    return req


def tail_offset(f: BinaryIO, lines: int) -> int:
    """Where the last `lines` lines of f begin (a last line without its newline counts)."""
    end = f.seek(0, os.SEEK_END)
    if lines == 0 or end == 0:
        return end
    f.seek(end - 1)
    pos = end - 1 if f.read(1) == b"\n" else end  # the final newline ends the last line
    seen = 0
    while pos > 0:
        start = max(0, pos - CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        i = len(chunk)
        while (i := chunk.rfind(b"\n", 0, i)) != -1:
            seen += 1
            if seen == lines:
                return start + i + 1
        pos = start
    return 0


def running_check(files: ContainerFiles) -> Callable[[], bool]:
    """Whether the run that is current now still runs: its pid file names a live process
    (the agent removes the file when the process exits and writes a new one per run)."""
    try:
        pid, start = files.pid.read_text().split()
    except (OSError, ValueError):
        return lambda: False
    return lambda: proc_start_time(int(pid)) == start


def copy_log(req: LogRequest, write: Callable[[bytes], None],
             client_gone: Callable[[float], bool], poll_s: float = FOLLOW_POLL_S):
    """Writes the log: its last tailLines lines, then (follow) what the container appends
    until it stops or the client goes; at most limitBytes in all, counted after the tail as
    the kubelet does. client_gone(t) waits up to t s for the client to hang up."""
    running = running_check(req.files) if req.follow and not req.previous else lambda: False
    left = req.limit_bytes if req.limit_bytes is not None else float("inf")
    with open(req.path, "rb") as f:  # a restart renames the log: f stays on this run's
        f.seek(0 if req.tail_lines is None else tail_offset(f, req.tail_lines))
        while True:
            alive = running()  # asked before reading, so nothing written before the end is lost
            while left > 0 and (data := f.read(min(CHUNK, left))):
                write(data)
                left -= len(data)
            if left <= 0 or not alive or client_gone(poll_s):
                return
