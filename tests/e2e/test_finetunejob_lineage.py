"""Lineage end to end: the FineTuneJob's status.lineage names its rows file by the sha256 that
`sha256sum` prints, its base model by digest, and the image the pod ran (set by the operator)."""
from __future__ import annotations

import json
import subprocess

import pytest

from kubectl_utils import apply, wait_final
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster


def test_finetunejob_status_shows_lineage(operator, namespace, tiny_model_dir, rows_file, workdir):
    output = workdir / "out"
    apply(finetunejob("lineage", namespace, tiny_model_dir, rows_file, output))
    ftj = wait_final("ftj", namespace, "lineage")
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]

    lineage = ftj["status"]["lineage"]
    sha256sum = subprocess.run(["sha256sum", str(rows_file)], capture_output=True, text=True, check=True).stdout.split()[0]
    (dataset,) = lineage["datasets"]
    assert (dataset["role"], dataset["uri"], dataset["sha256"], dataset["rows"]) == ("train", str(rows_file), sha256sum, 40)
    assert lineage["model"]["uri"] == str(tiny_model_dir) and lineage["model"]["digest"].startswith("sha256:")
    assert lineage["configHash"].startswith("sha256:") and lineage["versions"]["torch"]
    assert lineage["image"].startswith("local://")  # the pod's imageID: the node agent's stand-in venv
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["lineage"] == {k: v for k, v in lineage.items() if k != "image"}
