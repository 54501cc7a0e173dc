"""A Hugging Face model directory as one GGUF file (llama.cpp's format), with its tokenizer and chat
template: what llama.cpp, llama-cpp-python and Ollama load.

Written with the ``gguf`` package's writer and quantizers, as llama.cpp's own converter does for the
architectures memo's bases use: Llama (SmolLM2, the tiny base) and Qwen2. Two details decide whether
llama.cpp computes what transformers computes: a Llama's query and key projections are stored with
their rotary halves interleaved (llama.cpp rotates adjacent pairs, transformers rotates halves), and
the tokenizer's pre-tokenizer is named to llama.cpp (``tokenizer.ggml.pre``), which splits text by
that name's rules. A tokenizer memo cannot name is refused rather than exported to answer wrongly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.gguf_import import GGUFError, _gguf_module

QUANTS = ("f32", "f16", "bf16", "q8_0")  # what --quant accepts
EMBEDDINGS = "model.embed_tokens.weight"
Q8_BLOCK = 32  # values per Q8_0 block: a row whose length is not a multiple stays in f16


@dataclass(frozen=True)
class Architecture:
    gguf_name: str  # general.architecture
    interleave_rope: bool  # store q/k with rotary pairs adjacent (llama.cpp's Llama; not Qwen2's NeoX rope)


ARCHITECTURES = {
    "LlamaForCausalLM": Architecture("llama", True),
    "Qwen2ForCausalLM": Architecture("qwen2", False),
}


def architecture_of(config: dict[str, Any]) -> Architecture:
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    supported = ", ".join(ARCHITECTURES)
    raise GGUFError(f"GGUF export knows {supported}; this model is {', '.join(names) or 'of no named architecture'}")


def interleave(weight: np.ndarray, heads: int) -> np.ndarray:
    """A q or k projection with each head's rotary halves interleaved (llama.cpp's converter's permute)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE (``tokenizer.ggml.pre``)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # GPT-2's split: SmolLM2 as transformers reads it from GGUF, memo's tiny base
    if pre.get("type") == "Sequence":
        kinds = [p.get("type") for p in pre.get("pretokenizers", [])]
        pattern = json.dumps(pre)
        if kinds == ["Split", "ByteLevel"] and r"\\p{N}" in pattern and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in pattern:
            return "qwen2"
    raise GGUFError(
        f"cannot tell llama.cpp how this tokenizer splits text (pre-tokenizer {json.dumps(pre)[:120]}); "
        "GGUF export knows GPT-2's byte-level split and Qwen2's"
    )


def _gguf_tensor(gguf, data: np.ndarray, quant: str) -> tuple[np.ndarray, Any]:
    """The tensor as written, and its GGML type: vectors stay f32 (norms), matrices take ``quant``."""
    types = gguf.GGMLQuantizationType
    if data.ndim == 1 or quant == "f32":
        return data.astype(np.float32), types.F32
    if quant == "f16" or (quant == "q8_0" and data.shape[-1] % Q8_BLOCK):
        return data.astype(np.float16), types.F16
    qtype = types.BF16 if quant == "bf16" else types.Q8_0
    return gguf.quants.quantize(data.astype(np.float32), qtype), qtype


def _file_type(gguf, quant: str) -> int:
    kinds = gguf.LlamaFileType
    return {"f32": kinds.ALL_F32, "f16": kinds.MOSTLY_F16, "bf16": kinds.MOSTLY_BF16, "q8_0": kinds.MOSTLY_Q8_0}[quant]


def rope_theta(config: dict[str, Any]) -> float:
    """The rotary base, where transformers keeps it (``rope_parameters`` in newer configs); scaled rotary
    embeddings are refused, not written wrong."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise GGUFError(f"GGUF export writes plain rotary embeddings, not rope type {rope.get('rope_type')!r}")
    return float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)


def _add_hyperparameters(writer, config: dict[str, Any], gguf, quant: str) -> None:
    heads = config["num_attention_heads"]
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // heads)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(_file_type(gguf, quant))


def _add_tokenizer(writer, model_dir: Path, vocab_size: int, gguf) -> None:
    """The BPE vocabulary, merges, special tokens and chat template (llama.cpp's ``gpt2`` tokenizer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise GGUFError(f"{model_dir} has no tokenizer.json; GGUF export writes fast BPE tokenizers only")
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    if tokenizer_json.get("model", {}).get("type") != "BPE":
        raise GGUFError("GGUF export writes BPE tokenizers only (llama.cpp's gpt2 tokenizer model)")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    types = gguf.TokenType
    tokens, kinds = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            kinds.append(types.UNUSED)
        else:
            tokens.append(by_id[i])
            kinds.append(types.NORMAL if i not in added else types.CONTROL if added[i].special else types.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)
    if tokenizer.chat_template and not special.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _tensors(model_dir: Path, config: dict[str, Any], arch: Architecture, gguf):
    """(GGUF name, float32 array) for every weight, q/k interleaved where llama.cpp wants them so."""
    from safetensors import safe_open

    layers = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_name.upper()], layers)
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise GGUFError(f"{model_dir} holds no safetensors weights")
    tied = bool(config.get("tie_word_embeddings"))
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                if "rotary_emb.inv_freq" in key:
                    continue
                source = key
                if tied and key == "lm_head.weight":
                    # Tied: llama.cpp reads the output from token_embd. A file written with the tie
                    # deduplicated may hold the shared tensor under lm_head's name only.
                    if EMBEDDINGS in keys:
                        continue
                    key = EMBEDDINGS
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise GGUFError(f"GGUF export has no llama.cpp name for tensor {key!r}")
                data = f.get_tensor(source).float().numpy()
                if arch.interleave_rope and key.endswith("q_proj.weight"):
                    data = interleave(data, heads)
                elif arch.interleave_rope and key.endswith("k_proj.weight"):
                    data = interleave(data, kv_heads)
                yield name, data


def export_gguf(model_dir: Path, out: Path, *, quant: str = "q8_0", name: str = "") -> Path:
    """Write the model directory as the GGUF file ``out`` (its tensors in ``quant``); returns ``out``."""
    if quant not in QUANTS:
        raise GGUFError(f"--quant is one of {', '.join(QUANTS)}, not {quant!r}")
    gguf = _gguf_module()
    config = json.loads((model_dir / "config.json").read_text())
    arch = architecture_of(config)
    writer = gguf.GGUFWriter(str(out), arch.gguf_name)
    try:
        writer.add_name(name or model_dir.name)
        _add_hyperparameters(writer, config, gguf, quant)
        _add_tokenizer(writer, model_dir, config["vocab_size"], gguf)
        for tensor_name, data in _tensors(model_dir, config, arch, gguf):
            written, qtype = _gguf_tensor(gguf, data, quant)
            writer.add_tensor(tensor_name, written, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return out
