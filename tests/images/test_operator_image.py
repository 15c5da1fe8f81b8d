"""images/operator/Dockerfile: its install lines, replayed in a clean venv, give a working
`kubetune-operator` and no ML stack; its runtime stage is non-root and writes nothing."""
from __future__ import annotations

import subprocess

import pytest

import dockerfiles
from kubetune_operator.settings import OperatorSettings

# What the trainer needs and the operator image must not hold (tests/operator checks the
# imports; this checks the image's install).
TRAINER_STACK = ("torch", "transformers", "peft", "accelerate", "numpy", "jinja2", "datasets", "pandas", "pyarrow",
                 "evaluate", "rouge_score", "sacrebleu", "nltk", "gguf")


@pytest.fixture(scope="module")
def dockerfile() -> dockerfiles.Dockerfile:
    return dockerfiles.parse(dockerfiles.OPERATOR_DOCKERFILE)


def test_builder_installs_the_operator_lock_then_the_source(dockerfile):
    runs = [run.args for run in dockerfile.stage("builder").all("RUN")]
    installs = [run for run in runs if run.startswith("pip install")]
    assert installs == ["pip install --require-hashes --no-deps -r requirements/operator.txt",
                        "pip install --no-deps --no-build-isolation ."], installs


@pytest.mark.slow
def test_operator_help_from_the_replayed_install(operator_image):
    result = subprocess.run([operator_image.command("kubetune-operator"), "--help"], env=operator_image.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: kubetune-operator" in result.stdout and "--trainer-image" in result.stdout


@pytest.mark.slow
def test_operator_install_holds_no_ml_stack_and_no_template_engine(operator_image):
    python = operator_image.command("python")
    probe = f"import importlib.util; print(' '.join(m for m in {TRAINER_STACK!r} if importlib.util.find_spec(m)))"
    result = subprocess.run([python, "-c", probe], env=operator_image.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"the operator image installs {result.stdout.split()}"
    # kopf, the kubernetes client and the prometheus client came from the extra itself.
    have = subprocess.run([python, "-c", "import kopf, kubernetes, prometheus_client, kubetune_api"],
                          env=operator_image.env, capture_output=True, text=True, timeout=120)
    assert have.returncode == 0, have.stderr


def test_runtime_stage_runs_the_operator_as_non_root(dockerfile):
    runtime = dockerfile.final
    users = runtime.all("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1].args}: use a numeric non-root uid (runAsNonRoot)"
    # manifests/operator/deployment.yaml runs it as this uid too.
    assert int(user) == 65532
    entrypoint = runtime.all("ENTRYPOINT")
    assert entrypoint and entrypoint[-1].exec_form() == ["kubetune-operator"]


def test_runtime_stage_exposes_the_operator_ports(dockerfile):
    exposed = {int(port.split("/")[0]) for e in dockerfile.final.all("EXPOSE") for port in e.args.split()}
    settings = OperatorSettings()
    assert exposed == {settings.metrics_port, settings.health_port}


def test_runtime_stage_needs_no_writable_root_filesystem(dockerfile):
    runtime = dockerfile.final
    env = runtime.pairs("ENV")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert not runtime.all("VOLUME"), "the operator writes nothing; a VOLUME would only hide that"


def test_runtime_stage_takes_the_builders_venv_as_is(dockerfile):
    """The venv's scripts name their interpreter by absolute path: it must land where it was built,
    on the same base image."""
    builder_env = dockerfile.stage("builder").pairs("ENV")
    venv = builder_env["VIRTUAL_ENV"]
    copies = [c.args.split() for c in dockerfile.final.all("COPY")]
    assert ["--from=builder", venv, venv] in copies, copies
    runtime_env = dockerfile.final.pairs("ENV")
    assert runtime_env["VIRTUAL_ENV"] == venv
    assert runtime_env["PATH"].split(":")[0] == f"{venv}/bin"
    assert dockerfile.base_image(dockerfile.stage("builder")) == dockerfile.base_image(dockerfile.final)
