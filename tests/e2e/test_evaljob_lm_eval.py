"""An EvalJob with task lm-eval on the local control plane: lm-evaluation-harness's example task
(examples/lm-eval, relative to the pods' working directory) scored for two models, '<task>/<metric>'
in the status and the operator's metrics; an unknown lm-eval task fails in the pod's check phase."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubectl_utils import apply, condition, in_workdir, kubectl, wait_final

pytestmark = pytest.mark.cluster
TASK = "kubetune_opposites"


def lm_eval_job(name, namespace, models, output, tasks=(TASK,)):
    spec = {"models": models, "task": "lm-eval",
            "lmEval": {"tasks": list(tasks), "includePath": ["examples/lm-eval"], "limit": 8, "numFewshot": 1},
            "output": {"path": in_workdir(output)}, "resources": {"gpu": 0}}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "EvalJob", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_lm_eval_scores_in_status(operator, namespace, tiny_model_dir, other_tiny_model_dir, workdir):
    models = [{"name": "base", "path": str(tiny_model_dir)}, {"name": "other", "path": str(other_tiny_model_dir)}]
    apply(lm_eval_job("lmeval", namespace, models, workdir / "out"))
    evj = wait_final("evj", namespace, "lmeval")
    status = evj["status"]
    assert status["phase"] == "Succeeded", status
    first, second = status["results"]
    for result in (first, second):
        assert set(result["scores"]) == {f"{TASK}/acc", f"{TASK}/acc_norm"} and result["examples"] == 8
    for metric, value in second["scores"].items():
        assert second["delta"][metric] == pytest.approx(value - first["scores"][metric], abs=1e-9)
    scores = json.loads(Path(status["artifacts"]["scoresPath"]).read_text())
    assert scores["task"] == "lm-eval" and scores["models"][0]["nShot"] == {TASK: 1}
    assert kubectl("get", "evj", "-n", namespace).stdout.splitlines()[1].split()[:3] == ["lmeval", "Succeeded", "lm-eval"]
    assert f'kubetune_evaljob_score{{metric="{TASK}/acc",model="other",name="lmeval",namespace="{namespace}"}}' in operator.metrics()


def test_unknown_lm_eval_task_fails_in_check_phase(operator, namespace, tiny_model_dir, workdir):
    apply(lm_eval_job("lmeval-bad", namespace, [{"name": "base", "path": str(tiny_model_dir)}], workdir / "bad",
                      tasks=(TASK, "no_such_task")))
    evj = wait_final("evj", namespace, "lmeval-bad")
    assert evj["status"]["phase"] == "Failed"
    assert "'no_such_task' not in lm-eval's task registry" in condition(evj)["message"], condition(evj)
    assert not (workdir / "bad" / "scores.json").exists()
