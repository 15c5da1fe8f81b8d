"""Pure decisions of a FineTuneJob's promotion gate: each rule against the evaluation it
mirrored into status.evaluation, and the Promoted condition from the gate and the
promotion pod. No API calls; the handlers act on what this says.
"""
from __future__ import annotations

from typing import Any, Optional

from kubetune_api import Phase
from kubetune_api.errors import Reason
from kubetune_api.promotion import PromotionSpec, RuleCheck
from kubetune_operator import conditions

# (status, reason, message) of the Promoted condition.
Verdict = tuple[str, str, str]


def _result(metric: str, check: RuleCheck, threshold: float, value: Optional[float]) -> dict[str, Any]:
    if value is None:
        passed = False
    elif check is RuleCheck.max_forgetting:
        passed = value <= threshold
    else:
        passed = value >= threshold
    return {"metric": metric, "check": check.value, "threshold": threshold, "value": value, "passed": passed}


def _interval_result(metric: str, threshold: float, evaluation: dict[str, Any]) -> dict[str, Any]:
    """minDeltaLowerBound: the interval's lower end against the bound (no interval, no pass)."""
    low, high = (evaluation.get("deltaLow") or {}).get(metric), (evaluation.get("deltaHigh") or {}).get(metric)
    result = _result(metric, RuleCheck.min_delta_lower_bound, threshold, low)
    return {**result, **({"high": high, "level": evaluation.get("deltaLevel")} if low is not None else {})}


def gate(spec: PromotionSpec, evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule of the gate with its measured value (status.promotion.rules)."""
    scores, delta = evaluation.get("scores") or {}, evaluation.get("delta") or {}
    forgetting = evaluation.get("forgetting") or {}
    results = []
    for rule in spec.rules:
        if rule.min_score is not None:
            results.append(_result(rule.metric, RuleCheck.min_score, rule.min_score, scores.get(rule.metric)))
        if rule.min_delta is not None:
            results.append(_result(rule.metric, RuleCheck.min_delta, rule.min_delta, delta.get(rule.metric)))
        if rule.min_delta_lower_bound is not None:
            results.append(_interval_result(rule.metric, rule.min_delta_lower_bound, evaluation))
    for metric, bound in spec.max_forgetting.items():
        results.append(_result(metric, RuleCheck.max_forgetting, bound, forgetting.get(metric)))
    return results


_WHERE = {RuleCheck.min_score.value: "scores", RuleCheck.min_delta.value: "delta",
          RuleCheck.min_delta_lower_bound.value: "deltaLow", RuleCheck.max_forgetting.value: "forgetting"}


def rule_line(result: dict[str, Any]) -> str:
    """'rougeL 0.4100 ≥ 0.3000 ✓', 'delta exactMatch +0.0200 ≥ +0.0500 ✗',
    'delta rougeL 95% interval [-0.0040, +0.0310]: lower end -0.0040 ≥ +0.0000 ✗',
    'forgetting perplexity +1.2000 ≤ +0.5000 ✗', or the metric missing."""
    check, metric, threshold = result["check"], result["metric"], result["threshold"]
    signed = check != RuleCheck.min_score.value
    label = metric if not signed else f"{_WHERE[check]} {metric}"
    if result.get("value") is None and check == RuleCheck.min_delta_lower_bound.value:
        return f"delta {metric} has no interval (not in status.evaluation.deltaLow; BLEU has none) ✗"
    if result.get("value") is None:
        return f"{label} missing (not in status.evaluation.{_WHERE[check]}) ✗"
    if check == RuleCheck.min_delta_lower_bound.value:
        level = f"{result['level'] * 100:g}% " if result.get("level") is not None else ""
        high = f"{result['high']:+.4f}" if result.get("high") is not None else "?"
        label = f"delta {metric} {level}interval [{result['value']:+.4f}, {high}]: lower end"
    number = "{:+.4f}" if signed else "{:.4f}"
    op = "≤" if check == RuleCheck.max_forgetting.value else "≥"
    mark = "✓" if result["passed"] else "✗"
    return f"{label} {number.format(result['value'])} {op} {number.format(threshold)} {mark}"


def gate_verdict(results: list[dict[str, Any]], evaluated: str) -> Optional[Verdict]:
    """The Promoted condition once the evaluation is over (Evaluated True or False), or None
    while it runs. None also when the gate passes: the promotion pod decides then."""
    if evaluated not in conditions.DECIDED:
        return None
    lines = "; ".join(rule_line(r) for r in results) or "no rules"
    if evaluated == conditions.FALSE:
        return conditions.FALSE, Reason.GateFailed.value, f"the evaluation failed, so the gate cannot pass: {lines}"
    if all(r["passed"] for r in results):
        return None
    return conditions.FALSE, Reason.GateFailed.value, f"promotion gate failed: {lines}"


def copy_verdict(phase: Phase, message: str, destination: str, rules: list[dict[str, Any]]) -> Verdict:
    """The Promoted condition from the promotion Job as observe.observe sees it."""
    if phase == Phase.Succeeded:
        lines = "; ".join(rule_line(r) for r in rules) or "no rules"
        return conditions.TRUE, Reason.Promoted.value, f"promoted to {destination}: {lines}"
    if phase == Phase.Failed:
        return conditions.FALSE, Reason.PromotionFailed.value, f"promotion to {destination} failed: {message}"
    return conditions.UNKNOWN, Reason.Promoting.value, f"copying to {destination}: {message}"


def phase_of(verdict: Verdict) -> str:
    """status.promotion.phase for a Promoted condition."""
    if verdict[0] == conditions.UNKNOWN:
        return Phase.Pending.value if verdict[1] == Reason.PromotionPending.value else Phase.Running.value
    return Phase.Succeeded.value if verdict[0] == conditions.TRUE else Phase.Failed.value


OUTCOMES = {Reason.Promoted.value: "promoted", Reason.GateFailed.value: "gate_failed",
            Reason.PromotionFailed.value: "failed"}
