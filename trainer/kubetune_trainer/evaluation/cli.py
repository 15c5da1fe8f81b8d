"""`kubetune-eval --config FILE [--output DIR] [--check-only]`: the evaluator pod's entry point;
`kubetune-eval score ...` scores outputs made elsewhere (kubetune_trainer.evaluation.score_outputs).

Every run starts with the CPU-only check phase (kubetune_trainer.checks.check_evaluation);
--check-only runs just that, loading no model, and prints what it checked. Exit codes and
failure reporting as in kubetune_trainer.entrypoint (2 also for a metric that cannot be loaded).
"""
from __future__ import annotations

import logging
import sys

from kubetune_api.catalog import TASKS
from kubetune_api.evaluation import load_eval_config
from kubetune_api.reports import EvalPodReport, EvalProgress
from kubetune_trainer.entrypoint import download_sink, parse_args, read_config, run_reported
from kubetune_trainer.sources import stay_offline
from kubetune_trainer.reporting.status_reporter import StatusReporter


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["score"]:
        from kubetune_trainer.evaluation.score_outputs import score_main

        return score_main(argv[1:])
    args = parse_args("kubetune-eval", "Evaluate one or more causal language models "
                      "(`kubetune-eval score --help`: score outputs made elsewhere).",
                      "evaluation config (an EvalJob spec)", argv, check_only=True)
    reporter = StatusReporter.from_env()

    sink = download_sink(reporter, EvalPodReport, EvalProgress)

    def work():
        config = read_config(load_eval_config, args)
        if args.check_only:
            from kubetune_trainer.checks import check_evaluation

            return check_evaluation(config, sink=sink).describe()
        from kubetune_trainer.checks import fetch_evaluation_sources

        fetch_evaluation_sources(config, sink)  # hf:// may go online; nothing after it needs to
        # Models are local files now, so transformers stays offline (no hub timeouts in
        # air-gapped clusters) unless a metric must come from the Hub.
        if all(name in TASKS[task].metrics for _, task, metrics in config.task_metrics() for name in metrics):
            stay_offline()
        from tqdm.contrib.logging import logging_redirect_tqdm

        from kubetune_trainer.evaluation.runner import run

        with logging_redirect_tqdm():
            return run(config, reporter)

    code, result = run_reported("evaluation", work, reporter)
    if code == 0:
        print(result)  # the path of scores.json, or what --check-only checked
    return code
