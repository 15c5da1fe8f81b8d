"""Status patches sent to a fake API server, and the termination message."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from kubetune_api.reports import Artifacts, Metrics, PodReport, Progress
from kubetune_trainer.status_reporter import MAX_TERMINATION_BYTES, StatusReporter, fit_json

PATH = "/apis/kubetune.io/v1alpha1/namespaces/ns1/finetunejobs/job1/status"


@pytest.fixture
def api_server():
    """A stand-in for the API server that records PATCH requests; status 500 on demand."""
    requests, state = [], {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "content_type": self.headers["Content-Type"], "body": body})
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"kind": "FineTuneJob", **body}).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", requests, state
    server.shutdown()
    server.server_close()


def api_for(url: str) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(client.ApiClient(client.Configuration(host=url)))


def report(step: int) -> PodReport:
    return PodReport(progress=Progress(step=step, total_steps=10), metrics=Metrics(train_loss=1.5))


def test_status_is_merge_patched_and_throttled(api_server):
    url, requests, _ = api_server
    reporter = StatusReporter("job1", "ns1", api=api_for(url), min_interval=3600)
    reporter.report(report(1))
    reporter.report(report(2))  # too soon: dropped
    reporter.report(report(10), final=True)  # the final patch always goes out
    assert [r["path"] for r in requests] == [PATH, PATH]
    assert {r["content_type"] for r in requests} == {"application/merge-patch+json"}
    assert requests[0]["body"] == {"status": {"progress": {"step": 1, "totalSteps": 10, "epoch": 0.0, "percent": 0.0},
                                              "metrics": {"trainLoss": 1.5}}}
    assert requests[1]["body"]["status"]["progress"]["step"] == 10


def test_patch_failures_are_warnings(api_server, caplog):
    url, requests, state = api_server
    state["status"] = 500
    reporter = StatusReporter("job1", "ns1", api=api_for(url))
    with caplog.at_level(logging.WARNING):
        reporter.report(report(1), final=True)
    assert len(requests) == 1 and "status patch for ns1/job1 failed" in caplog.text
    unreachable = StatusReporter("job1", "ns1", api=api_for("http://127.0.0.1:9"))
    unreachable.report(report(1), final=True)  # connection refused: still no exception


def test_from_env_uses_the_cluster_config(api_server, monkeypatch):
    url, requests, _ = api_server
    import kubernetes.config

    monkeypatch.setattr(kubernetes.config, "load_config", lambda: client.Configuration.set_default(client.Configuration(host=url)))
    monkeypatch.setenv("KUBETUNE_JOB_NAME", "job1")
    monkeypatch.setenv("KUBETUNE_JOB_NAMESPACE", "ns1")
    StatusReporter.from_env().report(report(1))
    assert [r["path"] for r in requests] == [PATH]


def test_outside_a_cluster_nothing_is_sent(tmp_path):
    reporter = StatusReporter.from_env()
    assert reporter.api is None
    reporter.report(report(1), final=True)
    reporter.finish(report(1), "done")  # no termination log configured either
    assert list(tmp_path.iterdir()) == []


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


def test_status_patch_rounds_numbers_for_kubectl():
    from kubetune_api.reports import Metrics, PodReport, Progress

    patch = PodReport(progress=Progress(step=3, total_steps=7, percent=300 / 7),
                      metrics=Metrics(train_loss=1.30359160900115)).as_status_patch()
    assert patch == {"status": {"progress": {"step": 3, "totalSteps": 7, "epoch": 0.0, "percent": 42.8571},
                                "metrics": {"trainLoss": 1.3036}}}
