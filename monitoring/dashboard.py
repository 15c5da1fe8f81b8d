"""The kubetune Grafana dashboard, built with grafana-foundation-sdk (Grafana's own SDK).

Rows: fleet, training, evaluation, operator. Template variables: datasource, namespace, job
(a FineTuneJob or EvalJob name; a FineTuneJob's own EvalJobs `<job>-eval` and
`<job>-retention` follow it), operator_job (the Prometheus job that scrapes the operator).
"""
from __future__ import annotations

import json
from typing import Any, Optional

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DashboardCursorSync, VariableRefresh

UID = "kubetune"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace=~"$namespace"'
JOB = f'{NS}, name=~"$job"'
# A FineTuneJob's evaluation block creates EvalJobs named after it.
EVAL_JOB = f'{NS}, name=~"($job)(-eval|-retention)?"'
RUNNING = 'and on(namespace, name) kubetune_job_phase{kind="FineTuneJob", phase="Running"}'


def query(expr: str, legend: str = "", instant: bool = False, ref: str = "A", tabular: bool = False) -> prometheus.Dataquery:
    """A Prometheus target: a range query, or an instant one (bar gauges, tables: the value now,
    or over the dashboard's range with $__range)."""
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DS)
    q = q.instant() if instant else q.range()
    return q.format("table") if tabular else q


def _panel(builder: Any, title: str, description: str, queries: list[prometheus.Dataquery],
           unit: Optional[str] = None, width: int = 8, height: int = 8) -> Any:
    builder = builder.title(title).description(description).datasource(DS).span(width).height(height)
    for q in queries:
        builder = builder.with_target(q)
    return builder.unit(unit) if unit else builder


def series(title: str, description: str, *queries: prometheus.Dataquery, unit: Optional[str] = None, **size: int):
    return _panel(timeseries.Panel(), title, description, list(queries), unit, **size)


def single(title: str, description: str, *queries: prometheus.Dataquery, unit: Optional[str] = None, **size: int):
    return _panel(stat.Panel(), title, description, list(queries), unit, **size)


def bars(title: str, description: str, *queries: prometheus.Dataquery, unit: Optional[str] = None, **size: int):
    return _panel(bargauge.Panel(), title, description, list(queries), unit, **size)


def grid(title: str, description: str, *queries: prometheus.Dataquery, unit: Optional[str] = None, **size: int):
    return _panel(table.Panel(), title, description, list(queries), unit, **size)


def variables() -> list[Any]:
    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        dashboard.QueryVariable("namespace").label("Namespace").datasource(DS)
        .query("label_values(kubetune_job_phase, namespace)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*").sort(1),
        dashboard.QueryVariable("job").label("Job").datasource(DS)
        .query(f"label_values(kubetune_job_phase{{{NS}}}, name)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*").sort(1),
        dashboard.QueryVariable("operator_job").label("Operator scrape job").datasource(DS)
        .query("label_values(kubetune_build_info, job)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*"),
    ]


def fleet() -> dashboard.Row:
    return (dashboard.Row("Fleet")
            .with_panel(series("Jobs by phase", "FineTuneJobs and EvalJobs in each phase.",
                               query(f"count by (kind, phase) (kubetune_job_phase{{{NS}}})", "{{kind}} {{phase}}"),
                               width=12))
            .with_panel(bars("Failures by reason", "Jobs that turned Failed, by kind and reason (Succeeded condition), "
                             "since the operator started.",
                             query(f"sum by (kind, reason) (kubetune_job_failures_total{{{NS}}})", "{{kind}} {{reason}}",
                                   instant=True), width=12))
            .with_panel(bars("GPU-seconds by namespace", "GPUs requested x run time of jobs that finished in the time range.",
                             query(f"sum by (namespace) (increase(kubetune_gpu_seconds_total{{{NS}}}[$__range]))",
                                   "{{namespace}}", instant=True), unit="s", width=12))
            .with_panel(grid("Job duration quantiles", "Pod start to Succeeded/Failed, over jobs that finished in the "
                             "time range (histogram buckets: 30 s to 2 d).",
                             *[query(f"histogram_quantile({q}, sum by (le, kind, phase) "
                                     f"(increase(kubetune_job_duration_seconds_bucket[$__range])))",
                                     f"p{int(q * 100)} {{{{kind}}}} {{{{phase}}}}", instant=True, ref=ref, tabular=True)
                               for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))], unit="s", width=12)))


