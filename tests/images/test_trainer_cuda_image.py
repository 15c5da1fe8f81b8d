"""images/trainer/Dockerfile.cuda can't be installed here (no CUDA wheels, no pytorch.org);
it is checked against the CPU variant instead: same builder and runtime stages but for the
torch index, torch's line and the labels, torch at the lock's version, a CUDA base of the
index's release."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

import dockerfiles
from dockerfiles import torch_pin


@pytest.fixture(scope="module")
def cpu() -> dockerfiles.Dockerfile:
    return dockerfiles.parse(dockerfiles.TRAINER_DOCKERFILE)


@pytest.fixture(scope="module")
def cuda() -> dockerfiles.Dockerfile:
    return dockerfiles.parse(dockerfiles.TRAINER_CUDA_DOCKERFILE)


def without(stage: dockerfiles.Stage, *keywords_or_args: str) -> list[tuple[str, str]]:
    return [(i.keyword, i.args) for i in stage.instructions
            if i.keyword not in keywords_or_args and not any(i.args.startswith(a) for a in keywords_or_args)]


def torch_line(stage: dockerfiles.Stage) -> str:
    lines = [r.args for r in stage.all("RUN") if "torch" in r.args]
    assert len(lines) == 1, lines
    return lines[0]


def test_builder_stage_is_the_cpu_one_but_for_torch(cpu, cuda):
    cpu_builder, cuda_builder = cpu.stage("builder"), cuda.stage("builder")
    assert without(cuda_builder, "TORCH_INDEX_URL=", torch_line(cuda_builder)) == \
        without(cpu_builder, "TORCH_INDEX_URL=", torch_line(cpu_builder))
    line = torch_line(cuda_builder)
    assert "${TORCH_INDEX_URL:+--index-url" in line
    assert f'"torch=={torch_pin()}"' in line, "torch is pinned as in pyproject's trainer extra and the lock"


def test_runtime_stage_is_the_cpu_one_but_for_the_labels(cpu, cuda):
    assert without(cuda.final, "LABEL") == without(cpu.final, "LABEL")
    assert cuda.final.pairs("LABEL")[dockerfiles.REF_LABEL] == cpu.final.pairs("LABEL")[dockerfiles.REF_LABEL] + "-cuda"


def test_cuda_base_matches_the_torch_index(cuda):
    index = cuda.stage("builder").arg_defaults()["TORCH_INDEX_URL"]
    wheel = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)(\d)", index)
    assert wheel, f"not a CUDA wheel index: {index}"
    base = cuda.base_image(cuda.final)
    image = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?(?:runtime|base)-ubuntu[\d.]+", base)
    assert image, f"not an nvidia/cuda runtime image: {base}"
    assert image.groups() == wheel.groups(), f"{base} is CUDA {'.'.join(image.groups())}, the wheels {index}"


def test_base_stage_provides_python311_with_venv(cuda):
    python = cuda.stage("base")
    script = " ".join(r.args for r in python.all("RUN"))
    assert re.search(r"apt-get install [^&]*\bpython3\.11\b[^&]*\bpython3\.11-venv\b", script), script
    assert "rm -rf /var/lib/apt/lists/*" in script


def test_runs_as_the_same_non_root_user(cpu, cuda):
    assert cuda.final.all("USER")[-1].args == cpu.final.all("USER")[-1].args
    assert cuda.final.all("USER")[-1].args.split(":")[0] not in ("0", "root")


@pytest.mark.parametrize("variant, index, pip_args", [
    ("cpu", "https://download.pytorch.org/whl/cpu",
     ["install", "--require-hashes", "--no-deps", "--extra-index-url", "{index}", "-r", "requirements/torch-cpu.txt"]),
    ("cuda", "https://download.pytorch.org/whl/cu128", ["install", "--index-url", "{index}", "torch=={pin}"])])
def test_torch_line_expands_to_the_variants_index(variant, index, pip_args, cpu, cuda, tmp_path):
    """What /bin/sh makes of the torch line with the Dockerfile's own index, and with none
    (what the replay in test_trainer_image runs): `pip` here is a stub printing its argv."""
    dockerfile = {"cpu": cpu, "cuda": cuda}[variant]
    builder = dockerfile.stage("builder")
    assert builder.arg_defaults()["TORCH_INDEX_URL"] == index
    (tmp_path / "pip").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    (tmp_path / "pip").chmod(0o755)
    line = torch_line(builder)
    with_index = [a.format(index=index, pin=torch_pin()) for a in pip_args]
    without_index = [a for a in with_index if a not in (index, "--index-url", "--extra-index-url")]
    for value, expected in ((index, with_index), ("", without_index)):
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "TORCH_INDEX_URL": value}
        result = subprocess.run(["/bin/sh", "-c", line], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.split("\n")[:-1] == expected
