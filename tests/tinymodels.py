"""Builders for tiny offline models, tokenizers, data and GGUF files used by the trainer tests."""
from __future__ import annotations

import json
from pathlib import Path

COLORS = ["red", "green", "blue", "yellow", "black", "white", "purple", "orange"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow"]
TEMPLATE = "Which animal is {{ color }} {{ animal }}?\nAnswer:"


def make_rows(n: int = 48) -> list[dict]:
    """A learnable task: the completion repeats the animal named in the prompt."""
    return [
        {"color": COLORS[i % len(COLORS)], "animal": ANIMALS[i % len(ANIMALS)], "answer": " " + ANIMALS[i % len(ANIMALS)]}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tokenizer():
    """A byte-level BPE (like SmolLM2's) trained on the task's text, with BOS added like Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [TEMPLATE.replace("{{ color }}", c).replace("{{ animal }}", a) + " " + a for c in COLORS for a in ANIMALS]
    tok.train_from_iterator(corpus * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    # No pad token on purpose: the trainer must fall back to eos.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        initializer_range=0.2,  # large enough that LoRA alone can move the logits of a random model
    )
    return LlamaForCausalLM(config)


def _permute(w, n_head):
    """llama.cpp's row order for q/k (rotary halves interleaved); transformers undoes it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tokenizer, path: Path) -> Path:
    """Writes a float32 llama GGUF file the way llama.cpp's converter lays it out."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    bpe = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = sorted(bpe["vocab"], key=bpe["vocab"].get)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]])
    w.add_token_types([3 if t in tokenizer.all_special_tokens else 1 for t in tokens])  # 3: control
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    for i in range(c.num_hidden_layers):
        for hf, cpp in [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
                        ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                        ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                        ("mlp.down_proj", "ffn_down")]:
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{cpp}.weight"
    for name, tensor in model.state_dict().items():
        array = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            array = _permute(array, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            array = _permute(array, c.num_key_value_heads)
        w.add_tensor(names[name], array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