def training() -> dashboard.Row:
    return (dashboard.Row("Training")
            .with_panel(series("Progress of running jobs", "Optimizer steps done / planned.",
                               query(f"kubetune_finetunejob_progress_ratio{{{JOB}}} {RUNNING}", "{{namespace}}/{{name}}"),
                               unit="percentunit"))
            .with_panel(series("ETA of running jobs", "The trainer's estimate of the time left.",
                               query(f"kubetune_finetunejob_eta_seconds{{{JOB}}} {RUNNING}", "{{namespace}}/{{name}}"),
                               unit="s"))
            .with_panel(series("Tokens per second", "Trainer throughput (non-padding tokens).",
                               query(f"kubetune_finetunejob_tokens_per_second{{{JOB}}}", "{{namespace}}/{{name}}")))
            .with_panel(series("Train and validation loss", "Latest loss the trainer reported, per job and split.",
                               query(f'kubetune_finetunejob_loss{{{JOB}, split=~"train|validation"}}',
                                     "{{namespace}}/{{name}} {{split}}"), width=24)))


def evaluation() -> dashboard.Row:
    return (dashboard.Row("Evaluation")
            .with_panel(grid("Scores (base vs tuned)", "Corpus score per EvalJob, model and metric.",
                             query(f'kubetune_evaljob_score{{{EVAL_JOB}, metric!~"tokens|nll"}}',
                                   "{{namespace}}/{{name}} {{model}} {{metric}}", instant=True, tabular=True), width=12))
            .with_panel(series("Tuned minus base", "A FineTuneJob's evaluation block: tuned minus base per metric "
                               "(status.evaluation.delta); below 0 is a regression.",
                               query(f"kubetune_finetunejob_evaluation_delta{{{JOB}}}", "{{namespace}}/{{name}} {{metric}}"),
                               width=12))
            .with_panel(series("Forgetting: retention perplexity change", "Tuned minus base perplexity on the retention "
                               "data (status.evaluation.forgetting), absolute and relative to the base model.",
                               query(f'kubetune_finetunejob_forgetting{{{JOB}, metric="perplexity"}}',
                                     "{{namespace}}/{{name}} perplexity change"),
                               query(forgetting_ratio(JOB),
                                     "{{namespace}}/{{name}} relative", ref="B"), width=24)))


def operator() -> dashboard.Row:
    latency = ("histogram_quantile({q}, sum by (le, kind, handler) "
               "(rate(kubetune_reconcile_duration_seconds_bucket[$__rate_interval])))")
    return (dashboard.Row("Operator")
            .with_panel(single("Operator up", "1 while Prometheus scrapes the operator.",
                               query('min(up{job=~"$operator_job"})', "up"), width=4))
            .with_panel(grid("Build", "kubetune_build_info: the running operator's version, Python and kopf.",
                             query("kubetune_build_info", instant=True, tabular=True), width=8))
            .with_panel(series("Reconcile latency p50 / p99", "Time per handler run (launch, sync, mirror) by kind.",
                               query(latency.format(q=0.5), "p50 {{kind}} {{handler}}"),
                               query(latency.format(q=0.99), "p99 {{kind}} {{handler}}", ref="B"), unit="s", width=12))
            .with_panel(series("Reconcile errors", "Handler runs that raised (kopf retries them).",
                               query("sum by (kind, handler) (increase(kubetune_reconcile_errors_total[$__rate_interval]))",
                                     "{{kind}} {{handler}}"), width=24)))


def forgetting_ratio(selector: str = "") -> str:
    """Retention perplexity change / the base model's perplexity there (model "base" of the
    FineTuneJob's `<name>-retention` EvalJob). Shared with the KubetuneForgetting alert."""
    matchers = ", ".join(m for m in (selector, 'metric="perplexity"') if m)
    return (f"kubetune_finetunejob_forgetting{{{matchers}}} / on(namespace, name) "
            'label_replace(kubetune_evaljob_score{model="base", metric="perplexity", name=~".+-retention"}, '
            '"name", "$1", "name", "(.+)-retention")')


def build() -> dict[str, Any]:
    builder = (dashboard.Dashboard("kubetune").uid(UID).tags(["kubetune", "kubernetes", "llm"])
               .description("FineTuneJobs and EvalJobs: fleet, training, evaluation and operator health.")
               .refresh("30s").time("now-6h", "now").tooltip(DashboardCursorSync.CROSSHAIR).editable())
    for variable in variables():
        builder = builder.with_variable(variable)
    for row in (fleet(), training(), evaluation(), operator()):
        builder = builder.with_row(row)
    board = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    # Rows open on load: Grafana keeps an expanded row's panels after it at the top level.
    panels = []
    for row in board["panels"]:
        panels += [{**row, "collapsed": False, "panels": []}, *row["panels"]]
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    board["panels"] = panels
    return board


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel, rows included."""
    panels = []
    for panel in board.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels") or [])
    return [(p["title"], t) for p in panels for t in p.get("targets") or []]
