"""The checked-in dashboard and rules are what the generators write, and the dashboard has
the rows, variables and queries a platform team needs."""
import json
import re

from monitoring import DASHBOARD_PATH, RULES_PATH, __main__ as cli, dashboard, rules


def test_generated_files_are_up_to_date():
    assert cli.main(["--check"]) == 0, "run `make dashboards` and commit the result"
    assert DASHBOARD_PATH.read_text() == dashboard.render()
    assert RULES_PATH.read_text() == rules.render()


def test_rules_file_is_exactly_a_groups_document():
    import yaml
    document = yaml.safe_load(RULES_PATH.read_text())
    assert list(document) == ["groups"]
    assert [r["alert"] for r in document["groups"][0]["rules"]] == [
        "KubetuneJobFailed", "KubetuneJobStuck", "KubetuneOperatorDown", "KubetuneEvaluationRegressed", "KubetuneForgetting"]


def test_rows_variables_and_datasource():
    board = json.loads(DASHBOARD_PATH.read_text())
    assert board["uid"] == "kubetune"
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Fleet", "Training", "Evaluation", "Operator"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "job", "operator_job"} <= set(variables)
    titles = {p["title"] for p in board["panels"]}
    for wanted in ["Jobs by phase", "Failures by reason", "GPU-seconds by namespace", "Job duration quantiles",
                   "Progress of running jobs", "ETA of running jobs", "Train and validation loss", "Tokens per second",
                   "Scores (base vs tuned)", "Tuned minus base", "Forgetting: retention perplexity change",
                   "Operator up", "Reconcile latency p50 / p99", "Reconcile errors", "Build"]:
        assert wanted in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for title, target in dashboard.targets(board):
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert target["expr"].strip(), title
    # Per-job panels follow the namespace and job variables.
    exprs = {t["expr"] for _, t in dashboard.targets(board)}
    assert all('namespace=~"$namespace"' in e for e in exprs if "kubetune_finetunejob_" in e or "kubetune_evaljob_" in e)


def test_every_metric_the_dashboard_and_rules_use_is_served():
    from kubetune_operator import metrics
    served = {m.name for m in metrics.REGISTRY.collect()} | {"up"}
    queries = [t["expr"] for _, t in dashboard.targets(dashboard.build())] + \
              [a["expr"] for a in rules.ALERTS] + list(rules.PROBES.values())
    used = {name for q in queries for name in re.findall(r"\b(kubetune_[a-z_]+|up)\b", q)}
    suffixes = ("_total", "_bucket", "_count", "_sum")
    base = {next((n[: -len(s)] for s in suffixes if n.endswith(s)), n) for n in used}
    assert base <= served, base - served
