"""Every FineTuneJob manifest in examples/ is valid against the API models the CRD is generated from."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetune_api import FineTuneJobSpec
from kubetune_api.catalog import Method

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The same LoRA from remote sources (docs/models-and-data.md), and LoRA on chat rows with tool
# calls (dataset.conversations, a Hub model): not one method each.
SOURCE_EXAMPLES = {"hub", "s3", "chat"}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("finetunejob*.yaml")), ids=lambda p: p.name)
def test_example_is_a_valid_finetunejob(path):
    manifest = yaml.safe_load(path.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubetune.io/v1alpha1", "FineTuneJob")
    spec = FineTuneJobSpec.model_validate(manifest["spec"])
    if "://" not in spec.dataset.path:
        assert (EXAMPLES.parent / spec.dataset.path).is_file()
    config = spec.training_config()
    if path.stem.startswith("finetunejob-") and path.stem.removeprefix("finetunejob-") not in SOURCE_EXAMPLES:
        assert config.method.value == path.stem.removeprefix("finetunejob-")


def test_there_is_one_example_per_method():
    named = {p.stem.removeprefix("finetunejob-") for p in EXAMPLES.glob("finetunejob-*.yaml")} - SOURCE_EXAMPLES
    assert named == {m.value for m in Method}
