"""Volumes and credentials: a pod's volumes become host paths (directories written from
configMaps, secrets, the downward API and tokens; PVC and hostPath directories), and the
pod gets a kubeconfig holding a token of its own service account.

The API is reached only through `fetch(plural, name)` and `token(audience, expiration)`
callables, so everything but `request_token` runs without a cluster."""
from __future__ import annotations

import base64
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kubernetes.client.rest import ApiException

from .common import NotReady, Unsupported
from .env import Fetch, PodFacts, service_account

_BYTES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


@dataclass(frozen=True)
class MemoryVolume:
    """An emptyDir with medium Memory: a tmpfs mounted at each mountPath (no host directory;
    each container gets its own, as the node agent runs containers in their own namespaces)."""
    size: int | None  # bytes (sizeLimit); None: tmpfs's default, half the host's memory

    @classmethod
    def of(cls, empty_dir: dict) -> "MemoryVolume":
        limit = empty_dir.get("sizeLimit")
        match = re.fullmatch(r"([0-9]+)([kMGT]i?)?", str(limit)) if limit is not None else None
        if limit is not None and match is None:
            raise Unsupported(f"emptyDir sizeLimit {limit!r}: the node agent takes an integer with k, M, G, T, Ki, Mi, Gi or Ti")
        return cls(int(match.group(1)) * _BYTES[match.group(2) or ""] if match else None)


# token(audience, expirationSeconds) -> a token of the pod's service account.
Token = Callable[["str | None", int], str]
Files = dict  # {relative path: (content bytes, mode)}


def write_files(root: Path, files: Files):
    """(Re)creates `root` holding files {relative path: (content, mode)}."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for rel, (content, mode) in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)


def pick_items(data: dict[str, bytes], items, default_mode, optional, what) -> Files:
    """configMap/secret volume contents: all keys, or just `items` (key -> path, mode)."""
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    files = {}
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise NotReady("FailedMount", f"{what} has no key {it['key']!r}")
        files[it["path"]] = (data[it["key"]], it.get("mode", default_mode))
    return files


def configmap_contents(cm: dict) -> dict[str, bytes]:
    data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return data


def secret_contents(secret: dict) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def downward_files(items: list, default_mode: int, facts: PodFacts) -> Files:
    files = {}
    for it in items:
        if "fieldRef" in it:
            value = facts.field(it["fieldRef"]["fieldPath"])
        else:
            value = facts.resource(it["resourceFieldRef"], None)
        files[it["path"]] = (value.encode(), it.get("mode", default_mode))
    return files


def host_path(hp: dict) -> Path:
    """A hostPath volume's directory or file, created if its type asks for it."""
    path = Path(hp["path"])
    kind = hp.get("type", "")
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind in ("Directory", "File", "Socket") and not path.exists():
        raise NotReady("FailedMount", f"hostPath {path} does not exist")
    return path


class VolumeMaker:
    """Turns one pod's volumes into (host path, readOnly); files go under <pod dir>/volumes."""

    def __init__(self, pod_dir: Path, pvc_root: Path, facts: PodFacts, fetch: Fetch,
                 token: Token):
        self.pod_dir, self.pvc_root, self.facts = pod_dir, pvc_root, facts
        self.fetch, self.token = fetch, token

    def materialize(self, vol: dict) -> tuple["Path | MemoryVolume", bool]:
        name = vol["name"]
        vdir = self.pod_dir / "volumes" / name
        if "emptyDir" in vol and (vol["emptyDir"] or {}).get("medium") == "Memory":
            return MemoryVolume.of(vol["emptyDir"]), False
        if "emptyDir" in vol:
            vdir.mkdir(parents=True, exist_ok=True)
            return vdir, False
        if "hostPath" in vol:
            return host_path(vol["hostPath"]), False
        if "persistentVolumeClaim" in vol:
            src = vol["persistentVolumeClaim"]
            path = self.pvc_root / src["claimName"]
            path.mkdir(parents=True, exist_ok=True)
            return path, bool(src.get("readOnly"))
        files = self.files_of(vol)
        if files is None:
            kinds = [k for k in vol if k != "name"]
            raise Unsupported(f"volume {name!r}: type {kinds} is not supported by the node agent")
        write_files(vdir, files)
        return vdir, True

    def files_of(self, vol: dict) -> Files | None:
        """Contents of a volume made of files (configMap, secret, downwardAPI, projected)."""
        if "configMap" in vol:
            return self.configmap_files(vol["configMap"])
        if "secret" in vol:
            return self.secret_files(vol["secret"])
        if "downwardAPI" in vol:
            src = vol["downwardAPI"]
            return downward_files(src.get("items") or [], src.get("defaultMode", 0o644),
                                  self.facts)
        if "projected" in vol:
            return self.projected_files(vol["projected"])
        return None

    def configmap_files(self, src: dict, default_mode=None) -> Files:
        return self.object_files("configmap", src["name"], src, default_mode, configmap_contents)

    def secret_files(self, src: dict, default_mode=None) -> Files:
        name = src.get("secretName") or src.get("name")
        return self.object_files("secret", name, src, default_mode, secret_contents)

    def object_files(self, kind: str, name: str, src: dict, default_mode, contents) -> Files:
        """Files of a configmap or secret volume source (with items, modes, optional)."""
        mode = src.get("defaultMode", default_mode or 0o644)
        what = f'{kind} "{name}"'
        obj = self.fetch(f"{kind}s", name)
        if obj is None:
            if src.get("optional"):
                return {}
            raise NotReady("FailedMount", f"{what} not found")
        return pick_items(contents(obj), src.get("items"), mode, src.get("optional"), what)

    def projected_files(self, proj: dict) -> Files:
        mode = proj.get("defaultMode", 0o644)
        files = {}
        for src in proj.get("sources") or []:
            if "configMap" in src:
                files.update(self.configmap_files(src["configMap"], mode))
            elif "secret" in src:
                files.update(self.secret_files(src["secret"], mode))
            elif "downwardAPI" in src:
                files.update(downward_files(src["downwardAPI"].get("items") or [], mode,
                                            self.facts))
            elif "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                token = self.token(sat.get("audience"), sat.get("expirationSeconds", 3600))
                files[sat["path"]] = (token.encode(), mode)
        return files


