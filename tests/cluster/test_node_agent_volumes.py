"""Volumes and credentials: item selection, modes, optional sources, projected volumes,
mount ordering, the pod's kubeconfig. API objects come from a dict, tokens from a stub."""
from __future__ import annotations

import base64
import json
import stat

import pytest

from node_agent.common import NotReady, Unsupported
from node_agent.env import PodFacts
from node_agent.volumes import (VolumeMaker, clean_up, pick_items, pod_kubeconfig, reset_dir,
                                volume_mounts, write_credentials, write_files)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


OBJECTS = {
    ("configmaps", "cfg"): {"data": {"app.yaml": "lr: 0.01\n", "other": "o"},
                            "binaryData": {"blob.bin": b64(b"\x00\xff")}},
    ("secrets", "sec"): {"data": {"password": b64(b"hunter2"), "user": b64(b"me")}},
}


@pytest.fixture
def tokens():
    return []


@pytest.fixture
def maker(tmp_path, tokens, make_pod):
    pod = make_pod(serviceAccountName="runner")
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Gi"}}

    def token(audience, expiration):
        tokens.append((audience, expiration))
        return f"token-for-{audience}"

    return VolumeMaker(tmp_path / "pod", tmp_path / "pvcs", PodFacts(pod, "n1", "127.0.0.9"),
                       lambda plural, name: OBJECTS.get((plural, name)), token)


def tree(root) -> dict:
    """{relative path: (content, mode)} of the files under root."""
    return {str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- pick_items --------------------------------------------------------------------------
def test_pick_items_all_keys_with_default_mode():
    assert pick_items({"a": b"1", "b": b"2"}, None, 0o644, False, "x") == \
        {"a": (b"1", 0o644), "b": (b"2", 0o644)}


def test_pick_items_selected_keys_paths_and_modes():
    items = [{"key": "a", "path": "dir/a.txt", "mode": 0o400}, {"key": "b", "path": "b"}]
    assert pick_items({"a": b"1", "b": b"2", "c": b"3"}, items, 0o640, False, "x") == \
        {"dir/a.txt": (b"1", 0o400), "b": (b"2", 0o640)}


def test_pick_items_missing_key_fails_unless_optional():
    items = [{"key": "a", "path": "a"}, {"key": "zz", "path": "zz"}]
    with pytest.raises(NotReady, match="configmap \"c\" has no key 'zz'") as e:
        pick_items({"a": b"1"}, items, 0o644, False, 'configmap "c"')
    assert e.value.reason == "FailedMount"
    assert pick_items({"a": b"1"}, items, 0o644, True, "x") == {"a": (b"1", 0o644)}


# -- materialize ---------------------------------------------------------------------------
def test_config_map_volume_writes_data_and_binary_data_read_only(maker, tmp_path):
    path, ro = maker.materialize({"name": "v", "configMap": {"name": "cfg", "defaultMode": 0o600}})
    assert ro is True and path == tmp_path / "pod" / "volumes" / "v"
    assert tree(path) == {"app.yaml": (b"lr: 0.01\n", 0o600), "blob.bin": (b"\x00\xff", 0o600),
                          "other": (b"o", 0o600)}


def test_secret_volume_items_are_decoded(maker):
    path, ro = maker.materialize({"name": "s", "secret": {
        "secretName": "sec", "items": [{"key": "password", "path": "pw", "mode": 0o400}]}})
    assert ro is True
    assert tree(path) == {"pw": (b"hunter2", 0o400)}


def test_missing_source_fails_unless_optional(maker):
    with pytest.raises(NotReady, match='secret "nope" not found'):
        maker.materialize({"name": "s", "secret": {"secretName": "nope"}})
    path, _ = maker.materialize({"name": "s", "secret": {"secretName": "nope", "optional": True}})
    assert path.is_dir() and tree(path) == {}


def test_rematerializing_replaces_old_files(maker):
    vol = {"name": "v", "configMap": {"name": "cfg"}}
    path, _ = maker.materialize(vol)
    (path / "stale").write_text("x")
    maker.materialize(vol)
    assert "stale" not in tree(path)


def test_downward_api_volume(maker):
    path, _ = maker.materialize({"name": "d", "downwardAPI": {"defaultMode": 0o444, "items": [
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o400},
        {"path": "mem", "resourceFieldRef": {"containerName": "main",
                                             "resource": "limits.memory", "divisor": "1Mi"}},
    ]}})
    assert tree(path) == {"name": (b"p", 0o444), "labels": (b'app="x"\ntier="a b"', 0o400),
                          "mem": (b"1024", 0o444)}


def test_projected_volume_merges_sources_with_its_default_mode(maker, tokens):
    path, ro = maker.materialize({"name": "proj", "projected": {"defaultMode": 0o640, "sources": [
        {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "cm/other"}]}},
        {"secret": {"name": "sec", "items": [{"key": "user", "path": "user", "mode": 0o600}]}},
        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        {"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 7200}},
    ]}})
    assert ro is True
    assert tree(path) == {"cm/other": (b"o", 0o640), "user": (b"me", 0o600),
                          "ns": (b"ns", 0o640), "token": (b"token-for-vault", 0o640)}
    assert tokens == [("vault", 7200)]


