"""PersistentVolumes for claims: the cluster has no storage provisioner, so the agent makes
a hostPath PV (a directory under <state>/pvcs/<namespace>/<claim>) for every pending claim
and deletes it with its claim."""
from __future__ import annotations

import shutil
from pathlib import Path

from kubernetes.client.rest import ApiException

from .common import log, safely

PROVISIONED = "kubetune.local/provisioned"


def volume_for(claim: dict, path: Path) -> dict:
    """A PV pre-bound to the claim; the PV controller completes the binding."""
    md, spec = claim["metadata"], claim["spec"]
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {
        "name": f"pvc-{md['uid']}", "labels": {PROVISIONED: "true"},
        "annotations": {"pv.kubernetes.io/provisioned-by": "kubetune.local/hostpath"}},
        "spec": {"capacity": {"storage": size},
                 "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                 "volumeMode": spec.get("volumeMode") or "Filesystem",
                 "persistentVolumeReclaimPolicy": "Delete",
                 "storageClassName": spec.get("storageClassName") or "",
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                              "namespace": md["namespace"], "name": md["name"],
                              "uid": md["uid"]},
                 "hostPath": {"path": str(path), "type": "DirectoryOrCreate"}}}


class Provisioner:
    """Watch callbacks for PersistentVolumeClaims (all namespaces)."""

    def __init__(self, kube, state: Path):
        self.kube, self.pvcs = kube, state / "pvcs"

    def on_claim_list(self, claims: list[dict]):
        for claim in claims:
            self.on_claim("SYNC", claim)
        # Volumes we provisioned whose claim is gone (deleted while the agent was down).
        live = {c["metadata"]["uid"] for c in claims}
        pvs = self.kube.get("/api/v1/persistentvolumes", labelSelector=f"{PROVISIONED}=true")
        for pv in pvs.get("items") or []:
            ref = pv["spec"].get("claimRef") or {}
            if ref.get("uid") not in live:
                safely(self.delete_volume, ref.get("uid"), ref.get("namespace"), ref.get("name"))

    def on_claim(self, etype: str, claim: dict):
        md, spec = claim["metadata"], claim["spec"]
        if etype == "DELETED":
            safely(self.delete_volume, md["uid"], md["namespace"], md["name"])
            return
        if spec.get("volumeName") or (claim.get("status") or {}).get("phase") != "Pending":
            return
        safely(self.provision, claim)

    def provision(self, claim: dict):
        md = claim["metadata"]
        path = self.pvcs / md["namespace"] / md["name"]
        path.mkdir(parents=True, exist_ok=True)
        pv = volume_for(claim, path)
        try:
            self.kube.call("POST", "/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for claim %s/%s", pv["metadata"]["name"], md["namespace"],
                     md["name"])
        except ApiException as e:
            if e.status != 409:
                raise

    def delete_volume(self, uid: str | None, ns: str | None, name: str | None):
        if not uid:
            return
        try:
            self.kube.call("DELETE", f"/api/v1/persistentvolumes/pvc-{uid}")
        except ApiException as e:
            if e.status != 404:
                raise
            return
        if ns and name:
            shutil.rmtree(self.pvcs / ns / name, ignore_errors=True)
        log.info("deleted volume pvc-%s of claim %s/%s", uid, ns, name)
