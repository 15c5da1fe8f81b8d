"""promotion.export gguf: a Llama checkpoint written as a GGUF file reads back, with
transformers' GGUF loader (which reads it with the gguf package, llama.cpp's reader), to the
same logits and the same token ids; the file has llama.cpp's layout and metadata."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kubetune_api.errors import ConfigError
from kubetune_api.promotion import GgufQuantization
from kubetune_trainer.promotion.gguf_export import export_gguf, file_name

PROMPTS = ["Which animal is red cat?\nAnswer: cat", "Which animal is blue owl?\nAnswer:", "green fox 42"]


def exported(model_dir: Path, directory: Path, quantization: GgufQuantization = GgufQuantization.F32) -> Path:
    target = directory / file_name(quantization)
    export_gguf(model_dir, target, quantization, name="tiny")
    return target


def load_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name),
            AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))


def rounded(model, quantization: GgufQuantization):
    """`model` with each matrix put through `quantization` and back, as the GGUF file stores it
    (1-D tensors stay F32 there)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quantization.value]
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                stored = gguf.quants.quantize(parameter.numpy(), qtype)
                parameter.copy_(torch.from_numpy(gguf.quants.dequantize(stored, qtype).reshape(parameter.shape)))
    return model


def logits(model_dir: Path, gguf_file: Path, quantization: GgufQuantization = GgufQuantization.F32):
    """Per prompt: (the checkpoint's logits, with its weights rounded as the file stores them,
    and the GGUF's); asserts the GGUF's tokenizer gives the checkpoint tokenizer's ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    models = [model.eval(), rounded(AutoModelForCausalLM.from_pretrained(model_dir), quantization).eval(), None]
    models[2], loaded_tokenizer = load_gguf(gguf_file)
    results = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        assert loaded_tokenizer(prompt, return_tensors="pt").input_ids.tolist() == ids.tolist(), prompt
        with torch.no_grad():
            results.append(tuple(m.eval()(ids).logits[0] for m in models))
    return results


@pytest.mark.parametrize("quantization, max_relative, min_agreement", [
    (GgufQuantization.F32, 1e-6, 1.0),
    (GgufQuantization.F16, 3e-3, 1.0),
    (GgufQuantization.BF16, 3e-2, 0.9),
    (GgufQuantization.Q8_0, 6e-2, 0.9),
])
def test_round_trip_gives_the_checkpoints_logits_and_token_ids(tiny_model_dir, tmp_path, quantization, max_relative, min_agreement):
    results = logits(tiny_model_dir, exported(tiny_model_dir, tmp_path, quantization), quantization)
    original, rounded_, loaded = (torch.cat(column) for column in zip(*results))
    # Exactly the checkpoint once its weights are rounded as the file stores them...
    torch.testing.assert_close(loaded, rounded_, atol=1e-4, rtol=1e-4)
    # ...and near the checkpoint itself: the rounding is all that differs.
    worst, relative = (loaded - original).abs().max().item(), ((loaded - original).norm() / original.norm()).item()
    agreement = (loaded.argmax(-1) == original.argmax(-1)).float().mean().item()
    print(f"{quantization.value}: max |logit diff| {worst:.2e}, relative {relative:.2e}, argmax agreement {agreement:.3f}")
    assert relative <= max_relative and agreement >= min_agreement


def test_tied_embeddings_and_grouped_query_attention_round_trip(tiny_tokenizer, tmp_path):
    """SmolLM2's shape: no output.weight (llama.cpp reuses token_embd), fewer k/v heads than
    q heads (k rows are permuted per k/v head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, initializer_range=0.2,
                         bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    gguf_file = exported(tmp_path / "model", tmp_path)
    assert "output.weight" not in {t.name for t in reader(gguf_file).tensors}
    for original, _, loaded in logits(tmp_path / "model", gguf_file):
        torch.testing.assert_close(loaded, original, atol=1e-4, rtol=1e-4)


def reader(path: Path):
    import gguf

    return gguf.GGUFReader(str(path))


def field(gguf_reader, key: str):
    return gguf_reader.fields[key].contents()


def test_the_gguf_reader_sees_llamas_layout_and_the_quantization(tiny_model_dir, tmp_path):
    import gguf

    file = reader(exported(tiny_model_dir, tmp_path, GgufQuantization.Q8_0))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert field(file, "general.architecture") == "llama" and field(file, "general.name") == "tiny"
    assert field(file, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert field(file, "llama.block_count") == config["num_hidden_layers"]
    assert field(file, "llama.attention.head_count_kv") == config["num_key_value_heads"]
    # 9 tensors per block, plus token_embd, output_norm and (untied) output.
    assert len(file.tensors) == 9 * config["num_hidden_layers"] + 3
    types = {t.name: t.tensor_type for t in file.tensors}
    assert {types[n] for n in types if n.endswith("norm.weight")} == {gguf.GGMLQuantizationType.F32}
    assert {types[n] for n in types if not n.endswith("norm.weight")} == {gguf.GGMLQuantizationType.Q8_0}
    assert {"token_embd.weight", "output_norm.weight", "output.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight"} <= set(types)
    assert field(file, "tokenizer.ggml.model") == "gpt2" and field(file, "tokenizer.ggml.pre") == "gpt-2"
    assert field(file, "tokenizer.ggml.add_bos_token") is True  # the tiny tokenizer prepends <s>
    tokens = field(file, "tokenizer.ggml.tokens")
    assert len(tokens) == config["vocab_size"] and tokens[field(file, "tokenizer.ggml.bos_token_id")] == "<s>"


def test_a_non_llama_architecture_is_refused(tiny_tokenizer, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "gpt2")
    tiny_tokenizer.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match="architecture GPT2LMHeadModel is not supported"):
        exported(tmp_path / "gpt2", tmp_path)
    assert not list(tmp_path.glob("*.gguf"))


def with_pre_tokenizer(tiny_model_dir: Path, directory: Path, pre_tokenizer: dict) -> Path:
    shutil.copytree(tiny_model_dir, directory)
    spec = json.loads((directory / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = pre_tokenizer
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    return directory


def test_smollms_digit_split_is_named_for_llama_cpp(tiny_model_dir, tmp_path):
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    model_dir = with_pre_tokenizer(tiny_model_dir, tmp_path / "model", smollm)
    assert field(reader(exported(model_dir, tmp_path)), "tokenizer.ggml.pre") == "smollm"


def test_a_tokenizer_llama_cpp_would_split_otherwise_is_refused(tiny_model_dir, tmp_path):
    model_dir = with_pre_tokenizer(tiny_model_dir, tmp_path / "model", {"type": "Whitespace"})
    with pytest.raises(ConfigError, match="only byte-level BPE tokenizers .* pre-tokenizer Whitespace"):
        exported(model_dir, tmp_path)


@pytest.mark.slow
def test_smollm2_exports_the_vocabulary_llama_cpps_converter_wrote(tmp_path):
    """The demo's SmolLM2 (converted from the GGUF llama.cpp wrote) exported again: the same
    tensors and tokenizer metadata as llama.cpp's file (its pre-tokenizer name aside: the
    checkpoint transformers rebuilds from a GGUF file splits like GPT-2)."""
    from sources_fixtures import SMOLLM2_GGUF, smollm2_checkpoint
    from kubetune_trainer.model.location import resolve_path

    original = reader(resolve_path(SMOLLM2_GGUF))
    file = reader(exported(smollm2_checkpoint(tmp_path / "smollm2"), tmp_path, GgufQuantization.Q8_0))
    for key in ("llama.block_count", "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
                "llama.rope.dimension_count", "llama.vocab_size", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
                "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                "tokenizer.chat_template"):
        assert field(file, key) == field(original, key), key
    assert {t.name: list(t.shape) for t in file.tensors} == {t.name: list(t.shape) for t in original.tensors}
