"""(Re)captures the testdata of the Argo CD health checks from the local cluster.

    export KUBECONFIG=.cluster/kubeconfig
    .venv/bin/python argocd/capture.py [--start-operator]

Creates tiny FineTuneJobs and EvalJobs in the namespace `argocd-capture`, and saves each
state the health checks distinguish as `kubectl get -o yaml` (managedFields removed) under
argocd/resource_customizations/kubetune.io/<Kind>/testdata/. The objects without a status
are captured right after creation, before an operator has seen them: run it with no
operator running and --start-operator (which starts hack/operator.sh after those captures
and stops it at the end), or those two files are skipped.

States no tiny job can reach on its own (a regressed evaluation) are derived by hand from a
captured object; those files say so in their first lines and are not touched here.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = ROOT / "argocd" / "resource_customizations" / "kubetune.io"
NAMESPACE = "argocd-capture"
# Pods run in the repository root and may write only under it: outputs are relative paths.
WORK = ROOT / "runs" / "argocd-capture"
TEMPLATE = "Which animal is {{ color }} {{ animal }}?\nAnswer:"
HEADER = ("# Captured from the local cluster by argocd/capture.py ({state}):\n"
          "# `kubectl {verb} {kind} {name} -o {fmt}`, metadata.managedFields removed.\n")


def kubectl(*args: str, stdin: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {result.stderr}")
    return result


def get(kind: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json").stdout)


def create(obj: dict[str, Any]) -> None:
    # create, not apply: no last-applied-configuration annotation in the captures.
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(obj))


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


def phase(obj: dict[str, Any]) -> Optional[str]:
    return (obj.get("status") or {}).get("phase")


def save(kind: str, name: str, filename: str, state: str, obj: Optional[dict[str, Any]] = None, verb: str = "get") -> None:
    """Saves the object as `kubectl get -o yaml` prints it, without managedFields."""
    text = kubectl("get", kind, name, "-n", NAMESPACE, "-o", "yaml").stdout if obj is None else yaml.safe_dump(obj)
    data = yaml.safe_load(text)
    data["metadata"].pop("managedFields", None)
    path = CUSTOM / data["kind"] / "testdata" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER.format(state=state, verb=verb, kind=kind, name=name, fmt="yaml" if verb == "get" else "json") + yaml.safe_dump(data, sort_keys=False, width=1000))
    print(f"saved {path.relative_to(ROOT)}: phase={phase(data)} "
          f"conditions={[(c['type'], c['status'], c['reason']) for c in (data.get('status') or {}).get('conditions') or []]}")


def tiny_model() -> Path:
    """A 2-layer Llama checkpoint and rows (the e2e tests' tiny model), built once."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tinymodels import build_model, build_tokenizer, make_rows, write_jsonl

    model = WORK / "model"
    if not (model / "config.json").exists():
        model.mkdir(parents=True, exist_ok=True)
        tokenizer = build_tokenizer()
        build_model(tokenizer).save_pretrained(model)
        tokenizer.save_pretrained(model)
    write_jsonl(WORK / "rows.jsonl", make_rows(48))
    write_jsonl(WORK / "eval-rows.jsonl", make_rows(600))
    write_jsonl(WORK / "text.jsonl", [{"text": f"Which animal is {r['color']} {r['animal']}?\nAnswer:{r['answer']}"}
                                      for r in make_rows(24)])
    return model


def finetunejob(name: str, model: Path, max_steps: int = 4, gpu: int = 0, **spec: Any) -> dict[str, Any]:
    body = {
        "model": {"path": str(model)},
        "dataset": {"path": str(WORK / "rows.jsonl"), "promptTemplate": TEMPLATE, "completionField": "answer",
                    "validationRatio": 0.2, "testRatio": 0.2, "maxLength": 32},
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
        "training": {"maxSteps": max_steps, "batchSize": 4, "learningRate": 0.01, "evalEverySteps": 50},
        "output": {"path": f"runs/argocd-capture/{name}"},
        "resources": {"gpu": gpu},
        **spec,
    }
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": body}


def evaljob(name: str, models: list[dict[str, Any]], rows: Path, gpu: int = 0, max_examples: int = 24,
            max_new_tokens: int = 3) -> dict[str, Any]:
    body = {"models": models,
            "dataset": {"path": str(rows), "promptTemplate": TEMPLATE, "referenceFields": ["answer"],
                        "maxExamples": max_examples},
            "metrics": ["exact_match", "rouge"],
            "generation": {"maxNewTokens": max_new_tokens, "batchSize": 4},
            "output": {"path": f"runs/argocd-capture/{name}"}, "resources": {"gpu": gpu}}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "EvalJob",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": body}


def operator_running() -> bool:
    pidfile = ROOT / ".cluster" / "pids" / "operator.pid"
    return pidfile.exists() and Path(f"/proc/{pidfile.read_text().strip()}").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start-operator", action="store_true",
                        help="start hack/operator.sh after capturing the objects without status, stop it at the end")
    parser.add_argument("--derive-only", action="store_true", help="only rewrite the derived files from the captured ones")
    parser.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    args = parser.parse_args()
    if args.derive_only:
        derive()
        return
    kubectl("get", "--raw", "/readyz")
    model = tiny_model()
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s")
    kubectl("create", "namespace", NAMESPACE)
    eval_rows = WORK / "eval-rows.jsonl"
    base = {"name": "base", "path": str(model)}

    # No status yet: captured the moment they exist.
    create(finetunejob("fresh", model))
    create(evaljob("fresh-eval", [base], eval_rows))
    for kind, name in (("ftj", "fresh"), ("evj", "fresh-eval")):
        obj = get(kind, name)
        if obj.get("status"):
            print(f"skipped {kind} {name}: an operator already wrote its status")
        else:
            save(kind, name, "no-status.yaml", "just created, no status", obj)

    started = False
    if args.start_operator and not operator_running():
        subprocess.run(["bash", str(ROOT / "hack" / "operator.sh"), "start"], check=True)
        started = True
    try:
        capture(model, base, eval_rows)
    finally:
        if started:
            subprocess.run(["bash", str(ROOT / "hack" / "operator.sh"), "stop"], check=False)
        if not args.keep:
            kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    derive()


