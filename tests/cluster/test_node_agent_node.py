"""What the agent posts about its node and the volumes it provisions; container files."""
from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.common import NODE_RESOURCES
from node_agent.node import node_status
from node_agent.process import ContainerFiles, tail_of_log, termination_message
from node_agent.provisioner import volume_for


def test_node_status_is_ready_with_fixed_resources():
    st = node_status("n1", "SINCE", {"kubeletVersion": "v1.20.2"})
    assert st["capacity"] == st["allocatable"] == NODE_RESOURCES
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False",
        "Ready": "True"}
    assert all(c["lastTransitionTime"] == "SINCE" for c in st["conditions"])
    assert st["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"},
                               {"type": "Hostname", "address": "n1"}]
    assert st["nodeInfo"] == {"kubeletVersion": "v1.20.2"}


def test_volume_for_claim_is_pre_bound(tmp_path):
    claim = {"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
             "spec": {"resources": {"requests": {"storage": "5Gi"}},
                      "accessModes": ["ReadWriteMany"], "storageClassName": "standard"}}
    pv = volume_for(claim, tmp_path)
    assert pv["metadata"]["name"] == "pvc-u1"
    assert pv["metadata"]["labels"] == {"kubetune.local/provisioned": "true"}
    assert pv["spec"]["capacity"] == {"storage": "5Gi"}
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["storageClassName"] == "standard"
    assert pv["spec"]["claimRef"]["uid"] == "u1" and pv["spec"]["claimRef"]["namespace"] == "ns"
    assert pv["spec"]["hostPath"] == {"path": str(tmp_path), "type": "DirectoryOrCreate"}


def test_volume_for_claim_defaults():
    pv = volume_for({"metadata": {"name": "c", "namespace": "n", "uid": "u"}, "spec": {}},
                    Path("/x"))
    assert pv["spec"]["capacity"] == {"storage": "1Gi"}
    assert pv["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pv["spec"]["volumeMode"] == "Filesystem" and pv["spec"]["storageClassName"] == ""


@pytest.fixture
def files(tmp_path):
    return ContainerFiles(tmp_path, "main")


def test_termination_message_from_file_is_capped(files):
    files.termination.write_bytes(b"x" * 5000)
    assert termination_message(files, 1, None) == "x" * 4096


def test_fallback_to_logs_only_on_error(files):
    files.termination.write_bytes(b"")
    files.log.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    assert termination_message(files, 0, "FallbackToLogsOnError") == ""
    assert termination_message(files, 1, "File") == ""
    tail = termination_message(files, 1, "FallbackToLogsOnError")
    assert tail.startswith("line 20\n") and tail.endswith("line 99\n")


def test_tail_of_log_is_capped_in_bytes(tmp_path):
    log = tmp_path / "l"
    log.write_bytes(b"a" * 5000)
    assert tail_of_log(log) == "a" * 2048
    assert tail_of_log(tmp_path / "missing") == ""
