"""Multi-tenant trust on the local control plane. The tenant is a ServiceAccount with `*` on
kubetune.io resources in one namespace (the usual grant, status subresources included); a pod
is the trainer's own pod spec running a script of ours. Nothing either writes changes what the
operator decides or reports."""
from __future__ import annotations

import json

import pytest

from kubectl_utils import apply, condition, events_for, get_json, jobs_in, kubectl, wait_final, wait_for
from test_finetunejob import finetunejob
from tinymodels import TEMPLATE, make_rows, write_jsonl

pytestmark = pytest.mark.cluster
TENANT = "tenant-user"


@pytest.fixture
def tenant(namespace):
    """`kubectl` as the tenant: a ServiceAccount with every verb on every kubetune.io resource."""
    kubectl("create", "serviceaccount", TENANT, "-n", namespace)
    apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "kubetune-all", "namespace": namespace},
           "rules": [{"apiGroups": ["kubetune.io"], "resources": ["*"], "verbs": ["*"]}]})
    kubectl("create", "rolebinding", "tenant", "-n", namespace, "--role", "kubetune-all", f"--serviceaccount={namespace}:{TENANT}")

    def as_tenant(*args: str) -> "subprocess.CompletedProcess":  # noqa: F821
        return kubectl(*args, "-n", namespace, "--as", f"system:serviceaccount:{namespace}:{TENANT}", check=False)
    return as_tenant


def _patch_status(as_whom, kind: str, name: str, status: dict, tmp_path=None):
    """A merge patch of the status subresource; from a file when it is too big for a command line."""
    if tmp_path is None:
        return as_whom("patch", kind, name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))
    patch = tmp_path / f"{name}-status.json"
    patch.write_text(json.dumps({"status": status}))
    return as_whom("patch", kind, name, "--subresource=status", "--type=merge", "--patch-file", str(patch))


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("tenancy") / "animals.jsonl", make_rows(24))


def _gated(name, namespace, model, data, workdir, **spec):
    body = finetunejob(name, namespace, model, data, workdir / name,
                       dataset={"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer"}, **spec)
    body["spec"]["evaluation"] = {"dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"],
                                              "maxExamples": 4}, "metrics": ["rouge"], "generation": {"maxNewTokens": 2}}
    # A tiny model after four steps never reaches this: only a forged evaluation would.
    body["spec"]["promotion"] = {"rules": [{"metric": "rougeL", "minScore": 0.99}], "destination": f"runs/e2e/{namespace}/promoted"}
    return body


