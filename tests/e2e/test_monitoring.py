"""Every Grafana panel query and every alert of monitoring/ returns data from a real Prometheus
(Debian's `prometheus` package, started here on loopback with a 1 s scrape of the test's
operator and the generated rules loaded) after a short end-to-end run: a FineTuneJob with an
evaluation block that succeeds, one that fails, one that stays Pending, and the operator
stopped for a few seconds."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from kubectl_utils import ROOT, STATE, apply, condition, free_port, get_json, in_workdir, wait_final, wait_for
from tinymodels import TEMPLATE, make_rows, write_jsonl

sys.path.insert(0, str(ROOT))
from monitoring import DASHBOARD_PATH, RULES_PATH, dashboard, rules  # noqa: E402

pytestmark = pytest.mark.cluster
SCRAPE_JOB = "kubetune-operator"


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def instant(self, expr: str, at: float | None = None) -> list[dict]:
        return self.api("query", query=expr, **({"time": f"{at:.3f}"} if at else {}))["result"]

    def range(self, expr: str, start: float, end: float) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")["result"]


@pytest.fixture
def prometheus(operator, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: install Debian's prometheus package (hack/cluster/build.sh does)", pytrace=False)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_PATH)],
        "scrape_configs": [{"job_name": SCRAPE_JOB,
                            "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}]}],
    }))
    log = open(STATE / "logs" / "prometheus-test.log", "a")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Prometheus(f"http://127.0.0.1:{port}")

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}; see {log.name}")
        try:
            return server.instant(f'up{{job="{SCRAPE_JOB}"}} == 1')
        except OSError:
            return None
    wait_for(ready, 60, "prometheus to scrape the operator")
    yield server
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _finite(result: list[dict]) -> bool:
    values = [v for r in result for _, v in (r.get("values") or [r["value"]])]
    return any(math.isfinite(float(v)) for v in values)


def test_every_panel_and_alert_query_returns_data(operator, prometheus, namespace, workdir, tiny_model_dir, tmp_path):
    started = time.time()

    # Operator down: KubetuneOperatorDown's expression turns true as soon as a scrape fails.
    operator.stop()
    try:
        down = wait_for(lambda: prometheus.instant(rules.ALERTS[2]["expr"]), 30, "absent(kubetune_build_info)")
        assert down[0]["value"][1] == "1"
    finally:
        operator.start()
    wait_for(lambda: prometheus.instant(f'up{{job="{SCRAPE_JOB}"}} == 1 and on() kubetune_build_info'), 30,
             "the operator to be scraped again")

    qa = write_jsonl(tmp_path / "animals.jsonl", make_rows(48))
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": f"Which animal is {c} {a}? Answer: {a}"}
                                                 for c, a in [("red", "cat"), ("blue", "dog"), ("green", "owl")]])
    dataset = {"path": str(qa), "promptTemplate": TEMPLATE, "completionField": "answer", "validationRatio": 0.2, "testRatio": 0.2}

    def ftj(name, **spec):
        body = {"model": {"path": str(tiny_model_dir)}, "dataset": dataset, "method": "lora", "lora": {"r": 4, "alpha": 8},
                # Long enough (about 15 s on 2 cores) for several report reads and scrapes while it
                # runs: 600 steps took under 4 s, between two reads of the pod's report.
                "training": {"maxSteps": 3000, "batchSize": 4, "learningRate": 0.01},
                "output": {"path": in_workdir(workdir / name)}, "resources": {"gpu": 1}, **spec}
        apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace},
               "spec": body})

    ftj("tuned", evaluation={
        "dataset": {"path": str(qa), "promptTemplate": TEMPLATE, "referenceFields": ["answer"], "maxExamples": 8},
        "metrics": ["exact_match", "rouge", "bleu"], "generation": {"maxNewTokens": 3},
        "retention": {"path": str(text), "promptTemplate": "{{ text }}", "textField": "text"}})
    ftj("broken", model={"path": "/nonexistent/model"})
    ftj("waiting", resources={"gpu": 64})  # more GPUs than the node has: Pending (Unschedulable)
    # The panels about running jobs need a scrape while "tuned" runs and has reported progress.
    running = (f'kubetune_finetunejob_progress_ratio{{namespace="{namespace}"}} '
               f'and on(namespace, name) kubetune_job_phase{{kind="FineTuneJob", phase="Running"}}')
    wait_for(lambda: prometheus.instant(running), 120, "a scrape of the running job's progress")

    assert wait_final("ftj", namespace, "broken", timeout=120)["status"]["phase"] == "Failed"
    assert wait_final("ftj", namespace, "tuned")["status"]["phase"] == "Succeeded"
    for evj in ("tuned-eval", "tuned-retention"):
        assert wait_final("evj", namespace, evj)["status"]["phase"] == "Succeeded"

    def evaluated():
        obj = get_json("ftj", "tuned", "-n", namespace)
        return any(c["type"] == "Evaluated" and c["status"] == "True" for c in obj["status"].get("conditions", []))
    wait_for(evaluated, 60, "the evaluation to be mirrored into the FineTuneJob")
    assert get_json("ftj", "waiting", "-n", namespace)["status"]["phase"] == "Pending"
    wait_for(lambda: prometheus.instant(f'kubetune_finetunejob_forgetting{{namespace="{namespace}"}}'), 30,
             "Prometheus to scrape the mirrored evaluation")
    time.sleep(3)  # a few more scrapes and rule evaluations
    end = time.time()

    # Template variables: this run's namespace, every job, the scrape job above.
    window = f"{int(end - started) + 5}s"
    variables = {"$namespace": namespace, "$job": ".*", "$operator_job": SCRAPE_JOB,
                 "$__rate_interval": "1m", "$__range": window}
    board = json.loads(DASHBOARD_PATH.read_text())
    empty = []
    checked = 0
    for title, target in dashboard.targets(board):
        expr = target["expr"]
        for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(name, value)
        assert "$" not in expr.replace("$1", ""), expr
        # Over the whole run, instant panels too: "running jobs" had data while one ran,
        # whatever the state at the end.
        result = prometheus.range(expr, started, end)
        checked += 1
        if not _finite(result):
            empty.append(f"{title}: {expr}")
    assert checked == len(dashboard.targets(board)) >= 19
    assert not empty, "panel queries without data:\n" + "\n".join(empty)

    # Alerts. KubetuneOperatorDown was true above (and in the range); KubetuneJobFailed is true
    # now for "broken". The others cannot honestly fire in a short run (30 minutes without
    # progress; a real regression or forgetting), so their probe runs: the series the alert
    # compares against its threshold, i.e. the expression without its final comparison.
    for alert in rules.ALERTS:
        expr = rules.PROBES.get(alert["alert"], alert["expr"])
        result = prometheus.range(expr, started, end)
        assert result, f"{alert['alert']}: no data from {expr}"
        if alert["alert"] != "KubetuneOperatorDown":  # the others are per job: this run's jobs answer
            assert namespace in {r["metric"].get("namespace") for r in result}, f"{alert['alert']}: {result}"
        if alert["alert"] == "KubetuneJobFailed":
            assert {r["metric"]["name"] for r in prometheus.instant(expr, end) if r["metric"]["namespace"] == namespace} == {"broken"}

    # Prometheus evaluated the loaded rules without errors, and the alerts it raised say so.
    groups = prometheus.api("rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {a["alert"] for a in rules.ALERTS}
    assert all(r["health"] == "ok" for r in loaded.values()), {n: r.get("lastError") for n, r in loaded.items()}
    firing = prometheus.instant(f'ALERTS{{alertname="KubetuneJobFailed", namespace="{namespace}", alertstate="firing"}}')
    assert [r["metric"]["name"] for r in firing] == ["broken"]
    assert prometheus.range('ALERTS{alertname="KubetuneOperatorDown", alertstate="pending"}', started, end)
