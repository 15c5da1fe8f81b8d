"""Report lines in the pod's log (no API access) and the termination message."""
from __future__ import annotations

import io
import json

from kubetune_api.reports import Artifacts, EvalPodReport, Lineage, Metrics, PodReport, Progress, Sample
from kubetune_api.wire import MAX_REPORT_BYTES, REPORT_PREFIX
from kubetune_trainer.reporting.status_reporter import MAX_TERMINATION_BYTES, StatusReporter, fit_json
from report_lines import ReportLines


def report(step: int) -> PodReport:
    return PodReport(progress=Progress(step=step, total_steps=10), metrics=Metrics(train_loss=1.5))


def test_lines_are_throttled_and_each_holds_everything_reported_so_far():
    log = ReportLines()
    reporter = StatusReporter(stream=log, min_interval=3600)
    reporter.report(PodReport(lineage=Lineage(config_hash="sha256:ab")), final=True)
    reporter.report(report(2))  # too soon: kept, not printed
    reporter.report(report(10), final=True)  # the final line always goes out
    lines = log.reports()
    assert lines == [{"lineage": {"datasets": [], "configHash": "sha256:ab"}},
                     {"lineage": {"datasets": [], "configHash": "sha256:ab"},
                      "progress": {"step": 10, "totalSteps": 10, "epoch": 0.0, "percent": 0.0}, "metrics": {"trainLoss": 1.5}}]


def test_a_line_stands_alone_after_a_progress_bar_and_rounds_numbers():
    log = ReportLines()
    log.write("\r 40%|████      | 4/10")  # a progress bar without a newline
    StatusReporter(stream=log).report(PodReport(metrics=Metrics(train_loss=1.30359160900115)), final=True)
    assert log.reports() == [{"metrics": {"trainLoss": 1.3036}}]


def test_an_oversized_report_drops_its_samples_first():
    log = ReportLines()
    samples = [Sample(model="m", prompt="p" * 1000, prediction="x" * 1000, reference="r" * 1000) for _ in range(40)]
    StatusReporter(stream=log).report(EvalPodReport(samples=samples), final=True)
    assert log.reports() == [{}]
    assert all(len(line) <= MAX_REPORT_BYTES + len(REPORT_PREFIX) for line in log.getvalue().splitlines())


def test_outside_a_pod_nothing_is_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBETUNE_TERMINATION_LOG", raising=False)
    reporter = StatusReporter.from_env()
    reporter.report(report(1), final=True)
    reporter.finish(report(1), "done")  # no termination log configured either
    assert reporter.stream is None and capsys.readouterr().err == "" and list(tmp_path.iterdir()) == []


def test_in_a_pod_lines_go_to_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(tmp_path / "termination-log"))
    StatusReporter.from_env().report(report(1), final=True)
    err = capsys.readouterr()
    assert err.out == "" and json.loads(err.err.strip().removeprefix(REPORT_PREFIX))["progress"]["step"] == 1


def test_a_closed_stream_never_stops_training():
    stream = io.StringIO()
    stream.close()
    StatusReporter(stream=stream).report(report(1), final=True)  # a warning, no exception


def test_finish_and_fail_write_the_termination_message(tmp_path):
    log = tmp_path / "termination-log"
    reporter = StatusReporter(termination_log=str(log))
    final = PodReport(progress=Progress(step=3, total_steps=3, percent=100), metrics=Metrics(test_loss=0.5),
                      artifacts=Artifacts(model_path="/out/adapter"))
    reporter.finish(final, "done")
    written = json.loads(log.read_text())
    assert written["message"] == "done" and written["artifacts"] == {"modelPath": "/out/adapter"}
    assert PodReport.model_validate({k: v for k, v in written.items() if k != "message"}) == final
    reporter.fail(ValueError("x" * 10000))
    assert log.stat().st_size <= MAX_TERMINATION_BYTES
    assert json.loads(log.read_text())["error"].startswith("ValueError: xxx")


def test_fit_json_trims_only_the_text_field_and_stays_valid():
    payload = {"progress": {"step": 1}, "message": "ü\"\n" * 3000}
    text = fit_json(payload, "message")
    assert MAX_TERMINATION_BYTES - 10 < len(text.encode()) <= MAX_TERMINATION_BYTES
    parsed = json.loads(text)
    assert parsed["progress"] == {"step": 1} and parsed["message"].endswith("...")
    assert fit_json({"message": "short"}, "message") == '{"message":"short"}'
