"""Conditions: one module reads and writes them, on api.ConditionStatus."""
from kubetune_operator import conditions


def test_transition_time_moves_only_on_status_change():
    conds = conditions.upsert([], "Succeeded", conditions.UNKNOWN, "JobCreated", "", 1, "t1")
    conds = conditions.upsert(conds, "Succeeded", conditions.UNKNOWN, "Training", "training", 1, "t2")
    assert conds[0]["lastTransitionTime"] == "t1" and conds[0]["reason"] == "Training"
    conds = conditions.upsert(conds, "Succeeded", conditions.TRUE, "Completed", "done", 1, "t3")
    assert conds == [{"type": "Succeeded", "status": "True", "reason": "Completed", "message": "done",
                      "lastTransitionTime": "t3", "observedGeneration": 1}]


def test_updated_sets_several_conditions_and_keeps_the_others():
    obj = {"metadata": {"generation": 3}, "status": {"conditions": [
        {"type": "Evaluated", "status": "True", "reason": "Evaluated", "message": "", "lastTransitionTime": "t0"}]}}
    conds = conditions.updated(obj, ("Suspended", conditions.TRUE, "Suspended", "s"), ("Succeeded", conditions.UNKNOWN, "Suspended", "s"))
    assert [c["type"] for c in conds] == ["Evaluated", "Suspended", "Succeeded"]
    assert all(c["observedGeneration"] == 3 for c in conds[1:])
    obj["status"]["conditions"] = conds
    assert conditions.is_true(obj, "Suspended") and conditions.reason_of(obj, "Succeeded") == "Suspended"
    assert conditions.status_of(obj, "Promoted") is None and conditions.find(None, "Succeeded") == {}
