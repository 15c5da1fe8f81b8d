"""Unit tests of the local cluster's node agent (hack/cluster/node_agent): no cluster needed.

The agent is a package under hack/cluster, not an installed one, so that directory goes on
sys.path here."""
from __future__ import annotations

import sys
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
