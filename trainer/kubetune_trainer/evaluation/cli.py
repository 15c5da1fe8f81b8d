"""`kubetune-eval --config FILE [--output DIR]`: the evaluator pod's entry point.

Exit codes as kubetune-train: 0 done, 1 unexpected failure, 2 bad config (a model or metric it
names), 3 bad data. On failure the error also goes to the termination message.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import yaml
from pydantic import ValidationError

from kubetune_trainer.cli import EXIT_BAD_CONFIG, EXIT_BAD_DATA, EXIT_FAILED
from kubetune_trainer.config import OutputSpec
from kubetune_trainer.errors import ConfigError, DataError
from kubetune_trainer.evalconfig import load_eval_config
from kubetune_trainer.evaluation.metrics import BUILTIN
from kubetune_trainer.reporter import StatusReporter

log = logging.getLogger("kubetune_trainer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune-eval", description="Evaluate one or more causal language models.")
    parser.add_argument("--config", required=True, help="YAML or JSON evaluation config (an EvalJob spec)")
    parser.add_argument("--output", help="override output.path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = StatusReporter.from_env()
    try:
        try:
            config = load_eval_config(args.config)
        except (OSError, yaml.YAMLError, ValidationError, ValueError) as e:
            raise ConfigError(f"{args.config}: {e}") from e
        if args.output:
            config = config.model_copy(update={"output": OutputSpec(path=args.output)})
        # Models are local files, so transformers stays offline (no hub timeouts in air-gapped
        # clusters) unless a metric must come from the Hub. Set before transformers is imported.
        if all(name in BUILTIN[config.task] for name in config.metrics):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from tqdm.contrib.logging import logging_redirect_tqdm

        from kubetune_trainer.evaluation.runner import run

        with logging_redirect_tqdm():
            scores_path = run(config, reporter)
    except (ConfigError, DataError) as e:
        log.error("%s", e)
        reporter.fail(e)
        return EXIT_BAD_DATA if isinstance(e, DataError) else EXIT_BAD_CONFIG
    except Exception as e:
        log.exception("evaluation failed")
        reporter.fail(e)
        return EXIT_FAILED
    print(scores_path)
    return 0
