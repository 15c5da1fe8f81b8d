"""The Argo CD health checks in argocd/resource_customizations, run under a real Lua 5.1
interpreter (Debian's lua5.1) with Argo CD's contract: global `obj` in, a table with `status`
and `message` out. Every case of each health_test.yaml is checked, against objects captured
from the local cluster (argocd/capture.py)."""
from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "argocd"
CUSTOM = ARGOCD / "resource_customizations" / "kubetune.io"
HARNESS = ARGOCD / "test_harness.lua"
KINDS = ("FineTuneJob", "EvalJob")
LUA = shutil.which("lua5.1")
# Argo CD's health statuses.
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}



def lua() -> str:
    """The lua5.1 binary. Missing, the tests fail (not skip): make test installs it."""
    if LUA is None:
        pytest.fail("lua5.1 is not installed: apt-get install lua5.1 (Debian's Lua 5.1 interpreter)", pytrace=False)
    return LUA


def to_lua(value: Any) -> str:
    """A Lua table constructor for a YAML/JSON value (null fields are left out, as nil)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return to_lua(value.isoformat())
    if isinstance(value, str):
        # Three-digit decimal escapes for every byte but printable ASCII (Lua 5.1 has no \x).
        return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}"
                             for b in value.encode("utf-8")) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"no Lua form for {value!r}")


def run_health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    result = subprocess.run([lua(), str(HARNESS), str(CUSTOM / kind / "health.lua")], input=to_lua(obj),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    status, _, message = result.stdout.partition("\n")
    return status, message


def cases() -> list:
    out = []
    for kind in KINDS:
        tests = yaml.safe_load((CUSTOM / kind / "health_test.yaml").read_text())["tests"]
        for case in tests:
            out.append(pytest.param(kind, case, id=f"{kind}-{Path(case['inputPath']).stem}"))
    return out


@pytest.mark.parametrize("kind, case", cases())
def test_health_test_yaml_case(kind, case):
    expected = case["healthStatus"]
    obj = yaml.safe_load((CUSTOM / kind / case["inputPath"]).read_text())
    assert obj["kind"] == kind and obj["apiVersion"] == "kubetune.io/v1alpha1"
    assert run_health(kind, obj) == (expected["status"], expected["message"])


@pytest.mark.parametrize("kind", KINDS)
def test_every_testdata_file_is_a_case_and_every_case_has_a_file(kind):
    tests = yaml.safe_load((CUSTOM / kind / "health_test.yaml").read_text())["tests"]
    named = [case["inputPath"] for case in tests]
    on_disk = sorted(f"testdata/{p.name}" for p in (CUSTOM / kind / "testdata").glob("*.yaml"))
    assert sorted(named) == on_disk
    assert len(set(named)) == len(named)
    for case in tests:
        assert set(case) == {"healthStatus", "inputPath"}  # Argo CD's health_test.yaml format
        assert set(case["healthStatus"]) == {"status", "message"}
        assert case["healthStatus"]["status"] in STATUSES


@pytest.mark.parametrize("kind", KINDS)
def test_testdata_is_captured_from_the_cluster_or_says_how_it_was_derived(kind):
    for path in (CUSTOM / kind / "testdata").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# Captured from the local cluster") or text.startswith("# DERIVED"), path
        obj = yaml.safe_load(text)
        meta = obj["metadata"]
        assert "managedFields" not in meta
        assert meta["uid"] and meta["creationTimestamp"] and meta["namespace"] == "argocd-capture", path


def test_the_expected_states_are_covered():
    """The issue's states each have a case, with the status it asks for."""
    by_file = {}
    for kind in KINDS:
        for case in yaml.safe_load((CUSTOM / kind / "health_test.yaml").read_text())["tests"]:
            by_file[(kind, Path(case["inputPath"]).stem)] = case["healthStatus"]["status"]
    expected = {
        ("FineTuneJob", "no-status"): "Progressing",
        ("FineTuneJob", "pending-unschedulable"): "Progressing",
        ("FineTuneJob", "running"): "Progressing",
        ("FineTuneJob", "succeeded"): "Healthy",
        ("FineTuneJob", "failed-invalid-model"): "Degraded",
        ("FineTuneJob", "succeeded-evaluating"): "Progressing",
        ("FineTuneJob", "succeeded-evaluated"): "Healthy",
        ("FineTuneJob", "succeeded-evaluation-failed"): "Degraded",
        ("FineTuneJob", "succeeded-evaluation-regressed"): "Degraded",
        ("FineTuneJob", "pending-stale"): "Progressing",
        ("EvalJob", "no-status"): "Progressing",
        ("EvalJob", "pending-unschedulable"): "Progressing",
        ("EvalJob", "pending-waiting-for-finetunejob"): "Progressing",
        ("EvalJob", "running"): "Progressing",
        ("EvalJob", "succeeded"): "Healthy",
        ("EvalJob", "failed-invalid-dataset"): "Degraded",
    }
    for key, status in expected.items():
        assert by_file.get(key) == status, key


