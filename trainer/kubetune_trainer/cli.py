"""`kubetune-train --config FILE [--output DIR] [--check-only]`: the trainer pod's entry point.

Every run starts with the CPU-only check phase (kubetune_trainer.checks); --check-only runs
just that, loading no model (no torch either), and prints what it checked. Exit codes and
failure reporting as in kubetune_trainer.entrypoint.
"""
from __future__ import annotations

import logging
import os
import sys

from kubetune_api.reports import PodReport, Progress
from kubetune_api.training import load_config
from kubetune_trainer.training.allocator import use_tcmalloc
from kubetune_trainer.entrypoint import download_sink, parse_args, read_config, run_reported
from kubetune_trainer.sources import stay_offline
from kubetune_trainer.reporting.status_reporter import StatusReporter


def main(argv: list[str] | None = None) -> int:
    args = parse_args("kubetune-train", "Fine-tune a causal language model.", "training config", argv, check_only=True)
    # Under accelerate launch only the main process (RANK 0) logs progress and prints the result.
    main_process = os.environ.get("RANK", "0") == "0"
    level = logging.INFO if main_process else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = StatusReporter.from_env()
    # Download progress goes to the status from the main process only (every rank resolves).
    sink = download_sink(reporter, PodReport, Progress) if main_process else None

    def work():
        config = read_config(load_config, args)
        if args.check_only:
            from kubetune_trainer.checks import check_training

            return check_training(config, sink=sink).describe()
        from kubetune_trainer.checks import fetch_training_sources

        # Remote sources first (hf:// may go online); then the Hub stays out of reach, so
        # transformers and datasets, which only get local paths, never wait on its timeouts.
        fetch_training_sources(config, sink)
        stay_offline()
        from tqdm.contrib.logging import logging_redirect_tqdm

        from kubetune_trainer.training.run import run

        with logging_redirect_tqdm():
            return run(config, reporter)

    code, result = run_reported("training", work, reporter)
    if code == 0 and main_process:
        print(result)  # the summary's path, or what --check-only checked
    return code


def entry() -> int:
    """The console script: onto tcmalloc first (kubetune_trainer.training.allocator), then main()."""
    use_tcmalloc("kubetune_trainer.cli")
    return main()


if __name__ == "__main__":  # python -m kubetune_trainer.cli, as accelerate launch -m runs it
    sys.exit(entry())
