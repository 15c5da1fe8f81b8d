"""What a pod reports, as the operator reads it: the latest report line of its log, bounded
and validated; a pod's own failure reason only when it is one of the API's."""
import json

import pytest

from kubetune_api.reports import EvalPodReport, PodReport
from kubetune_api.wire import MAX_REPORT_BYTES, REPORT_PREFIX
from kubetune_operator import pod_reports


def _line(report: dict) -> str:
    return REPORT_PREFIX + json.dumps(report)


def _reader(text: str, calls: list):
    def read(namespace, pod, container, lines, limit):
        calls.append(lines)
        tail = "\n".join(text.splitlines()[-lines:])
        return tail[:limit]
    return read


def test_the_latest_valid_line_wins_and_a_progress_bar_may_share_it():
    log = "\n".join([_line({"progress": {"step": 1}}), "some log", "\r 50%|███| " + _line({"progress": {"step": 2}}), "bye"])
    calls = []
    report = pod_reports.from_log(_reader(log, calls), "ns", "p", "trainer", PodReport)
    assert report["progress"]["step"] == 2 and calls == [64]


def test_a_long_tail_is_read_again_with_fewer_lines():
    log = "\n".join([_line({"progress": {"step": 7}})] + ["x" * (pod_reports.READ_LIMIT // 4)] * 6 + [_line({"progress": {"step": 8}})])
    calls = []
    assert pod_reports.from_log(_reader(log, calls), "ns", "p", "trainer", PodReport)["progress"]["step"] == 8
    assert calls == [64, 8, 1]


def test_a_report_hundreds_of_step_lines_back_is_found_in_the_wide_tail():
    steps = [f"INFO step {i}/3000 train loss 1.0" for i in range(400)]
    log = "\n".join([_line({"progress": {"step": 5}})] + steps + [_line({"progress": {"step": 6}})] + steps)
    calls = []
    assert pod_reports.from_log(_reader(log, calls), "ns", "p", "trainer", PodReport)["progress"]["step"] == 6
    assert calls == [64, pod_reports.WIDE_TAIL_LINES]


def test_a_wide_tail_cut_by_the_byte_limit_gives_its_last_whole_report():
    # The byte limit keeps the start of the selected lines: here it cuts report 2 mid-line and drops report 3.
    first, cut = _line({"progress": {"step": 1}}), _line({"progress": {"step": 2}, "lineage": {"configHash": "y" * 3000}})
    filler = "x" * 200
    before = (pod_reports.READ_LIMIT - len(first) - 1 - 1500) // (len(filler) + 1)  # report 2 starts 1,500 bytes short
    after = pod_reports.WIDE_TAIL_LINES - 3 - 64 - before
    window = [first] + [filler] * before + [cut] + [filler] * after + [_line({"progress": {"step": 3}})] + ["z"] * 64
    calls = []
    report = pod_reports.from_log(_reader("\n".join([filler] * 100 + window), calls), "ns", "p", "trainer", PodReport)
    assert report["progress"]["step"] == 1 and calls == [64, pod_reports.WIDE_TAIL_LINES]


def test_no_report_line_anywhere_is_no_report_after_two_reads():
    calls = []
    assert pod_reports.from_log(_reader("\n".join(["step"] * 5000), calls), "ns", "p", "trainer", PodReport) is None
    assert calls == [64, pod_reports.WIDE_TAIL_LINES]


@pytest.mark.parametrize("payload", [
    {"progress": {"step": -1}},  # out of its bounds
    {"results": [{"model": "m", "scores": {f"k{i}": 1.0 for i in range(50_000)}}]},  # 50,000 score keys
    {"samples": [{"model": "m", "prompt": "p", "prediction": "x" * 100_000}]},  # a huge string
    ["not", "an", "object"],
])
def test_a_report_out_of_bounds_is_refused_whole(payload):
    assert pod_reports.validated(payload, EvalPodReport) == {}


def test_a_line_longer_than_the_limit_or_not_json_is_no_report():
    assert pod_reports.from_log(_reader(_line({"x": "y" * MAX_REPORT_BYTES}), []), "ns", "p", "c", PodReport) is None
    assert pod_reports.from_log(_reader(REPORT_PREFIX + "{nope", []), "ns", "p", "c", PodReport) is None
    assert pod_reports.from_log(_reader("no report here", []), "ns", "p", "c", PodReport) is None


def test_an_unreadable_log_is_no_report():
    def gone(*_):
        raise RuntimeError("404 pod not found")
    assert pod_reports.from_log(gone, "ns", "p", "trainer", PodReport) is None


def test_unknown_fields_are_dropped_and_the_image_is_the_operators():
    report = pod_reports.validated({"progress": {"step": 3}, "retries": 0, "usage": {"gpuSeconds": 0}, "pods": [],
                                    "lineage": {"image": "forged", "configHash": "sha256:1"}}, PodReport)
    assert report == {"progress": {"step": 3, "totalSteps": 0, "epoch": 0.0, "percent": 0.0},
                      "lineage": {"datasets": [], "configHash": "sha256:1"}}


def test_a_pods_failure_reason_must_be_one_of_the_apis():
    assert pod_reports.failure_reason("InvalidDataset", "TrainerFailed") == "InvalidDataset"
    assert pod_reports.failure_reason("Reason" + "x" * 10_000, "TrainerFailed") == "TrainerFailed"
    assert pod_reports.failure_reason({"a": 1}, "EvaluatorFailed") == "EvaluatorFailed"