DERIVED = "# DERIVED, not captured: {how}\n# Everything else is as captured from the local cluster by argocd/capture.py.\n"


def load(kind: str, filename: str) -> dict[str, Any]:
    return yaml.safe_load((CUSTOM / kind / "testdata" / filename).read_text())


def write_derived(kind: str, filename: str, how: str, data: dict[str, Any]) -> None:
    path = CUSTOM / kind / "testdata" / filename
    path.write_text(DERIVED.format(how=how) + yaml.safe_dump(data, sort_keys=False, width=1000))
    print(f"derived {path.relative_to(ROOT)}")


def derive() -> None:
    """States the tiny jobs do not reach, made from captured objects by editing status only."""
    ftj = load("FineTuneJob", "succeeded-evaluated.yaml")
    delta = {"exactMatch": 0.0625, "rouge1": 0.0104, "rouge2": 0.0, "rougeL": -0.0312, "rougeLsum": -0.0312}
    base = {"exactMatch": 0.0, "rouge1": 0.0938, "rouge2": 0.0, "rougeL": 0.1042, "rougeLsum": 0.1042}
    ftj["status"]["evaluation"]["delta"] = delta
    ftj["status"]["evaluation"]["scores"] = {k: round(base[k] + v, 4) for k, v in delta.items()}
    evaluated = next(c for c in ftj["status"]["conditions"] if c["type"] == "Evaluated")
    # The operator's own wording (observe.evaluation_summary: the first four deltas).
    evaluated["message"] = "tuned vs base: " + ", ".join(f"{k} {v:+.4f}" for k, v in list(delta.items())[:4])
    write_derived("FineTuneJob", "succeeded-evaluation-regressed.yaml",
                  "succeeded-evaluated.yaml with status.evaluation.scores, status.evaluation.delta\n"
                  "# and the Evaluated condition's message edited so that rougeL and rougeLsum got worse (a tiny\n"
                  "# random model scores 0 before and after training).", ftj)

    for kind in ("FineTuneJob", "EvalJob"):
        path = CUSTOM / kind / "testdata" / "no-status.yaml"
        if path.exists() and not path.read_text().startswith("# DERIVED"):
            continue  # a real capture (made with no operator running) wins
        obj = load(kind, "pending-unschedulable.yaml")
        del obj["status"]
        write_derived(kind, "no-status.yaml",
                      "pending-unschedulable.yaml with status removed (an operator was running during\n"
                      "# the capture and wrote the status of the fresh object first; capture.py --start-operator\n"
                      "# with no operator running captures the real thing).", obj)


