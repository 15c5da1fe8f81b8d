"""How a container's mounts are made: the plan (process.unhide) and real launches in a
private mount namespace (process.launch + mountns.py; root and `unshare` needed, no cluster).

The launches reproduce a checkout under /tmp: its pods' volume directories lie under /tmp,
and the pods mount an emptyDir at /tmp first, which hides those directories from every
later mount unless each source is opened before the first mount."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent import process
from node_agent.process import ContainerFiles, launch, unhide


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


needs_mounts = pytest.mark.skipif(not can_mount(), reason="needs root and `unshare --mount`")


# -- the plan ----------------------------------------------------------------------------------
def test_unhide_binds_kept_paths_back_right_after_the_mount_above_them():
    checkout, pod_dir = Path("/tmp/co"), Path("/srv/state/pods/ns/p")
    mounts = [(Path("/s/tmp"), "/tmp", False), (Path("/s/ws"), "/workspace", False),
              (Path("/s/sub"), "/tmp/co/runs/x", True)]
    assert unhide(mounts, [checkout, pod_dir]) == [
        (Path("/s/tmp"), "/tmp", False),
        (Path("/s/ws"), "/workspace", False),
        (checkout, "/tmp/co", False),            # after /tmp, before what lies inside it
        (Path("/s/sub"), "/tmp/co/runs/x", True),
    ]


def test_unhide_leaves_paths_no_mount_lands_above():
    mounts = [(Path("/s/a"), "/tmp/co", False), (Path("/s/b"), "/tmp/co/inside", False)]
    # A volume at the path itself replaces it, as a volume at an image's WORKDIR does.
    assert unhide(mounts, [Path("/tmp/co"), Path("/tmp/other")]) == mounts


# -- real launches (`checkout`: see conftest.py) ---------------------------------------------
def run(files: ContainerFiles, script: str, mounts, **spec) -> tuple[int, str]:
    """Runs a Python script as the container's command; returns (exit code, log)."""
    proc = launch(files, spec, [sys.executable, "-c", script], dict(os.environ), mounts,
                  restarted=False)
    code = proc.wait(timeout=60)
    return code, files.log.read_text()


@needs_mounts
def test_volumes_of_a_checkout_under_tmp_are_mounted_after_an_empty_dir_at_tmp(
        checkout, tmp_path):
    state = checkout / ".cluster"
    pod_dir = state / "pods" / "ns" / "p"
    sources = {name: pod_dir / "volumes" / name for name in ("tmp", "workspace", "config")}
    sources["data"] = state / "pvcs" / "ns" / "data"
    for path in sources.values():
        path.mkdir(parents=True)
    (sources["config"] / "app.yaml").write_text("lr: 0.01\n")
    (sources["data"] / "in.txt").write_text("kept")
    (pod_dir / "kubeconfig").write_text('{"current-context": "pod"}')
    # Targets outside /tmp live in tmp_path (under the repo's .cluster/test-tmp, not /tmp).
    ws, cfg, data = (str(tmp_path / name) for name in ("work space", "etc cfg", "data"))
    mounts = [(sources["tmp"], "/tmp", False), (sources["workspace"], ws, False),
              (sources["config"], cfg, True), (sources["data"], data, False)]
    script = f"""
import json, os
out = {{"cwd": os.getcwd(), "marker": open("marker.txt").read(),
        "kubeconfig": json.load(open({str(pod_dir / "kubeconfig")!r}))["current-context"],
        "config": open({cfg!r} + "/app.yaml").read(), "in": open({data!r} + "/in.txt").read()}}
open("/tmp/t.txt", "w").write("tmp")
open({ws!r} + "/w.txt", "w").write("workspace")
open({data!r} + "/out.txt", "w").write("data")
try:
    open({cfg!r} + "/new", "w")
    out["config_writable"] = True
except OSError:
    out["config_writable"] = False
open("/dev/termination-log", "w").write(json.dumps(out))
"""
    files = ContainerFiles(pod_dir, "main")
    code, log = run(files, script, mounts)
    assert code == 0, log
    assert json.loads(files.termination.read_text()) == {
        "cwd": str(checkout), "marker": "the checkout", "kubeconfig": "pod",
        "config": "lr: 0.01\n", "in": "kept", "config_writable": False}
    # Each write landed in its volume's directory on the host.
    assert (sources["tmp"] / "t.txt").read_text() == "tmp"
    assert (sources["workspace"] / "w.txt").read_text() == "workspace"
    assert (sources["data"] / "out.txt").read_text() == "data"
    assert not Path("/tmp/t.txt").exists()


@needs_mounts
def test_a_mount_can_hide_the_source_of_a_later_one(tmp_path):
    """The first volume is mounted over the directory that holds the second one's source."""
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "inner"
    inner.mkdir(parents=True)
    (inner / "f").write_text("inner")
    empty = tmp_path / "empty"
    empty.mkdir()
    files = ContainerFiles(tmp_path / "pod", "main")
    files.pod_dir.mkdir()
    code, log = run(files, f"print(open({str(tmp_path / 'b' / 'f')!r}).read())",
                    [(empty, str(outer), False), (inner, str(tmp_path / "b"), False)])
    assert (code, log) == (0, "inner\n")


@needs_mounts
def test_a_missing_command_exits_127_and_a_missing_source_32(tmp_path):
    files = ContainerFiles(tmp_path, "main")
    proc = launch(files, {}, ["no-such-command-kubetune"], dict(os.environ), [], False)
    assert proc.wait(timeout=60) == 127
    assert "no-such-command-kubetune" in files.log.read_text()
    code, log = run(files, "pass", [(tmp_path / "missing", str(tmp_path / "t"), False)])
    assert code == 32 and str(tmp_path / "missing") in log


@needs_mounts
def test_the_command_gets_default_signal_dispositions(tmp_path):
    """Python ignores SIGPIPE and SIGXFSZ at startup and an ignored signal stays ignored
    across exec: mountns.py must not pass that on (`yes | head` must end)."""
    files = ContainerFiles(tmp_path, "main")
    proc = launch(files, {}, ["grep", "SigIgn", "/proc/self/status"], dict(os.environ), [],
                  False)
    assert proc.wait(timeout=60) == 0
    ignored = int(files.log.read_text().split()[1], 16)
    for sig in (13, 25):  # SIGPIPE, SIGXFSZ
        assert not ignored & (1 << (sig - 1)), files.log.read_text()


@needs_mounts
def test_read_only_keeps_the_sources_nosuid_nodev_noexec(tmp_path):
    """As `mount -o remount,bind,ro` does: a read-only volume is no less restricted than its
    source (here a nosuid,nodev,noexec tmpfs, made in the same private namespace)."""
    src, target = tmp_path / "src", tmp_path / "target"
    src.mkdir()
    plan = json.dumps({"mounts": [[str(src / "d"), str(target), True]], "cwd": "/"})
    script = ('mount -t tmpfs -o nosuid,nodev,noexec none "$1" && mkdir "$1/d" && '
              'exec "$2" -I -S "$3" "$4" cat /proc/self/mountinfo')
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
         str(src), sys.executable, str(process.MOUNTNS), plan],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.split()[4] == str(target))
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(line.split()[5].split(","))