def test_empty_dir_pvc_and_host_path(maker, tmp_path):
    path, ro = maker.materialize({"name": "scratch", "emptyDir": {}})
    assert path.is_dir() and ro is False
    path, ro = maker.materialize({"name": "data", "persistentVolumeClaim": {
        "claimName": "c1", "readOnly": True}})
    assert path == tmp_path / "pvcs" / "c1" and path.is_dir() and ro is True
    made = tmp_path / "host" / "dir"
    path, ro = maker.materialize({"name": "h", "hostPath": {"path": str(made),
                                                            "type": "DirectoryOrCreate"}})
    assert path == made and made.is_dir() and ro is False
    f = tmp_path / "host" / "sub" / "file"
    maker.materialize({"name": "f", "hostPath": {"path": str(f), "type": "FileOrCreate"}})
    assert f.is_file()
    with pytest.raises(NotReady, match="does not exist"):
        maker.materialize({"name": "x", "hostPath": {"path": str(tmp_path / "no"),
                                                     "type": "Directory"}})


def test_unsupported_volume_type(maker):
    with pytest.raises(Unsupported, match="nfs"):
        maker.materialize({"name": "n", "nfs": {"server": "x", "path": "/"}})


# -- mounts ---------------------------------------------------------------------------------
def test_volume_mounts_parents_first_with_sub_path_and_read_only(tmp_path):
    vols = {"data": (tmp_path / "data", False), "cfg": (tmp_path / "cfg", True)}
    spec = {"volumeMounts": [
        {"name": "data", "mountPath": "/work/data/deep", "subPath": "a/b"},
        {"name": "cfg", "mountPath": "/etc/cfg"},
        {"name": "data", "mountPath": "/work", "readOnly": True},
    ]}
    assert volume_mounts(spec, vols) == [
        (tmp_path / "data", "/work", True),
        (tmp_path / "cfg", "/etc/cfg", True),      # a configMap-like volume is always read-only
        (tmp_path / "data" / "a/b", "/work/data/deep", False),
    ]
    assert (tmp_path / "data" / "a" / "b").is_dir()  # subPath is created


def test_volume_mount_of_unknown_volume_is_unsupported():
    with pytest.raises(Unsupported, match="'ghost'"):
        volume_mounts({"volumeMounts": [{"name": "ghost", "mountPath": "/x"}]}, {})


# -- credentials and the pod directory ------------------------------------------------------------
def test_pod_kubeconfig_uses_the_service_account_and_namespace():
    kc = pod_kubeconfig("https://127.0.0.1:16443", b"CA", "ns", "runner", {"token": "t"})
    user = "system:serviceaccount:ns:runner"
    assert kc["current-context"] == "pod"
    assert kc["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:16443",
                                            "certificate-authority-data": b64(b"CA")}
    assert kc["users"] == [{"name": user, "user": {"token": "t"}}]
    assert kc["contexts"][0]["context"] == {"cluster": "local", "namespace": "ns", "user": user}


def test_write_credentials(tmp_path, make_pod):
    calls = []
    pod = make_pod(serviceAccountName="runner")
    write_credentials(tmp_path, pod, "https://api", b"CA",
                      lambda aud, exp: calls.append((aud, exp)) or "tok")
    assert calls == [(None, 86400)]
    kc = json.loads((tmp_path / "kubeconfig").read_text())
    assert kc["users"][0]["user"] == {"token": "tok"}
    assert stat.S_IMODE((tmp_path / "kubeconfig").stat().st_mode) == 0o600
    assert tree(tmp_path / "serviceaccount") == {"token": (b"tok", 0o600), "ca.crt": (b"CA", 0o644),
                                                 "namespace": (b"ns", 0o644)}


def test_write_credentials_without_automount(tmp_path, make_pod):
    pod = make_pod(automountServiceAccountToken=False)
    write_credentials(tmp_path, pod, "https://api", b"CA", lambda *a: pytest.fail("no token"))
    assert json.loads((tmp_path / "kubeconfig").read_text())["users"][0]["user"] == {}
    assert not (tmp_path / "serviceaccount").exists()


def test_reset_dir_keeps_same_uid_and_wipes_another(tmp_path):
    d = tmp_path / "pod"
    reset_dir(d, "u1")
    (d / "main.log").write_text("log")
    reset_dir(d, "u1")
    assert (d / "main.log").exists()
    reset_dir(d, "u2")
    assert not (d / "main.log").exists() and (d / "uid").read_text() == "u2"


def test_clean_up_removes_volumes_and_credentials_keeps_logs(tmp_path):
    write_files(tmp_path / "volumes" / "v", {"f": (b"x", 0o644)})
    write_files(tmp_path / "serviceaccount", {"token": (b"t", 0o600)})
    (tmp_path / "kubeconfig").write_text("{}")
    (tmp_path / "main.log").write_text("log")
    clean_up(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main.log"]
