"""Node agent of the local test cluster: plays the kubelet for one node.

There is no container runtime here. The agent registers a Node, keeps it Ready, and runs
each container of the pods bound to it as a local process: the image is ignored (the local
environment stands in for it), `command`/`args`, env, volumes, working directory, service
account credentials and the termination message are honoured, and the real exit codes are
reported in the pod status, so controllers (Job, ReplicaSet, the operator under test) see
what they would see on a real cluster.

How a "container" runs: `unshare --mount --propagation private` gives the process its own
mount namespace, in which mountns.py bind-mounts the pod's volumes at their mountPaths
(from descriptors opened first, so no mount can hide a later volume's directory); then it
execs the command. The process is the leader of its own process group, so signals
reach whatever it spawned. Per pod state lives in <state>/pods/<namespace>/<pod>/.

It also provisions PersistentVolumes for pending claims (a directory per claim under
<state>/pvcs/<namespace>/<claim>), since the cluster has no storage provisioner.

Run: python hack/cluster/node_agent --kubeconfig .cluster/kubeconfig --state .cluster
(or `python -m node_agent ...` with hack/cluster on PYTHONPATH). Where each concept lives
is listed in hack/cluster/README.md.
"""