def volume_mounts(spec: dict, volumes: dict[str, tuple[Path, bool]]
                  ) -> list[tuple[Path, str, bool]]:
    """(host source, mountPath, readOnly) for each volumeMount, parents first."""
    out = []
    for vm in spec.get("volumeMounts") or []:
        if vm["name"] not in volumes:
            raise Unsupported(f"volumeMount {vm['name']!r} names no volume of the pod")
        src, ro = volumes[vm["name"]]
        if vm.get("subPath") and isinstance(src, MemoryVolume):
            raise Unsupported(f"volumeMount {vm['name']!r}: subPath of a memory emptyDir")
        if vm.get("subPath"):
            src = src / vm["subPath"]
            if not src.exists():
                src.mkdir(parents=True)
        out.append((src, vm["mountPath"], bool(vm.get("readOnly")) or ro))
    return sorted(out, key=lambda m: len(Path(m[1]).parts))


# -- credentials -----------------------------------------------------------------------------
def request_token(kube, pod: dict, audience: str | None, expiration: int) -> str:
    """A token of the pod's own service account, bound to the pod (TokenRequest API)."""
    md = pod["metadata"]
    spec = {"expirationSeconds": max(600, int(expiration)),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"],
                               "uid": md["uid"]}}
    if audience:
        spec["audiences"] = [audience]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    sa = service_account(pod)
    try:
        tr = kube.call(
            "POST", f"/api/v1/namespaces/{md['namespace']}/serviceaccounts/{sa}/token", body)
    except ApiException as e:
        raise NotReady("FailedMount", f"cannot get a token for service account {sa!r}: "
                                      f"{e.status} {e.reason}") from e
    return tr["status"]["token"]


def pod_kubeconfig(server: str, ca_pem: bytes, namespace: str, sa: str, user: dict) -> dict:
    """Kubeconfig for the pod's process: its service account, its namespace by default."""
    user_name = f"system:serviceaccount:{namespace}:{sa}"
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": "pod", "context": {
            "cluster": "local", "namespace": namespace, "user": user_name}}],
    }


def write_credentials(pod_dir: Path, pod: dict, server: str, ca_pem: bytes, token: Token):
    """A kubeconfig with the pod's own service account token: KUBECONFIG points at it, so
    kubernetes.config.load_config() and kubectl in the process act as that account. The
    token is also mounted where in-cluster config looks (unless automount is off)."""
    ns = pod["metadata"]["namespace"]
    user: dict = {}
    if pod["spec"].get("automountServiceAccountToken", True) is not False:
        tok = token(None, 86400)
        write_files(pod_dir / "serviceaccount", {"token": (tok.encode(), 0o600),
                                                 "ca.crt": (ca_pem, 0o644),
                                                 "namespace": (ns.encode(), 0o644)})
        user = {"token": tok}
    path = pod_dir / "kubeconfig"
    path.write_text(json.dumps(pod_kubeconfig(server, ca_pem, ns, service_account(pod), user),
                               indent=1))
    path.chmod(0o600)


# -- the pod directory -------------------------------------------------------------------
def reset_dir(pod_dir: Path, uid: str):
    """A pod directory belongs to one pod uid; a new pod of the same name starts clean."""
    uid_file = pod_dir / "uid"
    if pod_dir.exists() and not (uid_file.exists() and uid_file.read_text() == uid):
        shutil.rmtree(pod_dir, ignore_errors=True)
    pod_dir.mkdir(parents=True, exist_ok=True)
    uid_file.write_text(uid)


def clean_up(pod_dir: Path):
    """Volumes (emptyDir data, configMap/secret copies) and credentials go with the pod,
    as on a real node; the logs stay for debugging until `down.sh --purge`."""
    for sub in ("volumes", "serviceaccount", "kubeconfig"):
        path = pod_dir / sub
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
