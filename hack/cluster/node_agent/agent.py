"""Node agent of the local test cluster: plays the kubelet for one node.

The wiring: the node's registration and heartbeat, a watch on the pods bound to the node
(one PodWorker thread per pod), a watch on claims for the provisioner, the kubelet API
(container logs), and main()."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .common import FINAL, HOST_IP, log
from .ippool import IPPool
from .kube import Kube, watch_forever
from .kubelet_api import KubeletAPI, tls_context
from .node import NodeRegistration
from .pods import KILL_GRACE_ON_EXIT_S, PodWorker
from .process import kill_leftovers
from .provisioner import Provisioner


class Agent:
    """Dispatches pod events to PodWorkers; owns what they share (IP pool, stop event)."""

    def __init__(self, kube: Kube, node: str, state: Path, kubelet_api: KubeletAPI):
        self.kube, self.node, self.state = kube, node, state
        self.kubelet_api = kubelet_api
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.ips = IPPool()
        self.stopping = threading.Event()
        self.registration = NodeRegistration(kube, node, kubelet_api.port, self.stopping)
        self.provisioner = Provisioner(kube, state)

    # -- pods -------------------------------------------------------------------------
    def on_pod_list(self, pods: list[dict]):
        seen = {p["metadata"]["uid"] for p in pods}
        for pod in pods:
            self.on_pod("SYNC", pod)
        with self.lock:
            gone = [uid for uid in self.workers if uid not in seen]
        for uid in gone:
            self.on_pod_gone(uid)

    def on_pod(self, etype: str, pod: dict):
        uid = pod["metadata"]["uid"]
        if etype == "DELETED":
            self.on_pod_gone(uid)
            return
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None:
                # Finished before this agent started (nothing to do), or we are stopping.
                if (pod.get("status") or {}).get("phase") in FINAL or self.stopping.is_set():
                    return
                worker = self.workers[uid] = PodWorker(self, pod)
                worker.start()
                return
        worker.update(pod)

    def on_pod_gone(self, uid: str):
        with self.lock:
            worker = self.workers.pop(uid, None)
        if worker is not None:
            log.info("%s: pod object deleted", worker.key)
            worker.mark_gone()

    # -- run --------------------------------------------------------------------------
    def run(self):
        kill_leftovers(self.state / "pods")
        threading.Thread(target=self.kubelet_api.serve_forever, name="kubelet-api",
                         daemon=True).start()
        while True:  # the API server may still be settling when the agent starts
            try:
                self.registration.register()
                break
            except Exception as e:  # noqa: BLE001
                log.warning("registering node %s failed (%s); retrying", self.node, e)
                if self.stopping.wait(1):
                    return
        threads = [
            threading.Thread(target=self.registration.heartbeat_loop, name="heartbeat",
                             daemon=True),
            threading.Thread(target=watch_forever, name="pods", daemon=True, args=(
                self.kube, "/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"},
                self.on_pod_list, self.on_pod, self.stopping, "pod")),
            threading.Thread(target=watch_forever, name="claims", daemon=True, args=(
                self.kube, "/api/v1/persistentvolumeclaims", {},
                self.provisioner.on_claim_list, self.provisioner.on_claim, self.stopping,
                "claim")),
        ]
        for t in threads:
            t.start()
        while not self.stopping.wait(1):
            pass
        self.shutdown()

    def shutdown(self):
        """Stopping (down.sh): stop the pods' processes; the API may be going away too, so
        no status is sent. A restarted agent marks such pods Failed."""
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        for w in workers:
            if w.is_alive():
                w.join(KILL_GRACE_ON_EXIT_S + 5)
        self.kubelet_api.shutdown()
        log.info("node agent stopped")


def main():
    ap = argparse.ArgumentParser(prog="node_agent", description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state", required=True, help="the cluster state dir (.cluster)")
    ap.add_argument("--node", default="kubetune-local")
    # The kubelet API (container logs), named as the kubelet's flags are.
    ap.add_argument("--port", type=int, default=0, help="its port on %s (0: a free one)" % HOST_IP)
    ap.add_argument("--tls-cert-file", required=True, help="its serving certificate (of the CA)")
    ap.add_argument("--tls-private-key-file", required=True)
    ap.add_argument("--client-ca-file", required=True,
                    help="the CA whose client certificates may call it (the API server's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    state = Path(args.state).resolve()
    api = KubeletAPI(state / "pods", HOST_IP, args.port, tls_context(
        args.tls_cert_file, args.tls_private_key_file, args.client_ca_file))
    agent = Agent(Kube(args.kubeconfig), args.node, state, api)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopping.set())
    agent.run()
