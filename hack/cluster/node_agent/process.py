"""Running a container as a process: launching it in a private mount namespace (where
mountns.py binds its volumes), its log/termination-message/pid files, and signalling its
process group (also the leftovers of an earlier agent run)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .common import log
from .volumes import MemoryVolume

REPO = Path(__file__).resolve().parents[3]  # stands in for the image's WORKDIR
MOUNTNS = Path(__file__).resolve().with_name("mountns.py")
MAX_MESSAGE = 4096     # the kubelet's limit for termination messages
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048

Mount = tuple[Path, str, bool]  # (host source, mountPath, readOnly)


@dataclass(frozen=True)
class ContainerFiles:
    """Where one container's files live in the pod directory (down.sh reads the pid files)."""
    pod_dir: Path
    name: str

    @property
    def log(self) -> Path:
        return self.pod_dir / f"{self.name}.log"

    @property
    def previous_log(self) -> Path:
        return self.pod_dir / f"{self.name}.previous.log"

    @property
    def termination(self) -> Path:
        return self.pod_dir / f"{self.name}.termination-log"

    @property
    def pid(self) -> Path:
        return self.pod_dir / f"{self.name}.pid"


def proc_start_time(pid: int) -> str | None:
    """Start time of a process (field 22 of /proc/pid/stat): tells a pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_group(pid: int, sig: int):
    """Signals a container's whole process group: what it spawned goes with it."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("no permission to signal process group %s", pid)


def unhide(mounts: list[Mount], keep: list[Path]) -> list[Mount]:
    """The mounts, parents first, plus each `keep` path bound back at its own path if a
    mount lands above it. The process needs REPO (it stands for the image: working dir,
    venvs) and its pod directory (its kubeconfig); on a node neither lies under a volume,
    but a checkout under /tmp lies under the pods' emptyDir at /tmp."""
    hidden = [(p, str(p), False) for p in keep
              if any(Path(target) in p.parents for _, target, _ in mounts)]
    return sorted([*mounts, *hidden], key=lambda m: len(Path(m[1]).parts))


def launch(files: ContainerFiles, spec: dict, argv: list[str], env: dict,
           mounts: list[Mount], restarted: bool) -> subprocess.Popen:
    """Starts the container's process in its own mount namespace and process group, where
    mountns.py binds its mounts and execs argv; its output goes to the log (the previous
    run's log is kept, like `kubectl logs -p`)."""
    files.termination.write_bytes(b"")
    # The agent's venv stands for the image too; it lies in REPO unless KUBETUNE_PYTHON says otherwise.
    mounts = [*unhide(mounts, [REPO, Path(sys.prefix), files.pod_dir]),
              (files.termination, spec.get("terminationMessagePath") or "/dev/termination-log",
               False)]
    # A memory emptyDir has no source: mountns.py mounts a tmpfs ("size=N" or "").
    plan = json.dumps({"mounts": [[None, target, ro, f"size={src.size}" if src.size else ""] if isinstance(src, MemoryVolume)
                                  else [str(src), target, ro] for src, target, ro in mounts],
                       "cwd": spec.get("workingDir") or str(REPO)})
    if restarted and files.log.exists():
        files.log.replace(files.previous_log)
    with open(files.log, "ab") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, "-I", "-S", str(MOUNTNS), plan, *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd="/", start_new_session=True)
    files.pid.write_text(f"{proc.pid} {proc_start_time(proc.pid)}\n")
    return proc


def tail_of_log(path: Path) -> str:
    """FallbackToLogsOnError: the last 80 lines of the log, at most 2048 bytes."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    lines = data.splitlines(keepends=True)[-FALLBACK_LINES:]
    return b"".join(lines)[-FALLBACK_BYTES:].decode("utf-8", "replace")


def termination_message(files: ContainerFiles, code: int, policy: str | None) -> str:
    """What the container wrote to its terminationMessagePath (or its log's tail)."""
    try:
        msg = files.termination.read_bytes()[:MAX_MESSAGE]
    except OSError:
        msg = b""
    text = msg.decode("utf-8", "replace")
    if not text and code != 0 and policy == "FallbackToLogsOnError":
        text = tail_of_log(files.log)
    return text


def kill_leftovers(pods_root: Path):
    """Pod processes an earlier agent run left behind (it crashed): nothing runs under
    this agent yet, so every live pid file is a leftover."""
    for pid_file in pods_root.glob("*/*/*.pid"):
        try:
            pid, start = pid_file.read_text().split()
            if proc_start_time(int(pid)) == start:
                log.info("killing leftover process group %s (%s)", pid, pid_file)
                kill_group(int(pid), signal.SIGKILL)
        except (ValueError, OSError):
            pass
        pid_file.unlink(missing_ok=True)
