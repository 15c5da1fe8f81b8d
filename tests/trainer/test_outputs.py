"""Output confinement: output.path must resolve (symlinks too) inside the writable roots."""
from __future__ import annotations

import os

import pytest

from kubetune_api.errors import ConfigError
from kubetune_api.wire import ENV_WRITABLE_ROOTS
from kubetune_trainer.checks import check_output_dir
from kubetune_trainer.outputs import resolve_output_dir, writable_roots


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working directory, a volume and somewhere else; only the first two are writable."""
    cwd, volume, elsewhere = (tmp_path / name for name in ("work", "volume", "elsewhere"))
    for directory in (cwd, volume, elsewhere):
        directory.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(ENV_WRITABLE_ROOTS, str(volume))
    return cwd, volume, elsewhere


def test_paths_inside_the_working_directory_or_a_volume_are_allowed(work):
    cwd, volume, _ = work
    assert resolve_output_dir("runs/out") == cwd / "runs" / "out"
    assert resolve_output_dir("runs/../out") == cwd / "out"
    assert resolve_output_dir(str(volume / "out")) == volume / "out"
    assert resolve_output_dir(str(volume)) == volume


@pytest.mark.parametrize("path", ["../elsewhere/out", "runs/../../elsewhere", "/etc/kubetune-out"])
def test_paths_leaving_the_roots_are_refused(work, path):
    with pytest.raises(ConfigError, match=r"output\.path .* is outside the directories this pod may write") as e:
        resolve_output_dir(path)
    assert e.value.reason == "InvalidConfig"


def test_a_symlink_inside_the_working_directory_pointing_outside_is_refused(work):
    cwd, volume, elsewhere = work
    (cwd / "link").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=f"resolves to {elsewhere}/out"):
        resolve_output_dir("link/out")
    (cwd / "to-volume").symlink_to(volume)  # a symlink to an allowed root is fine
    assert resolve_output_dir("to-volume/out") == volume / "out"


def test_a_volume_root_with_a_trailing_slash_does_not_allow_its_siblings(work, monkeypatch, tmp_path):
    _, volume, _ = work
    monkeypatch.setenv(ENV_WRITABLE_ROOTS, f"{volume}/:")
    (tmp_path / "volume2").mkdir()
    with pytest.raises(ConfigError):
        resolve_output_dir(str(tmp_path / "volume2"))


def test_unset_env_is_unrestricted_and_empty_env_allows_only_the_working_directory(work, monkeypatch):
    cwd, volume, elsewhere = work
    monkeypatch.delenv(ENV_WRITABLE_ROOTS)
    assert writable_roots() is None
    assert resolve_output_dir(str(elsewhere / "out")) == elsewhere / "out"
    monkeypatch.setenv(ENV_WRITABLE_ROOTS, "")
    assert writable_roots() == [str(cwd)]
    with pytest.raises(ConfigError):
        resolve_output_dir(str(volume))


def test_check_output_dir_needs_a_directory_it_can_create_and_creates_nothing(work):
    cwd, _, _ = work
    assert check_output_dir("a/b/c") == cwd / "a" / "b" / "c"
    assert not (cwd / "a").exists()
    (cwd / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_output_dir("file/out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_dir_refuses_a_read_only_parent(work):
    cwd, _, _ = work
    (cwd / "ro").mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="is not writable by this pod"):
        check_output_dir("ro/out")
