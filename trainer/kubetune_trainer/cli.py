"""`kubetune-train --config FILE [--output DIR]`: the trainer pod's entry point.

Exit codes: 0 done, 1 unexpected failure, 2 bad config (or a model it names), 3 bad data.
On failure the error also goes to the termination message for the operator to show.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import yaml
from pydantic import ValidationError

from kubetune_trainer.config import OutputSpec, load_config
from kubetune_trainer.errors import ConfigError, DataError
from kubetune_trainer.reporter import StatusReporter

log = logging.getLogger("kubetune_trainer")

EXIT_FAILED, EXIT_BAD_CONFIG, EXIT_BAD_DATA = 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune-train", description="Fine-tune a causal language model.")
    parser.add_argument("--config", required=True, help="YAML or JSON training config")
    parser.add_argument("--output", help="override output.path")
    args = parser.parse_args(argv)
    # Under accelerate launch only the main process (RANK 0) logs progress and prints the result.
    main_process = os.environ.get("RANK", "0") == "0"
    level = logging.INFO if main_process else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The trainer reads only local files; offline mode keeps transformers from trying the hub
    # (and hanging on timeouts in air-gapped clusters). It must be set before the import below.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tqdm.contrib.logging import logging_redirect_tqdm

    from kubetune_trainer.run import run

    reporter = StatusReporter.from_env()
    try:
        try:
            config = load_config(args.config)
        except (OSError, yaml.YAMLError, ValidationError, ValueError) as e:
            raise ConfigError(f"{args.config}: {e}") from e
        if args.output:
            config = config.model_copy(update={"output": OutputSpec(path=args.output)})
        with logging_redirect_tqdm():
            summary_path = run(config, reporter)
    except (ConfigError, DataError) as e:
        log.error("%s", e)
        reporter.fail(e)
        return EXIT_BAD_DATA if isinstance(e, DataError) else EXIT_BAD_CONFIG
    except Exception as e:
        log.exception("training failed")
        reporter.fail(e)
        return EXIT_FAILED
    if main_process:
        print(summary_path)
    return 0


if __name__ == "__main__":  # python -m kubetune_trainer.cli, as accelerate launch -m runs it
    sys.exit(main())
