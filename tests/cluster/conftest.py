"""Unit tests of the local cluster's node agent (hack/cluster/node_agent): no cluster needed.

The agent is a package under hack/cluster, not an installed one, so that directory goes on
sys.path here."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HACK_CLUSTER = Path(__file__).resolve().parents[2] / "hack" / "cluster"
if str(HACK_CLUSTER) not in sys.path:
    sys.path.insert(0, str(HACK_CLUSTER))


def new_pod(**spec) -> dict:
    """A pod as the API server sends it (camelCase dicts), with one container by default."""
    spec.setdefault("containers", [{"name": "main", "command": ["true"]}])
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "uid-1",
                         "labels": {"app": "x", "tier": "a b"},
                         "annotations": {"note": "hi"}},
            "spec": spec, "status": {}}


@pytest.fixture
def make_pod():
    """new_pod, as a fixture: test modules cannot import this conftest by name reliably
    (tests/conftest.py is a `conftest` too)."""
    return new_pod


@pytest.fixture
def checkout(monkeypatch):
    """A checkout under /tmp, as in issue 16, with a space in its path and reached through a
    symlinked directory: /tmp/kubetune-link-*/check out, where /tmp/kubetune-link-* links to
    /tmp/kubetune co *. It holds marker.txt ("the checkout"). node_agent.process.REPO (the
    image's stand-in: the pods' working directory and venvs) is this checkout."""
    from node_agent import process

    real = Path(tempfile.mkdtemp(prefix="kubetune co ", dir="/tmp"))
    link = Path(tempfile.mkdtemp(prefix="kubetune-link-", dir="/tmp"))
    link.rmdir()
    link.symlink_to(real)
    root = link / "check out"
    root.mkdir()
    (root / "marker.txt").write_text("the checkout")
    monkeypatch.setattr(process, "REPO", root)
    yield root
    link.unlink()
    shutil.rmtree(real)