def test_forged_status_from_a_tenant_is_refused_while_running_and_after(operator, namespace, tenant, tiny_model_dir, qa_file,
                                                                       workdir):
    apply(_gated("victim", namespace, tiny_model_dir, qa_file, workdir, training={"maxSteps": 200, "logEverySteps": 5}))
    wait_for(lambda: (get_json("ftj", "victim", "-n", namespace).get("status") or {}).get("phase") == "Running", 120, "training")
    forged = {"retries": 0, "pods": [], "usage": {"gpuSeconds": 0, "podSeconds": 0, "attempts": 0},
              "evaluation": {"scores": {"rougeL": 1.0}}, "progress": {"step": 10_000}}
    refused = _patch_status(tenant, "ftj", "victim", forged)
    assert refused.returncode != 0 and "written by the operator" in refused.stderr, refused.stderr

    ftj = wait_final("ftj", namespace, "victim")
    assert ftj["status"]["phase"] == "Succeeded"
    evaljob = wait_for(lambda: get_json("evj", "victim-eval", "-n", namespace), 60, "the evaluation EvalJob")
    refused = _patch_status(tenant, "evj", "victim-eval",
                            {"phase": "Succeeded", "results": [{"model": "base", "scores": {"rougeL": 0.0}},
                                                               {"model": "tuned", "scores": {"rougeL": 1.0}, "delta": {"rougeL": 1.0}}]})
    assert refused.returncode != 0 and "written by the operator" in refused.stderr
    ftj = wait_for(lambda: (lambda f: f if condition(f, "Promoted").get("status") in ("True", "False") else None)(
        get_json("ftj", "victim", "-n", namespace)), 300, "the promotion to be decided")
    assert condition(ftj, "Promoted")["reason"] == "GateFailed", condition(ftj, "Promoted")
    assert not (workdir.parent / namespace / "promoted").exists()

    usage = ftj["status"]["usage"]
    for after in ({"usage": {"gpuSeconds": 0}, "pods": []}, {"conditions": [{"type": "Promoted", "status": "True", "reason": "Promoted",
                                                                              "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}):
        assert _patch_status(tenant, "ftj", "victim", after).returncode != 0
    ftj = get_json("ftj", "victim", "-n", namespace)
    assert ftj["status"]["usage"] == usage and condition(ftj, "Promoted")["reason"] == "GateFailed"
    assert evaljob["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]


def test_a_trainer_pod_holds_no_credentials(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("quiet", namespace, tiny_model_dir, rows_file, workdir / "quiet"))
    ftj = wait_final("ftj", namespace, "quiet")
    assert ftj["status"]["phase"] == "Succeeded" and ftj["status"]["progress"]["step"] == 4  # reported through its log
    for kind in ("serviceaccount", "role", "rolebinding"):
        assert get_json(kind, "quiet-train", "-n", namespace) is None
    (job,) = jobs_in(namespace)
    template = job["spec"]["template"]
    assert template["spec"]["automountServiceAccountToken"] is False
    # Our own script in the trainer's pod spec: whatever credentials it finds cannot write a status.
    script = ("import json, kubernetes as k\n"
              "k.config.load_config()\n"
              "try:\n"
              f"    k.client.CustomObjectsApi().patch_namespaced_custom_object_status('kubetune.io', 'v1alpha1', '{namespace}',"
              " 'finetunejobs', 'quiet', {'status': {'retries': 0}})\n"
              "    print('FORGED')\n"
              "except k.client.ApiException as e:\n"
              "    print('REFUSED', e.status)\n")
    container = {**template["spec"]["containers"][0], "name": "forger", "command": ["python", "-c", script]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "forger", "namespace": namespace},
           "spec": {**template["spec"], "containers": [container]}}
    apply(pod)
    done = wait_for(lambda: (lambda p: p if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None)(
        get_json("pod", "forger", "-n", namespace)), 120, "the forging pod to finish")
    message = (done["status"]["containerStatuses"][0]["state"].get("terminated") or {})
    log = kubectl("logs", "forger", "-n", namespace).stdout
    assert "REFUSED 403" in log or "REFUSED 401" in log, (log, message)
    assert get_json("ftj", "quiet", "-n", namespace)["status"].get("retries", 0) == 0


def test_oversized_statuses_are_refused_and_the_operator_stays_small(operator, namespace, tenant, tmp_path):
    spec = {"models": [{"name": "base", "path": "/models/none"}],
            "dataset": {"path": "qa.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
            "metrics": ["exact_match"], "output": {"path": "out"}, "suspend": True}
    huge = {"results": [{"model": "base", "scores": {f"k{i}": 0.5 for i in range(50_000)}}]}
    for i in range(20):
        apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "EvalJob", "metadata": {"name": f"big-{i}", "namespace": namespace},
               "spec": spec})
        for as_whom in (tenant, lambda *args: kubectl(*args, "-n", namespace, check=False)):  # even the cluster admin
            refused = _patch_status(as_whom, "evj", f"big-{i}", huge, tmp_path)
            assert refused.returncode != 0, refused.stdout
    assert "should have at most 512 properties" in refused.stderr or "written by the operator" in refused.stderr
    assert operator.rss_bytes() < 300 * 2**20
    assert "kubetune_evaljob_score{" not in operator.metrics()


def test_a_look_alike_evaljob_is_ignored(operator, namespace, tenant, tiny_model_dir, qa_file, workdir):
    look_alike = {"apiVersion": "kubetune.io/v1alpha1", "kind": "EvalJob",
                  "metadata": {"name": "victim-eval", "namespace": namespace, "labels": {"kubetune.io/finetunejob": "victim"}},
                  "spec": {"models": [{"name": "base", "path": str(tiny_model_dir)}, {"name": "tuned", "path": str(tiny_model_dir)}],
                           "dataset": {"path": str(qa_file), "promptTemplate": TEMPLATE, "referenceFields": ["answer"],
                                       "maxExamples": 2},
                           "metrics": ["exact_match"], "output": {"path": f"runs/e2e/{namespace}/look-alike"}}}
    apply(look_alike)  # what the tenant may create in its namespace
    apply(_gated("victim", namespace, tiny_model_dir, qa_file, workdir))
    ftj = wait_final("ftj", namespace, "victim")
    assert "evaluation" not in ftj["status"] or "scores" not in ftj["status"]["evaluation"]
    ftj = wait_for(lambda: (lambda f: f if condition(f, "Evaluated").get("status") == "False" else None)(
        get_json("ftj", "victim", "-n", namespace)), 120, "the look-alike to be refused")
    assert "not created by this FineTuneJob" in condition(ftj, "Evaluated")["message"]
    assert ("Warning", "ForeignEvalJob") in events_for(namespace, "victim")
    wait_for(lambda: condition(get_json("ftj", "victim", "-n", namespace), "Promoted").get("reason") == "GateFailed",
             60, "the gate to fail on the missing evaluation")


def test_a_spec_changed_while_no_webhook_answers_never_runs(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("held", namespace, tiny_model_dir, rows_file, workdir / "held", suspend=True))
    wait_for(lambda: (get_json("ftj", "held", "-n", namespace).get("status") or {}).get("specDigest"), 60, "the launch")
    operator.kill()
    try:
        # failurePolicy Ignore and no operator: the change gets through the API server.
        kubectl("patch", "ftj", "held", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"training": {"learningRate": 0.5}}}))
    finally:
        operator.start()
    kubectl("patch", "ftj", "held", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
    ftj = wait_final("ftj", namespace, "held", timeout=120)
    assert (ftj["status"]["phase"], condition(ftj)["reason"]) == ("Failed", "SpecChanged"), ftj["status"]
    assert jobs_in(namespace) == []
