"""A Hugging Face LLaMA-family checkpoint -> an F32/F16 GGUF file that llama.cpp loads, with the `gguf` package.

What llama.cpp's convert_hf_to_gguf.py does for this family, in the few parts it takes:
- hyperparameters under the `llama.` keys;
- the tokenizer as llama.cpp's "gpt2" BPE: byte-level token strings, merges, token types, and the
  pre-tokenizer name. That name cannot be read from tokenizer.json: convert_hf_to_gguf identifies it
  by hashing the ids the tokenizer gives for a fixed text (CHECK_TEXT), and so does this module.
  (Its own vocabulary loader takes tokenizer.json's `byte_fallback=true`, which transformers writes
  when it dequantizes a GGUF, for a sentencepiece vocabulary; llama.cpp then crashes on the file.)
- q_proj / k_proj rows permuted back to the interleaved RoPE layout llama.cpp computes with.
Pure functions first, then `convert`.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np

from leanserve.errors import ProfileError

# convert_hf_to_gguf.py's get_vocab_base_pre text and the hashes of its token ids, for the families
# whose tokenizer this converter has been checked against (llama.cpp's file lists many more).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 "
    "3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на "
    "Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, "
    "'D you like some tea? We'Ve a'lL"
)
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM(2)
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3
}
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4  # gguf.TokenType values


def permute_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """[heads*head_dim, in] from HF's rotate-half row order to llama.cpp's interleaved pairs (per head:
    rows (0, d/2), (1, d/2+1), ... become adjacent). `n_head` is the KV head count for k_proj."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def pre_tokenizer_name(tokenizer: Any) -> str:
    """llama.cpp's pre-tokenizer name for an HF tokenizer, identified as convert_hf_to_gguf.py does."""
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise ProfileError(f"unknown BPE pre-tokenizer (hash {digest[:16]}...): this converter knows "
                           f"{', '.join(sorted(set(PRE_TOKENIZERS.values())))}; convert this model with llama.cpp's "
                           "convert_hf_to_gguf.py and serve the file with --model FILE.gguf", param="model")
    return PRE_TOKENIZERS[digest]


def bpe_vocab(tokenizer_json: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(token strings, token types, merges "a b") from a fast tokenizer's tokenizer.json."""
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise ProfileError(f"tokenizer.json has a {model.get('type')} model; this converter writes BPE only",
                           param="model")
    by_id = {i: tok for tok, i in model["vocab"].items()}
    added = {t["id"]: t for t in tokenizer_json.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(2)  # UNUSED
        elif i in added:
            tokens.append(by_id[i])
            types.append(TOKEN_CONTROL if added[i].get("special") else TOKEN_USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TOKEN_NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def chat_template(model_dir: Path) -> str | None:
    file = model_dir / "chat_template.jinja"
    if file.is_file():
        return file.read_text(encoding="utf-8")
    config = model_dir / "tokenizer_config.json"
    return json.loads(config.read_text()).get("chat_template") if config.is_file() else None


def hf_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint's safetensors files, as float32 numpy arrays."""
    import torch
    from safetensors.torch import load_file

    out: dict[str, np.ndarray] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        for name, t in load_file(file).items():
            out[name] = t.to(torch.float32).numpy()
    if not out:
        raise ProfileError(f"{model_dir} has no *.safetensors weights to convert", param="source")
    return out


def gguf_tensors(tensors: dict[str, np.ndarray], config: dict[str, Any]) -> dict[str, np.ndarray]:
    """HF tensor names -> GGUF names, q/k permuted; lm_head dropped when tied to the embeddings."""
    import gguf

    n_layer, n_head = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads", n_head))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    out: dict[str, np.ndarray] = {}
    for hf_name, data in tensors.items():
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings", False):
            continue
        if hf_name.endswith(".rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ProfileError(f"no GGUF name for tensor {hf_name!r}: not a LLaMA-family checkpoint?", param="source")
        if hf_name.endswith("q_proj.weight"):
            data = permute_rope(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_rope(data, n_kv)
        out[name] = data
    return out


def convert(model_dir: Path, out_file: Path, dtype: str = "f32") -> dict[str, Any]:
    """Write model_dir (an HF LlamaForCausalLM checkpoint) as one GGUF file; returns facts for the manifest."""
    import gguf
    from transformers import AutoTokenizer

    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ProfileError(f"the gguf job converts LLaMA-family checkpoints; {model_dir} is "
                           f"{config.get('model_type')!r}", param="source")
    generation = model_dir / "generation_config.json"
    special = {**config, **(json.loads(generation.read_text()) if generation.is_file() else {})}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    vocab_size = int(config["vocab_size"])
    tokens, types, merges = bpe_vocab(json.loads((model_dir / "tokenizer.json").read_text()), vocab_size)
    pre = pre_tokenizer_name(tokenizer)
    n_head = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // n_head)
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ProfileError(f"RoPE scaling {rope.get('rope_type')!r} is not converted here", param="source")

    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_name(str(config.get("_model_name_or_path") or model_dir.name))
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads", n_head)))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    # the ids the model was trained with (config/generation_config), as the default model's own GGUF has them
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                     ("pad_token_id", writer.add_pad_token_id)):
        value = special.get(key)
        if isinstance(value, list):
            value = value[0]
        if value is not None:
            add(int(value))
    if tok_config.get("unk_token_id") is not None:
        writer.add_unk_token_id(int(tok_config["unk_token_id"]))
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token", False)))
    writer.add_add_space_prefix(bool(tok_config.get("add_prefix_space", False)))
    template = chat_template(model_dir)
    if template:
        writer.add_chat_template(template)

    written: dict[str, int] = {}
    for name, data in gguf_tensors(hf_tensors(model_dir), config).items():
        keep_f32 = dtype == "f32" or data.ndim == 1  # norms stay F32, as llama.cpp wants them
        writer.add_tensor(name, data.astype(np.float32 if keep_f32 else np.float16))
        written["F32" if keep_f32 else "F16"] = written.get("F32" if keep_f32 else "F16", 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"pre_tokenizer": pre, "vocab_size": vocab_size, "tensor_types": written,
            "size_bytes": out_file.stat().st_size}
