"""images/trainer/Dockerfile (CPU): its install lines, replayed in a clean venv with the
torch index left out, give torch at the pinned version and working `kubetune-train` and
`kubetune-eval`; its runtime stage runs as a non-root user who can write its caches."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import PurePosixPath

import pytest

import dockerfiles
from dockerfiles import torch_pin

CACHE_VARIABLES = ("XDG_CACHE_HOME", "HF_HOME", "KUBETUNE_CACHE", "TRITON_CACHE_DIR")


@pytest.fixture(scope="module")
def dockerfile() -> dockerfiles.Dockerfile:
    return dockerfiles.parse(dockerfiles.TRAINER_DOCKERFILE)


def test_builder_installs_the_trainer_lock_torchs_cpu_wheel_then_the_source(dockerfile):
    builder = dockerfile.stage("builder")
    installs = [run.args for run in builder.all("RUN") if run.args.startswith("pip install")]
    assert installs == ["pip install --require-hashes --no-deps -r requirements/trainer.txt",
                        'pip install --require-hashes --no-deps ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} '
                        "-r requirements/torch-cpu.txt",
                        "pip install --no-deps --no-build-isolation ."], installs
    # The only thing the replay leaves out is the CPU wheel index.
    assert builder.arg_defaults()["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["kubetune-train", "kubetune-eval"])
def test_entry_commands_help_from_the_replayed_install(trainer_image, command):
    result = subprocess.run([trainer_image.command(command), "--help"], env=trainer_image.env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"usage: {command}" in result.stdout and "--config" in result.stdout


@pytest.mark.slow
def test_replayed_install_has_the_pinned_torch_and_accelerate(trainer_image):
    # The operator launches multi-GPU training with `accelerate launch`.
    trainer_image.command("accelerate")
    python = trainer_image.command("python")
    result = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], env=trainer_image.env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("+")[0] == torch_pin(), result.stdout


def test_runtime_stage_user_is_non_root(dockerfile):
    users = dockerfile.final.all("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1].args}: use a numeric non-root uid (runAsNonRoot)"


def test_runtime_stage_home_caches_and_workspace_belong_to_the_user(dockerfile):
    runtime = dockerfile.final
    env = runtime.pairs("ENV")
    uid = runtime.all("USER")[-1].args.split(":")[0]
    home = PurePosixPath(env["HOME"])
    for variable in CACHE_VARIABLES:
        assert variable in env, f"{variable} is not set"
        assert PurePosixPath(env[variable]).is_relative_to(home), f"{variable}={env[variable]} is outside HOME={home}"
    workdir = runtime.all("WORKDIR")[-1].args
    assert workdir == "/workspace"  # relative outputs in a spec resolve here
    # One RUN creates every directory and hands it to the user (and to group 0, for
    # platforms that run the pod under another uid in that group).
    script = " ".join(run.args for run in runtime.all("RUN"))
    commands = [shlex.split(part) for part in re.split(r"&&|;", script)]
    made = {w for c in commands if c[:2] == ["mkdir", "-p"] for w in c[2:]}
    for path in (workdir, *(env[v] for v in CACHE_VARIABLES if v != "XDG_CACHE_HOME")):
        assert path in made, f"{path} is not created in the image"
    owned = {w for c in commands if c[:2] == ["chown", "-R"] and c[2].split(":")[0] == uid for w in c[3:]}
    assert str(home) in owned and workdir in owned, f"chown -R {uid} must cover {home} and {workdir}: {owned}"
    user = next(c for c in commands if c and c[0] == "useradd")
    assert user[user.index("--uid") + 1] == uid and user[user.index("--home-dir") + 1] == str(home)


def test_runtime_stage_leaves_hub_access_to_the_commands(dockerfile):
    """kubetune-train turns HF_HUB_OFFLINE on itself once its hf:// sources are local;
    kubetune-eval does unless a metric must come from the Hub. An image-wide HF_HUB_OFFLINE=1
    would break both (the sources could never be downloaded)."""
    assert "HF_HUB_OFFLINE" not in dockerfile.final.pairs("ENV")
    cli = (dockerfiles.ROOT / "trainer" / "kubetune_trainer" / "cli.py").read_text()
    assert cli.index("fetch_training_sources(config, sink)") < cli.index("stay_offline()") < cli.index("return run(")


def test_runtime_stage_lets_the_operator_choose_the_command(dockerfile):
    runtime = dockerfile.final
    assert not runtime.all("ENTRYPOINT"), "the operator sets each pod's command; an ENTRYPOINT would be prepended"
    builder_venv = dockerfile.stage("builder").pairs("ENV")["VIRTUAL_ENV"]
    assert [c.args.split() for c in runtime.all("COPY")] == [["--from=builder", builder_venv, builder_venv]]
    env = runtime.pairs("ENV")
    assert env["VIRTUAL_ENV"] == builder_venv and env["PATH"].split(":")[0] == f"{builder_venv}/bin"


def test_operator_pods_match_the_image_user_caches_and_workdir(dockerfile):
    """The operator runs trainer pods with a read-only root: as the image's user, with
    emptyDirs at the image's WORKDIR and cache root, and the image's cache variables."""
    from kubetune_api import wire

    runtime = dockerfile.final
    env = runtime.pairs("ENV")
    assert runtime.all("USER")[-1].args == f"{wire.DEFAULT_RUN_AS_USER}:{wire.DEFAULT_RUN_AS_USER}"
    assert runtime.all("WORKDIR")[-1].args == wire.WORKSPACE
    assert {v: env[v] for v in CACHE_VARIABLES} == wire.CACHE_ENV
    assert env["XDG_CACHE_HOME"] == wire.CACHE_DIR and set(wire.WRITABLE_DIRS.values()) == {"/tmp", wire.CACHE_DIR, wire.WORKSPACE}
