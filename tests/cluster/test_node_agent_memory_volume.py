"""A memory emptyDir (medium: Memory, e.g. a runtime's /dev/shm) on the node agent: a tmpfs
of the sizeLimit mounted at the container's mountPath, in its own mount namespace (real
launches: root and `unshare` needed, no cluster)."""
from __future__ import annotations

import json
import os
import sys

import pytest

from node_agent.common import Unsupported
from node_agent.process import ContainerFiles, launch
from node_agent.volumes import MemoryVolume, VolumeMaker, volume_mounts
from test_node_agent_mounts import needs_mounts


@pytest.mark.parametrize("empty_dir, size", [
    ({"medium": "Memory"}, None), ({"medium": "Memory", "sizeLimit": "64Mi"}, 64 * 2**20),
    ({"medium": "Memory", "sizeLimit": "2G"}, 2 * 10**9), ({"medium": "Memory", "sizeLimit": 1048576}, 2**20),
])
def test_a_memory_empty_dir_is_a_tmpfs_of_its_size_limit(tmp_path, empty_dir, size):
    maker = VolumeMaker(tmp_path, tmp_path / "pvcs", None, lambda *a: None, lambda *a: "")
    assert maker.materialize({"name": "dshm", "emptyDir": empty_dir}) == (MemoryVolume(size), False)
    assert not (tmp_path / "volumes" / "dshm").exists()  # nothing on the host's disk


def test_a_memory_empty_dir_refuses_what_the_agent_cannot_do():
    with pytest.raises(Unsupported, match="sizeLimit"):
        MemoryVolume.of({"medium": "Memory", "sizeLimit": "1.5Gi"})
    with pytest.raises(Unsupported, match="subPath"):
        volume_mounts({"volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm", "subPath": "x"}]},
                      {"dshm": (MemoryVolume(None), False)})


@needs_mounts
def test_the_container_sees_a_tmpfs_at_dev_shm(tmp_path):
    files = ContainerFiles(tmp_path, "main")
    script = """
import json, os
mounts = [line.split() for line in open("/proc/self/mountinfo")]
shm = [m for m in mounts if m[4] == "/dev/shm"][-1]
fstype = shm[shm.index("-") + 1]
open("/dev/shm/nccl-probe", "w").write("x")
stat = os.statvfs("/dev/shm")
open("/dev/termination-log", "w").write(json.dumps({"fstype": fstype, "bytes": stat.f_blocks * stat.f_frsize}))
"""
    proc = launch(files, {}, [sys.executable, "-c", script], dict(os.environ),
                  [(MemoryVolume(64 * 2**20), "/dev/shm", False)], restarted=False)
    assert proc.wait(timeout=60) == 0, files.log.read_text()
    assert json.loads(files.termination.read_text()) == {"fstype": "tmpfs", "bytes": 64 * 2**20}
    assert not os.path.exists("/dev/shm/nccl-probe")  # the host's /dev/shm is untouched
