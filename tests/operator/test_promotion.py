"""Promotion gates: the spec's rules, the pure gate decision, and the promotion pod's objects."""
import json
from pathlib import Path

import pytest
import yaml

import kubetune_api as api
from kubetune_api.promotion import ModelExport, PromoteConfig, PromotionSpec
from kubetune_operator import builders, observe, preflight, promotion
from kubetune_trainer.evaluation.bootstrap import mean_of, paired_interval

EVALUATION = {"dataset": {"path": "eval.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}}
RETENTION = {**EVALUATION, "retention": {"path": "text.jsonl", "promptTemplate": "{{ t }}", "textField": "t"}}


def _spec(spec_dict, promotion_block, evaluation=RETENTION, **extra):
    return {**spec_dict, "evaluation": evaluation, "promotion": promotion_block, **extra}


def _refused(spec):
    with pytest.raises(preflight.Invalid) as info:
        preflight.validate("demo", spec)
    assert info.value.reason == "InvalidSpec"
    return str(info.value)


def test_a_gated_spec_passes(spec_dict):
    parsed = preflight.validate("demo", _spec(spec_dict, {
        "rules": [{"metric": "rougeL", "minScore": 0.3, "minDelta": 0.05}], "maxForgetting": {"perplexity": 0.5},
        "destination": "runs/promoted/v1", "mergeAdapter": True}))
    assert parsed.promotion.rules[0].min_delta == 0.05 and parsed.promotion.merge_adapter


@pytest.mark.parametrize("block, evaluation, extra, words", [
    ({"destination": "d", "rules": [{"metric": "rougeL", "minScore": 0.3}]}, None, {}, "needs an evaluation block"),
    ({"destination": "d", "maxForgetting": {"perplexity": 1}}, EVALUATION, {}, "needs evaluation.retention"),
    ({"destination": "d", "rules": [{"metric": "rougeL"}]}, RETENTION, {}, "set minScore, minDelta and/or minDeltaLowerBound"),
    ({"destination": "../../elsewhere"}, RETENTION, {}, "leaves the working directory"),
    ({"destination": "/etc/models"}, RETENTION, {}, "promotion.destination: '/etc/models' is outside the job's writable volumes"),
    ({"destination": "d", "mergeAdapter": True}, RETENTION, {"method": "ia3"}, "method ia3 has no LoRA adapter to merge"),
    ({"destination": "d", "mergeAdapter": True}, RETENTION, {"lora": {"mergeOnSave": True}}, "already saves a full model"),
    ({"destination": "d", "export": {"format": "gguf"}}, RETENTION, {},
     "promotion.export: needs a full model, and method lora saves an adapter: set promotion.mergeAdapter"),
    ({"destination": "d", "export": {}}, RETENTION, {"method": "ia3"}, "promotion.export: needs a full model, and method ia3"),
    ({"destination": "d", "export": {"quantization": "Q4_K"}}, RETENTION, {}, "export.quantization"),
], ids=["no-evaluation", "no-retention", "no-bound", "escaping", "not-a-volume", "merge-ia3", "merge-merged",
        "export-adapter", "export-ia3", "export-unknown-type"])
def test_promotion_rules_the_schema_cannot_express(spec_dict, block, evaluation, extra, words):
    assert words in _refused(_spec(spec_dict, block, evaluation, **extra))


@pytest.mark.parametrize("block, extra", [
    ({"mergeAdapter": True}, {}), ({}, {"lora": {"mergeOnSave": True}}), ({}, {"method": "full"}), ({}, {"method": "selective", "selective": {"lastLayers": 1}}),
], ids=["merged-lora", "merge-on-save", "full", "selective"])
def test_export_passes_for_a_full_model(spec_dict, block, extra):
    parsed = preflight.validate("demo", _spec(spec_dict, {"destination": "d", "export": {"format": "gguf"}, **block}, **extra))
    assert (parsed.promotion.export.format.value, parsed.promotion.export.quantization.value) == ("gguf", "F16")


def test_object_store_and_volume_destinations_pass(spec_dict):
    volumes = [{"name": "models", "claimName": "models", "mountPath": "/models"}]
    for destination in ("s3://bucket/models/v1", "gs://bucket/v1", "az://container/v1", "/models/v1"):
        preflight.validate("demo", _spec(spec_dict, {"destination": destination}, volumes=volumes))


def _gate(evaluation, rules=(), forgetting=None):
    spec = PromotionSpec(destination="d", rules=list(rules), max_forgetting=forgetting or {})
    return promotion.gate(spec, evaluation)


EVALUATED = {"scores": {"rougeL": 0.41, "exactMatch": 0.2}, "delta": {"exactMatch": 0.02}, "forgetting": {"perplexity": 1.2}}


def test_every_rule_kind_with_its_value():
    results = _gate(EVALUATED, [{"metric": "rougeL", "minScore": 0.3}, {"metric": "exactMatch", "minDelta": 0.05}],
                    {"perplexity": 0.5})
    assert [(r["check"], r["value"], r["passed"]) for r in results] == [
        ("minScore", 0.41, True), ("minDelta", 0.02, False), ("maxForgetting", 1.2, False)]
    status, reason, message = promotion.gate_verdict(results, "True")
    assert (status, reason) == ("False", "GateFailed")
    assert message == ("promotion gate failed: rougeL 0.4100 ≥ 0.3000 ✓; delta exactMatch +0.0200 ≥ +0.0500 ✗; "
                       "forgetting perplexity +1.2000 ≤ +0.5000 ✗")


def test_a_gate_that_holds_leaves_the_verdict_to_the_promotion_pod():
    results = _gate(EVALUATED, [{"metric": "exactMatch", "minScore": 0.2, "minDelta": -1}], {"perplexity": 2.0})
    assert all(r["passed"] for r in results) and len(results) == 3
    assert promotion.gate_verdict(results, "True") is None
    assert promotion.gate_verdict(results, "Unknown") is None  # the evaluation still runs


def test_a_missing_metric_fails_with_a_clear_line():
    results = _gate(EVALUATED, [{"metric": "bleu", "minScore": 1.0}])
    assert results == [{"metric": "bleu", "check": "minScore", "threshold": 1.0, "value": None, "passed": False}]
    assert promotion.gate_verdict(results, "True")[2] == "promotion gate failed: bleu missing (not in status.evaluation.scores) ✗"


ROW_SCORES = json.loads((Path(__file__).parents[1] / "fixtures" / "row_scores" / "dialogsum_rouge1.json").read_text())["rouge1"]


def _evaluated_on_recorded_rows(base: str, tuned: str) -> dict:
    """status.evaluation as the operator mirrors it from an EvalJob that scored two recorded
    outputs (per-row ROUGE-1 on 500 DialogSum dialogues, bench/gate_noise.py)."""
    first, other = mean_of(ROW_SCORES[base]), mean_of(ROW_SCORES[tuned])
    low, high = paired_interval(first, other, level=0.95, samples=1000, seed=42)
    delta = other.score() - first.score()
    results = [{"model": "base", "scores": {"rouge1": first.score()}},
               {"model": "tuned", "scores": {"rouge1": other.score()}, "delta": {"rouge1": delta},
                "deltaLow": {"rouge1": low}, "deltaHigh": {"rouge1": high}, "deltaLevel": 0.95}]
    evaljob = {"status": {"phase": "Succeeded", "results": results}}
    summary, verdict = observe.evaluation_summary("demo-eval", evaljob, None, None)
    assert verdict[0] == "True"
    return summary


def test_a_gain_within_the_noise_passes_min_delta_and_fails_its_lower_bound():
    # Two human summaries of equal skill: the second scores higher by chance.
    evaluation = _evaluated_on_recorded_rows("human2", "human3")
    results = _gate(evaluation, [{"metric": "rouge1", "minDelta": 0.0, "minDeltaLowerBound": 0.0}])
    (point, bound) = results
    assert point["passed"] and point["value"] > 0
    assert not bound["passed"] and bound["value"] < 0 < bound["high"] and bound["level"] == 0.95
    line = promotion.gate_verdict(results, "True")[2]
    assert f"delta rouge1 95% interval [{bound['value']:+.4f}, {bound['high']:+.4f}]: lower end {bound['value']:+.4f} ≥ +0.0000 ✗" in line


def test_a_clear_gain_passes_its_lower_bound():
    # The dialogue's first turn as the base, a human summary as the tuned output.
    results = _gate(_evaluated_on_recorded_rows("lead", "human2"), [{"metric": "rouge1", "minDeltaLowerBound": 0.3}])
    assert results[0]["passed"] and 0.3 <= results[0]["value"] < results[0]["high"]
    assert promotion.gate_verdict(results, "True") is None


def test_a_metric_without_an_interval_fails_its_lower_bound_saying_so():
    results = _gate({"delta": {"bleu": 3.0}}, [{"metric": "bleu", "minDeltaLowerBound": 0.0}])
    assert not results[0]["passed"]
    assert promotion.gate_verdict(results, "True")[2] == (
        "promotion gate failed: delta bleu has no interval (not in status.evaluation.deltaLow; BLEU has none) ✗")


def test_a_failed_evaluation_fails_the_gate():
    status, reason, message = promotion.gate_verdict(_gate({}, [{"metric": "rougeL", "minScore": 0.1}]), "False")
    assert (status, reason) == ("False", "GateFailed") and message.startswith("the evaluation failed")


def test_the_copy_decides_promoted_true_or_failed():
    rules = _gate(EVALUATED, [{"metric": "rougeL", "minScore": 0.3}])
    done = promotion.copy_verdict(api.Phase.Succeeded, "", "runs/v1", rules)
    assert done == ("True", "Promoted", "promoted to runs/v1: rougeL 0.4100 ≥ 0.3000 ✓")
    failed = promotion.copy_verdict(api.Phase.Failed, "the promoter exited with code 1: OSError: disk full", "runs/v1", rules)
    assert failed[:2] == ("False", "PromotionFailed") and "disk full" in failed[2]
    running = promotion.copy_verdict(api.Phase.Running, "running", "runs/v1", rules)
    assert running[:2] == ("Unknown", "Promoting")
    assert [promotion.phase_of(v) for v in (done, failed, running)] == ["Succeeded", "Failed", "Running"]
    assert promotion.phase_of(("Unknown", "PromotionPending", "")) == "Pending"


# What the pod reported: never where the promotion copies from (the layout under output.path is).
STATUS = {"artifacts": {"outputPath": "/elsewhere", "modelPath": "/elsewhere/adapter",
                        "summaryPath": "/elsewhere/training_summary.json"},
          "evaluation": EVALUATED, "lineage": {"image": "trainer@sha256:1"}}


def test_promotion_job_runs_the_promoter_with_the_trainers_placement(meta, spec_dict):
    volumes = [{"name": "models", "claimName": "models", "mountPath": "/models"}]
    spec = api.FineTuneJobSpec.model_validate(_spec(spec_dict, {"destination": "/models/v1", "mergeAdapter": True},
                                                    volumes=volumes, resources={"gpu": 2, "memory": "8Gi"}, backoffLimit=3))
    config = builders.promote_config(meta, spec, STATUS, [{"metric": "rougeL", "passed": True}])
    objs = builders.promotion_children(meta, spec, config, "example/trainer:1")
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [("ConfigMap", "demo-promote"), ("Job", "demo-promote")]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == meta["uid"] for o in objs)
    labels = {"kubetune.io/promotion": "demo", "app.kubernetes.io/component": "promoter", "app.kubernetes.io/managed-by": "kubetune"}
    assert all({k: v for k, v in o["metadata"]["labels"].items() if k != "kubetune.io/attempt"} == labels for o in objs)
    pod = objs[1]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["kubetune-promote", "--config", "/etc/kubetune/config.yaml"]
    assert container["image"] == "example/trainer:1" and pod["automountServiceAccountToken"] is False
    assert container["resources"]["limits"] == {"memory": "8Gi"}  # no GPU for a copy
    assert {"name": "KUBETUNE_WRITABLE_ROOTS", "value": "/models"} in container["env"]
    assert objs[1]["spec"]["backoffLimit"] == 0
    data = PromoteConfig.model_validate(yaml.safe_load(objs[0]["data"]["config.yaml"]))
    assert data == config


def test_promote_config_names_the_artifacts_scores_and_record(meta, spec_dict):
    spec = api.FineTuneJobSpec.model_validate(_spec(spec_dict, {"destination": "runs/v1"}))
    config = builders.promote_config(meta, spec, STATUS, [{"metric": "rougeL", "passed": True}])
    assert (config.model_path, config.adapter, config.merge_adapter, config.base_model) == ("runs/out/adapter", True, False, None)
    assert config.files == {"README.md": "runs/out/README.md",
                            "training_summary.json": "runs/out/training_summary.json",
                            "scores.json": "runs/out/eval/scores.json",
                            "retention_scores.json": "runs/out/retention/scores.json"}
    assert config.record["fineTuneJob"] == meta and config.record["lineage"] == STATUS["lineage"]
    assert config.record["evaluation"] == EVALUATED and config.destination == "runs/v1"
    merged = builders.promote_config(meta, spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"merge_adapter": True})}),
                                     STATUS, [])
    assert merged.merge_adapter and merged.base_model == spec.model
    full = builders.promote_config(meta, spec.model_copy(update={"method": api.Method.full}), {}, [])
    assert (full.adapter, full.model_path) == (False, "runs/out/model")
    assert config.export is None
    exported = builders.promote_config(meta, spec.model_copy(update={"method": api.Method.full, "promotion": spec.promotion.model_copy(
        update={"export": ModelExport(quantization="Q8_0")})}), {}, [])
    assert exported.export.quantization.value == "Q8_0" and PromoteConfig.model_validate(exported.model_dump()).export == exported.export
