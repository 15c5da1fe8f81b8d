"""The Node object: registration, the status heartbeat (always Ready), the node Lease, and
lifting the not-ready taint that admission puts on a new node."""
from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kubernetes.client.rest import ApiException

from .common import HOST_IP, NODE_RESOURCES, log, now, safely

HEARTBEAT_S = 10
NOT_READY_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def node_info(name: str) -> dict:
    """status.nodeInfo: what a kubelet reports about its machine and versions."""
    return {
        "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
        "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "bootID": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "kernelVersion": os.uname().release, "osImage": "kubetune local node",
        "containerRuntimeVersion": "kubetune-local://1", "kubeletVersion": "v1.20.2",
        "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux",
        "architecture": "amd64"}


def node_status(name: str, since: str, info: dict, kubelet_port: int = 0) -> dict:
    """The node's status: fixed resources, no pressure, Ready (heartbeat time is now), and
    the port of its kubelet API (kubelet_api.py), where the API server asks for logs."""
    t = now()

    def cond(ctype, status, reason, message):
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": t, "lastTransitionTime": since}

    return {
        "capacity": NODE_RESOURCES, "allocatable": NODE_RESOURCES,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            cond("Ready", "True", "KubeletReady", "kubetune node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": HOST_IP},
                      {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": info,
    }


class NodeRegistration:
    """Keeps the Node object present, Ready, untainted and its Lease renewed."""

    def __init__(self, kube, name: str, kubelet_port: int, stopping: threading.Event):
        self.kube, self.name, self.stopping = kube, name, stopping
        self.kubelet_port = kubelet_port
        self.since = now()

    def register(self):
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": {
            "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64"}}}
        try:
            self.kube.call("POST", "/api/v1/nodes", body)
            log.info("registered node %s", self.name)
        except ApiException as e:
            if e.status != 409:
                raise
        self.heartbeat()

    def heartbeat(self):
        self.kube.call("PATCH", f"/api/v1/nodes/{self.name}/status",
                       {"status": node_status(self.name, self.since, node_info(self.name),
                                              self.kubelet_port)},
                       content_type="application/strategic-merge-patch+json")
        self.untaint()
        self.renew_lease()

    def renew_lease(self):
        """The node's Lease in kube-node-lease, as kubelets keep it (for tools that look)."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        renew = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.kube.call("PATCH", path, {"spec": {"renewTime": renew}},
                           content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status != 404:
                raise
            self.kube.call("POST", path.rsplit("/", 1)[0], {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                         "renewTime": renew}})

    def untaint(self):
        """Admission taints a new node not-ready; the node lifecycle controller (off here)
        would lift it once Ready, so the agent does."""
        node = self.kube.get(f"/api/v1/nodes/{self.name}")
        taints = node["spec"].get("taints") or []
        keep = [t for t in taints if t["key"] not in NOT_READY_TAINTS]
        if len(keep) != len(taints):
            self.kube.call("PATCH", f"/api/v1/nodes/{self.name}",
                           {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                            "spec": {"taints": keep or None}},
                           content_type="application/merge-patch+json")
            log.info("removed not-ready taint from node %s", self.name)

    def heartbeat_loop(self):
        """Every HEARTBEAT_S until the agent stops; re-registers a deleted node."""
        while not self.stopping.wait(HEARTBEAT_S):
            try:
                self.heartbeat()
            except ApiException as e:
                if e.status == 404:
                    log.warning("node %s was deleted; registering again", self.name)
                    safely(self.register)
                else:
                    log.warning("heartbeat failed: %s %s", e.status, e.reason)
            except Exception as e:  # noqa: BLE001
                log.warning("heartbeat failed: %s", e)
