"""`kubetune-eval --config FILE [--output DIR]`: the evaluator pod's entry point.

Exit codes and failure reporting as in kubetune_trainer.entrypoint (2 also for a metric that
cannot be loaded).
"""
from __future__ import annotations

import logging
import os
import sys

from kubetune_trainer.entrypoint import parse_args, read_config, run_reported
from kubetune_api.evaluation import load_eval_config
from kubetune_api.catalog import TASKS
from kubetune_trainer.status_reporter import StatusReporter


def main(argv: list[str] | None = None) -> int:
    args = parse_args("kubetune-eval", "Evaluate one or more causal language models.",
                      "evaluation config (an EvalJob spec)", argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = StatusReporter.from_env()

    def work():
        config = read_config(load_eval_config, args)
        # Models are local files, so transformers stays offline (no hub timeouts in air-gapped
        # clusters) unless a metric must come from the Hub. Set before transformers is imported.
        if all(name in TASKS[config.task].metrics for name in config.metrics):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from tqdm.contrib.logging import logging_redirect_tqdm

        from kubetune_trainer.evaluation.runner import run

        with logging_redirect_tqdm():
            return run(config, reporter)

    code, scores_path = run_reported("evaluation", work, reporter)
    if code == 0:
        print(scores_path)
    return code
