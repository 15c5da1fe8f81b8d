"""kubetune-train re-executes itself onto tcmalloc (kubetune_trainer.training.allocator) unless told
not to, once, keeping its arguments; without the library it stays on the C library's malloc."""
from __future__ import annotations

import subprocess
import sys

from kubetune_trainer.training.allocator import LIBRARY, preload_environment

# Re-executes into `python -m kubetune_trainer.training.allocator`, which prints the allocator it runs
# on; where use_tcmalloc returns, the probe prints its own.
PROBE = ("import sys; sys.argv = ['probe']; from kubetune_trainer.training.allocator import allocator_in_use, use_tcmalloc; "
         "use_tcmalloc('kubetune_trainer.training.allocator'); print(allocator_in_use())")


def probe(**env) -> str:
    import os

    done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_trainer_runs_on_tcmalloc_by_default_and_on_malloc_when_opted_out():
    # hack/apt-deps.sh installs libtcmalloc-minimal4, as the trainer image does.
    assert probe(KUBETUNE_ALLOCATOR="tcmalloc") == "tcmalloc"
    assert probe(KUBETUNE_ALLOCATOR="system") == "the C library's malloc"


def test_preload_keeps_other_preloads_and_never_loops():
    env = preload_environment({"LD_PRELOAD": "libother.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"].split() == [f"lib{LIBRARY}.so.4", "libother.so"] and env["PATH"] == "/bin"
    assert preload_environment(env) is None  # already preloaded: the re-executed process goes on
    assert preload_environment({"KUBETUNE_ALLOCATOR": "system"}) is None


def test_without_the_library_nothing_changes(monkeypatch):
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    assert preload_environment({"PATH": "/bin"}) is None
