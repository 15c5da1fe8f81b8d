"""A FineTuneJob's evaluation block with task lm-eval: the operator admits it (no metric names to
check: lm-eval's tasks name theirs) and creates an EvalJob the API server accepts, whose
'<task>/<metric>' scores promotion rules can gate on."""
import kubetune_api as api
from kubetune_operator import builders, preflight

LM_EVAL = {"tasks": ["arc_easy"], "numFewshot": 0, "limit": 50, "includePath": ["evals/tasks"]}


def test_lm_eval_block_becomes_an_lm_eval_evaljob(meta, spec_dict):
    spec = preflight.validate("demo", {**spec_dict, "evaluation": {"task": "lm-eval", "lmEval": LM_EVAL},
                                       "promotion": {"destination": "promoted",
                                                     "rules": [{"metric": "arc_easy/acc_norm", "minDeltaLowerBound": 0}]}})
    (evaljob,) = builders.evaluation_jobs(meta, spec)
    assert evaljob["spec"]["task"] == "lm-eval" and evaljob["spec"]["lmEval"]["tasks"] == ["arc_easy"]
    assert "dataset" not in evaljob["spec"]
    parsed = preflight.validate_eval_spec("demo-eval", evaljob["spec"])  # what the operator admits
    assert parsed.lm_eval.limit == 50 and [m.name for m in parsed.models] == ["base", "tuned"]
    assert isinstance(parsed, api.EvalJobSpec)