def capture(model: Path, base: dict[str, Any], eval_rows: Path) -> None:
    create(finetunejob("unschedulable", model, gpu=64))
    # Long enough to be caught mid-training, deleted once captured.
    create(finetunejob("training", model, max_steps=1000))
    create(finetunejob("done", model))
    create(finetunejob("bad-model", Path("/nonexistent/model")))
    evaluation = {"dataset": {"path": str(eval_rows), "promptTemplate": TEMPLATE, "referenceFields": ["answer"],
                              "maxExamples": 64},
                  "metrics": ["exact_match", "rouge"], "generation": {"maxNewTokens": 3}}
    create(finetunejob("evaluated", model, evaluation=evaluation))
    create(finetunejob("eval-broken", model, evaluation={**evaluation, "dataset": {
        **evaluation["dataset"], "path": "/nonexistent/eval.jsonl"}}))
    create(finetunejob("perplexity", model, evaluation={
        "dataset": {"path": str(WORK / "text.jsonl"), "promptTemplate": "{{ text }}", "textField": "text"},
        "task": "perplexity", "metrics": ["perplexity"],
        "retention": {"path": str(WORK / "text.jsonl"), "promptTemplate": "{{ text }}", "textField": "text"}}))
    create(evaljob("unschedulable-eval", [base], eval_rows, gpu=64))
    create(evaljob("waiting-eval", [base, {"name": "tuned", "fineTuneJob": "training"}], eval_rows))
    create(evaljob("scored", [base, {"name": "other", "path": str(model)}], eval_rows))
    create(evaljob("slow-eval", [base, {"name": "again", "path": str(model)}], eval_rows, max_examples=600, max_new_tokens=24))
    create(evaljob("bad-data", [base], Path("/nonexistent/rows.jsonl")))

    def progress(o: dict[str, Any], done: str, total: str) -> bool:
        p = (o.get("status") or {}).get("progress") or {}
        return phase(o) == "Running" and 0 < (p.get(done) or 0) < (p.get(total) or 0)

    def reason(r: str) -> Callable[[dict[str, Any]], bool]:
        return lambda o: condition(o, "Succeeded").get("reason") == r

    def edit(kind: str, name: str, patch: str, filename: str, state: str) -> Callable[[], None]:
        """A spec edit bumps metadata.generation; kubetune never applies it (SpecImmutable)."""
        def run() -> None:
            # The API server's reply to the patch: the edit is in, the operator has not seen it.
            # (A running job's operator catches up at its pod's next event; a finished job's never.)
            obj = json.loads(kubectl("patch", kind, name, "-n", NAMESPACE, "--type", "merge", "-p", patch,
                                     "-o", "json").stdout)
            save(kind, name, filename, state + ", as the patch returned it", obj, verb=f"patch --type merge -p '{patch}'")
        return run

    # (kind, name, file, state, predicate, then): every state is polled at once, since some
    # (mid-training, mid-evaluation) last seconds.
    targets = [
        ("ftj", "unschedulable", "pending-unschedulable.yaml", "resources.gpu 64 on a 4-GPU node", reason("Unschedulable"),
         edit("ftj", "unschedulable", '{"spec":{"resources":{"gpu":63}}}', "pending-stale.yaml",
              "pending-unschedulable's job after a spec edit (resources.gpu 63)")),
        ("ftj", "training", "running.yaml", "training.maxSteps 1000, mid-training",
         lambda o: progress(o, "step", "totalSteps"),
         lambda: kubectl("delete", "ftj", "training", "-n", NAMESPACE, "--wait=false")),
        ("ftj", "bad-model", "failed-invalid-model.yaml", "model.path /nonexistent/model", lambda o: phase(o) == "Failed", None),
        ("ftj", "done", "succeeded.yaml", "a 4-step LoRA run, no evaluation block", lambda o: phase(o) == "Succeeded",
         edit("ftj", "done", '{"spec":{"training":{"maxSteps":5}}}', "succeeded-stale.yaml",
              "succeeded.yaml's job after a spec edit (training.maxSteps 5)")),
        ("ftj", "evaluated", "succeeded-evaluating.yaml", "training done, its evaluation EvalJob not done",
         lambda o: phase(o) == "Succeeded" and condition(o, "Evaluated").get("status") == "Unknown", None),
        ("ftj", "evaluated", "succeeded-evaluated.yaml", "training done, evaluation done",
         lambda o: condition(o, "Evaluated").get("status") == "True", None),
        ("ftj", "perplexity", "succeeded-evaluated-perplexity.yaml", "evaluation task perplexity, with retention data",
         lambda o: condition(o, "Evaluated").get("status") == "True", None),
        ("ftj", "eval-broken", "succeeded-evaluation-failed.yaml", "evaluation.dataset.path /nonexistent/eval.jsonl",
         lambda o: condition(o, "Evaluated").get("status") == "False", None),
        ("evj", "unschedulable-eval", "pending-unschedulable.yaml", "resources.gpu 64 on a 4-GPU node", reason("Unschedulable"), None),
        ("evj", "waiting-eval", "pending-waiting-for-finetunejob.yaml", "names a FineTuneJob that is still training",
         reason("WaitingForFineTuneJob"), None),
        ("evj", "slow-eval", "running.yaml", "1200 examples over two models, mid-evaluation",
         lambda o: progress(o, "done", "total"),
         lambda: kubectl("delete", "evj", "slow-eval", "-n", NAMESPACE, "--wait=false")),
        ("evj", "bad-data", "failed-invalid-dataset.yaml", "dataset.path /nonexistent/rows.jsonl",
         lambda o: phase(o) == "Failed", None),
        ("evj", "scored", "succeeded.yaml", "two models scored side by side", lambda o: phase(o) == "Succeeded",
         edit("evj", "scored", '{"spec":{"samples":2}}', "succeeded-stale.yaml",
              "succeeded.yaml's job after a spec edit (samples 2)")),
    ]
    deadline = time.monotonic() + 600
    while targets and time.monotonic() < deadline:
        listed = json.loads(kubectl("get", "ftj,evj", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        live = {("ftj" if o["kind"] == "FineTuneJob" else "evj", o["metadata"]["name"]): o for o in listed}
        for target in list(targets):
            kind, name, filename, state, predicate, then = target
            obj = live.get((kind, name))
            if obj is not None and predicate(obj):
                save(kind, name, filename, state, obj)
                targets.remove(target)
                if then:
                    then()
        time.sleep(0.2)
    for kind, name, filename, *_ in targets:
        print(f"NOT CAPTURED: {kind} {name} -> {filename}")

if __name__ == "__main__":
    main()
