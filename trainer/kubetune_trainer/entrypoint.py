"""What kubetune-train and kubetune-eval share: reading the config file, the exit codes, and
reporting every failure to the termination message.

Exit codes: 0 done, 1 unexpected failure, 2 bad config (or a model, metric or output path it
names), 3 bad data, 143 stopped by SIGTERM (after a checkpoint). The termination message carries the error and its reason (InvalidConfig,
InvalidModel, InvalidDataset, UnknownMetric), which the operator copies into the condition.
"""
from __future__ import annotations

import argparse
import logging
from typing import Callable, Optional, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kubetune_api.errors import ConfigError, DataError
from kubetune_trainer.reporting.status_reporter import StatusReporter
from kubetune_trainer.training.stopping import Stopped

log = logging.getLogger("kubetune_trainer")

EXIT_FAILED, EXIT_BAD_CONFIG, EXIT_BAD_DATA = 1, 2, 3
ConfigT = TypeVar("ConfigT", bound=BaseModel)
ResultT = TypeVar("ResultT")


def parse_args(prog: str, description: str, what: str, argv: Optional[list[str]],
               check_only: bool = False) -> argparse.Namespace:
    """The common flags; with `check_only`, also --check-only (args.check_only)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help=f"YAML or JSON {what}")
    parser.add_argument("--output", help="override output.path")
    if check_only:
        parser.add_argument("--check-only", action="store_true",
                            help="only run the CPU-only check phase (data, templates, model location, output "
                                 "directory); load no model")
    return parser.parse_args(argv)


def read_config(load: Callable[[str], ConfigT], args: argparse.Namespace) -> ConfigT:
    """The config file as its model, with --output applied; ConfigError names the file."""
    try:
        config = load(args.config)
    except (OSError, yaml.YAMLError, ValidationError, ValueError) as e:
        raise ConfigError(f"{args.config}: {e}") from e
    if args.output:  # the output's other fields (a training output's uri) stay
        output = type(config.output).model_validate({**config.output.model_dump(), "path": args.output})
        config = config.model_copy(update={"output": output})
    return config


def download_sink(reporter: StatusReporter, report_class, progress_class):
    """Where a source's download progress goes: the report's progress.download (a done
    download is sent at once, past the reporter's rate limit)."""

    def sink(download) -> None:
        reporter.report(report_class(progress=progress_class(download=download)), final=download.done)

    return sink


def run_reported(what: str, work: Callable[[], ResultT], reporter: StatusReporter) -> tuple[int, Optional[ResultT]]:
    """(exit code, result) of work(); every failure also goes to the termination message."""
    try:
        return 0, work()
    except (ConfigError, DataError) as e:
        log.error("%s", e)
        reporter.fail(e)
        return (EXIT_BAD_DATA if isinstance(e, DataError) else EXIT_BAD_CONFIG), None
    except Stopped as e:  # SIGTERM: exits as a process killed by it would, after a checkpoint
        log.warning("%s", e)
        reporter.fail(e)
        return e.exit_code, None
    except Exception as e:
        log.exception("%s failed", what)
        reporter.fail(e)
        return EXIT_FAILED, None
