"""Every pod the operator builds (trainer, evaluator, promotion and multi-node worker Jobs, with
volumes, GPUs, queues and placement) passes the Kubernetes "restricted" Pod Security Standard,
checked rule by rule as https://kubernetes.io/docs/concepts/security/pod-security-standards/
states them, runs with a read-only root filesystem and still has writable /tmp, caches and
working directory."""
from __future__ import annotations

import posixpath
from typing import Any, Iterator

import pytest
import yaml

import kubetune_api as api
from kubetune_api import wire
from kubetune_operator import builders, multinode

# -- the standard --------------------------------------------------------------------------
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                         "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("containers", []), *pod.get("initContainers", []), *pod.get("ephemeralContainers", [])]


def _baseline(meta: dict[str, Any], pod: dict[str, Any]) -> Iterator[str]:
    security = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"host namespaces: {field}"
    if (security.get("windowsOptions") or {}).get("hostProcess"):
        yield "HostProcess pod"
    if any("hostPath" in v for v in pod.get("volumes", [])):
        yield "hostPath volume"
    for sysctl in security.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            yield f"unsafe sysctl {sysctl['name']}"
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            yield f"AppArmor {value}"
    for where, context in [("pod", security)] + [(c["name"], c.get("securityContext") or {}) for c in _containers(pod)]:
        if (context.get("appArmorProfile") or {}).get("type", "RuntimeDefault") not in SECCOMP_TYPES:
            yield f"{where}: AppArmor profile"
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            yield f"{where}: SELinux options"
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"{where}: seccomp Unconfined"
    for container in _containers(pod):
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            yield f"{container['name']}: privileged"
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            yield f"{container['name']}: HostProcess"
        if set((context.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES:
            yield f"{container['name']}: capabilities added beyond baseline"
        if any(port.get("hostPort") for port in container.get("ports") or []):
            yield f"{container['name']}: hostPort"
        if context.get("procMount", "Default") != "Default":
            yield f"{container['name']}: procMount"


def _restricted(pod: dict[str, Any]) -> Iterator[str]:
    security = pod.get("securityContext") or {}
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            yield f"volume {volume['name']}: type {sorted(kinds)}"
    pod_non_root = security.get("runAsNonRoot") is True
    pod_seccomp = (security.get("seccompProfile") or {}).get("type") in SECCOMP_TYPES
    if security.get("runAsUser") == 0:
        yield "pod: runAsUser 0"
    if security.get("runAsNonRoot") is False:  # explicitly false is refused even if containers say true
        yield "pod: may run as root (runAsNonRoot false)"
    for container in _containers(pod):
        name, context = container["name"], container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            yield f"{name}: allowPrivilegeEscalation is not false"
        if context.get("runAsNonRoot") is False or not (pod_non_root or context.get("runAsNonRoot") is True):
            yield f"{name}: may run as root (runAsNonRoot)"
        if context.get("runAsUser") == 0:
            yield f"{name}: runAsUser 0"
        profile = (context.get("seccompProfile") or {}).get("type")
        if not (profile in SECCOMP_TYPES or (profile is None and pod_seccomp)):
            yield f"{name}: no RuntimeDefault or Localhost seccomp profile"
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"{name}: capabilities not dropping ALL"
        if set(capabilities.get("add") or []) - RESTRICTED_CAPABILITIES:
            yield f"{name}: capabilities added beyond NET_BIND_SERVICE"


def violations(template: dict[str, Any]) -> list[str]:
    """What a pod template breaks of the restricted profile (which includes baseline)."""
    return [*_baseline(template.get("metadata") or {}, template["spec"]), *_restricted(template["spec"])]


# -- every pod the operator builds ------------------------------------------------------------
META = {"name": "demo", "namespace": "ml-team", "uid": "0b7e54f2-7d0e-4c55-b1f4-93a4c7e0d6aa"}
TRAINING = {"model": {"path": "/models/base"},
            "dataset": {"path": "/data/rows.jsonl", "promptTemplate": "{{ q }}", "completionField": "a"},
            "output": {"path": "/outputs/demo"}}
PLACEMENT = {"image": "ghcr.io/kubetune/trainer:0.1.0-cuda", "resources": {"gpu": 2, "cpu": "8", "memory": "64Gi"},
             "nodeSelector": {"gpu": "a100"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
             "volumes": [{"name": "data", "claimName": "datasets", "mountPath": "/data", "readOnly": True},
                         {"name": "outputs", "claimName": "outputs", "mountPath": "/outputs"}],
             "queueName": "team-a", "priorityClassName": "batch-high", "activeDeadlineSeconds": 86400}
EVALUATION = {"dataset": {"path": "/data/held.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
              "retention": {"path": "/data/other.jsonl", "promptTemplate": "{{ text }}", "textField": "text"}}


def _finetune(**extra: Any) -> api.FineTuneJobSpec:
    return api.FineTuneJobSpec.model_validate({**TRAINING, **PLACEMENT, **extra})


def _jobs() -> Iterator[tuple[str, dict[str, Any]]]:
    spec = _finetune(evaluation=EVALUATION, promotion={"rules": [{"metric": "rougeL", "minScore": 0.1}], "destination": "/outputs/promoted"})
    for suspend in (False, True):
        yield f"finetune-suspend-{suspend}", builders.job(META, builders.FINETUNE, spec, job_suspend_supported=suspend)
    yield "finetune-cpu-plain", builders.job(META, builders.FINETUNE, api.FineTuneJobSpec.model_validate({**TRAINING, "output": {"path": "out"}, "resources": {"gpu": 0}}))
    multi = _finetune(resources={"gpu": 4, "nodes": 2})
    main = builders.job(META, builders.FINETUNE, multi)
    yield "finetune-multinode-main", main
    yield "finetune-multinode-worker", multinode.worker_job({**main, "metadata": {**main["metadata"], "uid": "u-1"}}, 1, "10.0.0.5")
    for evaljob in builders.evaluation_jobs(META, spec):  # the EvalJobs a FineTuneJob's evaluation creates
        eval_spec = api.EvalJobSpec.model_validate(evaljob["spec"])
        yield f"eval-{evaljob['metadata']['name']}", builders.job({**evaljob["metadata"], "uid": "u-2"}, builders.EVAL, eval_spec)
    config = builders.promote_config(META, spec, {"artifacts": {"modelPath": "/outputs/demo/adapter"}}, [])
    yield "promotion", next(o for o in builders.promotion_children(META, spec, config) if o["kind"] == "Job")
    own_workspace = _finetune(volumes=[{"name": "scratch", "claimName": "scratch", "mountPath": "/workspace"}], output={"path": "out"})
    yield "finetune-workspace-on-a-pvc", builders.job(META, builders.FINETUNE, own_workspace)


JOBS = dict(_jobs())


def test_every_kind_of_pod_is_covered():
    assert {j["spec"]["template"]["spec"]["containers"][0]["name"] for j in JOBS.values()} == {"trainer", "evaluator", "promoter"}
    assert any(multinode.is_worker(j) for j in JOBS.values())


@pytest.mark.parametrize("name", JOBS)
def test_pod_meets_the_restricted_pod_security_standard(name):
    assert violations(JOBS[name]["spec"]["template"]) == []


@pytest.mark.parametrize("name", JOBS)
def test_pod_runs_as_the_images_user_with_a_read_only_root(name):
    pod = JOBS[name]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == wire.DEFAULT_RUN_AS_USER == 65532
    assert pod["securityContext"]["fsGroup"] == 65532 and pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("name", JOBS)
def test_tmp_caches_and_workspace_are_writable_volumes(name):
    pod = JOBS[name]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(volumes) == {m["name"] for m in container["volumeMounts"]}
    for path in wire.WRITABLE_DIRS.values():
        assert not mounts[path].get("readOnly"), path
        assert "emptyDir" in volumes[mounts[path]["name"]] or "persistentVolumeClaim" in volumes[mounts[path]["name"]]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for variable, value in wire.CACHE_ENV.items():
        assert env[variable] == value and posixpath.commonpath([value, wire.CACHE_DIR]) == wire.CACHE_DIR


def test_a_volume_at_a_writable_directory_replaces_its_emptydir():
    pod = JOBS["finetune-workspace-on-a-pvc"]["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/workspace"]
    assert mount["name"] == "scratch" and "kubetune-workspace" not in {v["name"] for v in pod["volumes"]}


def test_security_context_follows_the_spec():
    job = builders.job(META, builders.FINETUNE, _finetune(securityContext={"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 2000}))
    security = job["spec"]["template"]["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"], security["runAsNonRoot"]) == (1000, 100, 2000, True)
    assert violations(job["spec"]["template"]) == []


# -- the checks catch what they are for ------------------------------------------------------
BAD = [
    ({"hostNetwork": True}, "host namespaces: hostNetwork"),
    ({"hostPID": True}, "host namespaces: hostPID"),
    ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "hostPath volume"),
    ({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]}, "volume n: type ['nfs']"),
    ({"securityContext": {"runAsNonRoot": False}}, "may run as root"),
    ({"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}, "pod: runAsUser 0"),
    ({"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Unconfined"}}}, "seccomp Unconfined"),
    ({"securityContext": {"runAsNonRoot": True, "sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, "unsafe sysctl"),
]
BAD_CONTAINER = [
    ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation is not false"),
    ({"privileged": True}, "privileged"),
    ({"capabilities": {"drop": ["NET_RAW"]}}, "capabilities not dropping ALL"),
    ({"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}, "beyond baseline"),
    ({"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}, "beyond NET_BIND_SERVICE"),
    ({"runAsUser": 0}, "runAsUser 0"),
    ({"seLinuxOptions": {"type": "spc_t"}}, "SELinux options"),
    ({"procMount": "Unmasked"}, "procMount"),
]


@pytest.mark.parametrize("change, words", BAD)
def test_checks_catch_a_bad_pod(change, words):
    template = yaml.safe_load(yaml.safe_dump(JOBS["finetune-suspend-False"]["spec"]["template"]))
    security = change.pop("securityContext", None)
    if security is not None:
        template["spec"]["securityContext"] = security
    template["spec"].update(change)
    assert any(words in v for v in violations(template)), violations(template)


@pytest.mark.parametrize("change, words", BAD_CONTAINER)
def test_checks_catch_a_bad_container(change, words):
    template = yaml.safe_load(yaml.safe_dump(JOBS["finetune-suspend-False"]["spec"]["template"]))
    template["spec"]["containers"][0]["securityContext"].update(change)
    assert any(words in v for v in violations(template)), violations(template)