# Behaviour beyond the captured states: the same scripts on captured objects with one field changed.

def captured(kind: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((CUSTOM / kind / "testdata" / f"{name}.yaml").read_text())


def set_delta(obj: dict[str, Any], delta: dict[str, float]) -> dict[str, Any]:
    obj["status"]["evaluation"]["delta"] = delta
    return obj


@pytest.mark.parametrize("delta, status, message", [
    ({"rougeL": -0.0312, "exactMatch": 0.1}, "Degraded", "evaluation regressed: rougeL -0.0312"),
    # Messages list the worse metrics sorted by name, whatever order pairs() walks in.
    ({"tokenF1": -0.01, "bleu": -1.5, "accuracyNorm": -0.02, "rouge1": 0.2}, "Degraded",
     "evaluation regressed: accuracyNorm -0.0200, bleu -1.5000, tokenF1 -0.0100"),
    ({"perplexity": 0.5}, "Degraded", "evaluation regressed: perplexity +0.5000"),  # lower is better
    ({"perplexity": -3.0, "accuracy": 0.0}, "Healthy", None),
    ({"sacrebleu_custom": -5.0}, "Healthy", None),  # no known direction: not judged
    ({}, "Healthy", None),
])
def test_regression_directions(delta, status, message):
    got = run_health("FineTuneJob", set_delta(captured("FineTuneJob", "succeeded-evaluated"), delta))
    assert got[0] == status
    if message is not None:
        assert got[1] == message


def test_forgetting_alone_does_not_degrade():
    obj = captured("FineTuneJob", "succeeded-evaluated")
    obj["status"]["evaluation"]["forgetting"] = {"perplexity": 12.0}
    assert run_health("FineTuneJob", obj)[0] == "Healthy"


def test_succeeded_with_an_evaluation_block_but_no_evaluated_condition_yet_is_progressing():
    obj = captured("FineTuneJob", "succeeded-evaluating")
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Evaluated"]
    obj["status"].pop("evaluation")
    assert run_health("FineTuneJob", obj) == ("Progressing", "training succeeded; evaluating (the EvalJobs are not created yet)")


@pytest.mark.parametrize("kind, name", [("FineTuneJob", "running"), ("EvalJob", "running")])
def test_running_without_progress_and_retrying(kind, name):
    obj = captured(kind, name)
    del obj["status"]["progress"]
    assert run_health(kind, obj) == ("Progressing", "Running: running")
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Succeeded")
    cond.update(reason="Retrying", message="the trainer exited with code 1; the Job may retry")
    assert run_health(kind, obj) == ("Progressing", "Running: the trainer exited with code 1; the Job may retry "
                                                    "(Retrying: the trainer exited with code 1; the Job may retry)")


@pytest.mark.parametrize("kind", KINDS)
def test_stale_running_job_is_progressing_and_unknown_phase_is_unknown(kind):
    obj = captured(kind, "running")
    obj["metadata"]["generation"] = 3
    assert run_health(kind, obj) == ("Progressing", "waiting for the operator to observe generation 3 (status is for 1)")
    obj = captured(kind, "running")
    obj["status"]["phase"] = "Paused"
    assert run_health(kind, obj) == ("Unknown", "unknown phase Paused")


def test_harness_runs_in_a_sandbox_without_io_or_os(tmp_path):
    script = tmp_path / "health.lua"
    script.write_text('local hs = {}\nhs.status = "Healthy"\nhs.message = tostring(io) .. " " .. tostring(os)\nreturn hs\n')
    result = subprocess.run([lua(), str(HARNESS), str(script)], input=to_lua({"kind": "X"}), capture_output=True, text=True)
    assert result.stdout == "Healthy\nnil nil"


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_are_lua_5_1(kind):
    """The 5.1 interpreter compiles them (5.2+ syntax such as goto or // would not)."""
    source = (CUSTOM / kind / "health.lua").read_text()
    result = subprocess.run([lua(), "-e", f"assert(loadstring({to_lua(source)}))"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not re.search(r"\bgoto\b|//", source)


def test_to_lua_escapes_strings():
    assert to_lua({"a": 'x"y\\z\n', "n": None, "l": [1, 2.5, True]}) == \
        '{["a"] = "x\\034y\\092z\\010", ["l"] = {1, 2.5, true}}'


def test_argocd_cm_is_rendered_from_the_scripts():
    result = subprocess.run([sys.executable, str(ARGOCD / "render_cm.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun: python argocd/render_cm.py"
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert (cm["apiVersion"], cm["kind"], cm["metadata"]["name"]) == ("v1", "ConfigMap", "argocd-cm")
    for kind in KINDS:
        # The exact script, byte for byte, under Argo CD's key for group kubetune.io.
        assert cm["data"][f"resource.customizations.health.kubetune.io_{kind}"] == (CUSTOM / kind / "health.lua").read_text()


def test_application_example():
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["spec"]["source"]["path"] == "charts/kubetune"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
