"""Will it fit? GPU memory for weights, KV cache, activations and runtime, from a model's shape.

Pure arithmetic on a config.json and a profile, so a self-hoster can plan a 7B on an 8 GB card
without downloading it (`shape:llama-7b`), and `serve --vram-budget` can cap the engine the same way.

The budget splits as: budget = weights + runtime overhead + activation peak + KV cache. Everything
left after the first three is KV cache, and the KV cache decides how many sequences of which length
run at once. The overhead and activation figures are estimates (stated below); weights and
KV bytes per token are exact for Llama-family shapes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from leanserve import methods
from leanserve.errors import LeanserveError
from leanserve.profiles.spec import ProfileSpec

GiB = 1 << 30
MiB = 1 << 20
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}

# CUDA context with cuBLAS/cuDNN handles (~0.5 GiB on recent drivers), vLLM's CUDA graphs (~0.25 GiB at
# 256 batch sizes) and allocator slack (~0.25 GiB): one GiB, before any weight or KV byte.
RUNTIME_OVERHEAD_BYTES = 1 * GiB
# vLLM's KV cache is paged in blocks of this many tokens: a sequence occupies whole blocks.
KV_BLOCK_TOKENS = 16
# Tokens in one forward pass (vLLM's max_num_batched_tokens on GPUs under 70 GB); the activation
# peak grows with it. The engine is told the same number when a budget applies.
DEFAULT_MAX_BATCHED_TOKENS = 2048
DEFAULT_MAX_SEQS = 256  # vLLM's max_num_seqs on GPUs under 70 GB: the most sequences in one batch
# Activation peak per batched token = ACTIVATION_FACTOR x (residual + normed input + q/k/v + o input +
# gate/up outputs) x dtype bytes; the factor covers temporaries and attention workspaces.
ACTIVATION_FACTOR = 2
LOGITS_COPIES = 2  # fp32 logits for every sequence in the batch, and the sampler's softmax of them

SHAPE_PREFIX = "shape:"


class FitError(LeanserveError):
    """A model, profile or size the planner cannot read."""


def parse_bytes(text: str) -> int:
    """'8GiB', '7.5 GiB', '8000MiB', '8GB' (10^9), '8G' (= GiB, as nvidia-smi and docker read it) or bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?)(B?)\s*", text, flags=re.IGNORECASE)
    if not m:
        raise FitError(f"cannot read {text!r} as a size; write e.g. 8GiB, 7.5GiB, 8000MiB or 8GB", param="vram")
    number, unit, binary, b = float(m.group(1)), m.group(2).upper(), m.group(3), m.group(4)
    power = " KMGT".index(unit) if unit else 0
    base = 1000 if (unit and b and not binary) else 1024  # "GB" is SI; "GiB" and bare "G" are binary
    return int(number * base**power)


def format_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / MiB:.0f} MiB"


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that decide its memory (Llama, Mistral, Qwen2 layout)."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position: int
    tied_embeddings: bool
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str) -> ModelShape:
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            return cls(
                name=name, hidden=hidden, intermediate=int(config["intermediate_size"]),
                layers=int(config["num_hidden_layers"]), heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads), vocab=int(config["vocab_size"]),
                max_position=int(config.get("max_position_embeddings") or 4096),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FitError(f"{name}: config.json lacks a decoder shape field ({exc}); the planner reads "
                           "Llama-style configs (hidden_size, num_hidden_layers, num_attention_heads, ...)",
                           param="model") from exc

    def layer_linears(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of every quantizable matrix in one block."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.layer_linears())

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus the LM head (once when tied); quantizers keep these in 16 bit."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def other_params(self) -> int:
        """Norms and biases: tiny, kept in 16 bit."""
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        return self.layers * (2 * self.hidden + bias) + self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params


def kv_bytes_per_token(shape: ModelShape, dtype_bytes: int = 2) -> int:
    """Keys and values of one token in every layer: layers x 2 x KV heads x head dim x dtype bytes."""
    return shape.layers * 2 * shape.kv_heads * shape.head_dim * dtype_bytes


def _method(name: str | None) -> Any:
    return methods.method_module(name) if name else None


def profile_shape(shape: ModelShape, spec: ProfileSpec) -> ModelShape:
    """The shape a structural profile produces (its method's `served_shape`), for planning before it is built."""
    method = _method(spec.build)
    if method is not None and hasattr(method, "served_shape"):
        return method.served_shape(shape, spec.build_params)
    return shape


def weight_bytes(shape: ModelShape, spec: ProfileSpec, dtype_bytes: int = 2) -> int:
    """Bytes of weights as the GPU engine holds them, estimated from the shape and the profile's methods.

    The decoder blocks' matrices take what the method that stores them says (`block_bytes` of the
    load-time quantization if any, else of the build method; see leanserve/methods/), or 16 bits when
    neither quantizes. Embeddings, the LM head, norms and biases stay in 16 bit, as every quantizer here
    leaves them.
    """
    shape = profile_shape(shape, spec)
    sixteen = (shape.embedding_params + shape.other_params) * dtype_bytes
    for name, params in ((spec.load_quant, spec.runtime_params), (spec.build, spec.build_params)):
        method = _method(name)
        if method is not None and hasattr(method, "block_bytes"):
            return int(sixteen + shape.layers * method.block_bytes(shape.layer_linears(), params))
    return sixteen + shape.linear_params * dtype_bytes


def activation_bytes(shape: ModelShape, max_batched_tokens: int, max_seqs: int, dtype_bytes: int = 2) -> int:
    """Peak memory of one forward pass over max_batched_tokens tokens, plus fp32 logits for max_seqs rows."""
    q_kv = (shape.heads + 2 * shape.kv_heads) * shape.head_dim
    per_token = 2 * shape.hidden + q_kv + shape.heads * shape.head_dim + 2 * shape.intermediate
    return ACTIVATION_FACTOR * max_batched_tokens * per_token * dtype_bytes + LOGITS_COPIES * max_seqs * shape.vocab * 4


@dataclass(frozen=True)
class Plan:
    """What fits in a budget: the split, and how many sequences of each length run at once."""

    model: str
    profile: str
    budget: int
    weights: int
    weights_source: str  # "artifact" (bytes on disk) or "estimate" (shape x bits)
    runtime_overhead: int
    activations: int
    kv_per_token: int
    kv_budget: int  # bytes left for the KV cache (negative: over budget by that much)
    model_max_len: int
    max_len: int  # the longest single sequence that fits (0: none), capped at the model's context
    concurrency: list[tuple[int, int]] = field(default_factory=list)  # (sequence length, sequences at once)
    max_seqs: int = DEFAULT_MAX_SEQS
    max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS

    @property
    def fits(self) -> bool:
        return self.max_len > 0

    def reason(self) -> str:
        """Why nothing fits (empty when something does)."""
        if self.fits:
            return ""
        fixed = self.weights + self.runtime_overhead + self.activations
        if self.kv_budget < 0:
            return (f"weights {format_bytes(self.weights)} + runtime {format_bytes(self.runtime_overhead)} + "
                    f"activations {format_bytes(self.activations)} = {format_bytes(fixed)} exceed the "
                    f"{format_bytes(self.budget)} budget by {format_bytes(-self.kv_budget)}, before any KV cache; "
                    "try a 4-bit profile (gptq-4, awq-4, nf4), a smaller model, or a lower --max-batched-tokens")
        return (f"{format_bytes(self.kv_budget)} left for the KV cache holds fewer than {KV_BLOCK_TOKENS} tokens "
                f"at {self.kv_per_token} bytes per token")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "concurrency"}
        out["concurrency"] = [{"context": c, "sequences": n} for c, n in self.concurrency]
        out["fits"], out["reason"] = self.fits, self.reason()
        return out


def sequences_that_fit(kv_budget: int, kv_per_token: int, length: int, max_seqs: int) -> int:
    """Sequences of `length` tokens (rounded up to whole KV blocks) whose caches fit, at most max_seqs."""
    if kv_budget <= 0:
        return 0
    per_seq = math.ceil(length / KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS * kv_per_token
    return min(max_seqs, kv_budget // per_seq)


def context_lengths(model_max: int, context: int | None) -> list[int]:
    """The lengths to report: the one asked for, else powers of two from 512 up to the model's context."""
    if context:
        return [context]
    lengths = [n for n in (2 ** k for k in range(9, 21)) if n < model_max]
    return [*lengths[-6:], model_max]


def plan(shape: ModelShape, spec: ProfileSpec, budget: int, *, context: int | None = None,
         weights: int | None = None, dtype: str = "bfloat16", kv_dtype: str | None = None,
         max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS, max_seqs: int = DEFAULT_MAX_SEQS,
         runtime_overhead: int = RUNTIME_OVERHEAD_BYTES) -> Plan:
    """Split `budget` bytes. `weights` (bytes of a built artifact, whose config `shape` then is)
    replaces the estimate, and the profile's structural change is not applied a second time."""
    dtype_bytes = DTYPE_BYTES[dtype]
    served = shape if weights is not None else profile_shape(shape, spec)
    source = "artifact" if weights is not None else "estimate"
    w = weights if weights is not None else weight_bytes(shape, spec, dtype_bytes)
    acts = activation_bytes(served, max_batched_tokens, max_seqs, dtype_bytes)
    per_token = kv_bytes_per_token(served, DTYPE_BYTES[kv_dtype or dtype])
    kv_budget = budget - w - runtime_overhead - acts
    blocks = kv_budget // (per_token * KV_BLOCK_TOKENS) if kv_budget > 0 else 0
    max_len = min(served.max_position, blocks * KV_BLOCK_TOKENS)
    rows = [(n, sequences_that_fit(kv_budget, per_token, n, max_seqs))
            for n in context_lengths(served.max_position, context)]
    return Plan(model=shape.name, profile=spec.name, budget=budget, weights=w, weights_source=source,
                runtime_overhead=runtime_overhead, activations=acts, kv_per_token=per_token, kv_budget=kv_budget,
                model_max_len=served.max_position, max_len=max_len, concurrency=rows, max_seqs=max_seqs,
                max_batched_tokens=max_batched_tokens)


def render(p: Plan) -> str:
    """The plan as a few lines of text for a terminal or a log."""
    lines = [
        f"{p.model} under {p.profile} in {format_bytes(p.budget)}:",
        f"  weights        {format_bytes(p.weights):>12}  ({p.weights_source})",
        f"  runtime        {format_bytes(p.runtime_overhead):>12}  (CUDA context, CUDA graphs, allocator slack)",
        f"  activations    {format_bytes(p.activations):>12}  ({p.max_batched_tokens} batched tokens, {p.max_seqs} sequences' logits)",
        f"  KV cache       {format_bytes(max(p.kv_budget, 0)):>12}  ({p.kv_per_token} bytes/token)",
    ]
    if not p.fits:
        return "\n".join([*lines, f"nothing fits: {p.reason()}"])
    lines.append(f"longest single sequence: {p.max_len} tokens (model context {p.model_max_len})")
    lines.append("  context  sequences at once")
    for length, n in p.concurrency:
        capped = "  (max_seqs cap)" if n == p.max_seqs else ""
        lines.append(f"  {length:>7}  {n:>17}{capped}")
    return "\n".join(lines)


# --- where shapes come from ---------------------------------------------------------------------------

def builtin_shapes() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in resources.files("leanserve.shapes").iterdir()
                  if p.name.endswith(".json"))


def read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FitError(f"cannot read {path}: {exc}", param="model") from exc


def load_shape(model: str | None, home: Path) -> tuple[ModelShape, Path | None]:
    """(shape, model directory or None): 'shape:NAME' (shipped), a config.json, a local HF directory,
    or any model `serve --model` takes (the default is pulled on first use)."""
    if model and model.startswith(SHAPE_PREFIX):
        name = model.removeprefix(SHAPE_PREFIX)
        if name not in builtin_shapes():
            raise FitError(f"unknown shape {name!r}; shipped shapes: {', '.join(builtin_shapes())}", param="model")
        text = resources.files("leanserve.shapes").joinpath(f"{name}.json").read_text()
        return ModelShape.from_config(json.loads(text), model), None
    if model and Path(model).expanduser().is_file():
        path = Path(model).expanduser()
        return ModelShape.from_config(read_config(path), path.parent.name or str(path)), None
    from leanserve import models

    directory = models.resolve(model, home)
    return ModelShape.from_config(read_config(directory / "config.json"), model or models.DEFAULT_MODEL), directory


def artifact_weights(directory: Path) -> int | None:
    """Bytes of a built artifact's weight files, safetensors or GGUF (None when there are none)."""
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.gguf") for f in directory.glob(pattern)) or None


def plan_for(model: str | None, spec: ProfileSpec, budget: int, home: Path, **kwargs: Any) -> Plan:
    """Plan from whatever `model` names; a built artifact's config and bytes win over the estimate."""
    from leanserve import models
    from leanserve.profiles.store import artifact_dir, read_manifest

    shape, directory = load_shape(model, home)
    weights = None
    if directory is not None and spec.needs_artifact:
        built = artifact_dir(home, model or models.DEFAULT_MODEL, spec.name)
        if read_manifest(built) is not None:
            shape = ModelShape.from_config(read_config(built / "config.json"), shape.name)
            weights = artifact_weights(built)
    return plan(shape, spec, budget, weights=weights, **kwargs)


# --- a layer split for llama.cpp (GGUF): which blocks go to the GPU, the rest stay on the CPU --------------
#
# llama.cpp offloads the *last* n_gpu_layers repeating blocks (layers n_layer - n_gpu_layers ... n_layer - 1),
# keeps each offloaded block's KV cache beside it (offload_kqv, the default), never offloads the token
# embeddings (the input layer), and moves the output head only when n_gpu_layers > n_layer. So the plan
# takes the fixed GPU costs first, then blocks from the last one down, then the head if every block fit.

def llamacpp_compute_bytes(shape: ModelShape, n_batch: int, context: int) -> int:
    """llama.cpp's GPU compute buffer for n_batch tokens (an estimate): f32 activations as for vLLM, the
    attention scores without flash attention (n_batch x context x heads in f32), and one batch of logits."""
    return (activation_bytes(shape, n_batch, 0, 4) + n_batch * context * shape.heads * 4
            + n_batch * shape.vocab * 4)


@dataclass(frozen=True)
class LayerWeights:
    """A model's weight bytes by where llama.cpp places them."""

    per_layer: list[int]  # each repeating block (its matrices and norms)
    output: int  # output head and final norm: on the GPU only when every block is
    embeddings: int  # token embeddings: always on the CPU
    source: str  # "gguf" (the file's tensor table) or "estimate" (shape x the profile's bits)


def estimated_layer_weights(shape: ModelShape, spec: ProfileSpec, dtype_bytes: int = 2) -> LayerWeights:
    """Per-block bytes from the profile's method (`block_bytes`, as weight_bytes uses), norms in f32 as GGUF
    stores them; embeddings and head in 16 bit (k-quant files store them smaller: this errs high)."""
    shape = profile_shape(shape, spec)
    block = float(sum(a * b for a, b in shape.layer_linears()) * dtype_bytes)
    for name, params in ((spec.load_quant, spec.runtime_params), (spec.build, spec.build_params)):
        method = _method(name)
        if method is not None and hasattr(method, "block_bytes"):
            block = method.block_bytes(shape.layer_linears(), params)
            break
    embeddings = shape.vocab * shape.hidden * dtype_bytes
    return LayerWeights(per_layer=[int(block) + 2 * shape.hidden * 4] * shape.layers,
                        output=embeddings + shape.hidden * 4, embeddings=embeddings, source="estimate")


def read_gguf(file: Path) -> tuple[ModelShape, LayerWeights]:
    """The shape (from the file's `<arch>.*` metadata) and exact tensor bytes by placement of a GGUF file."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(file))
    except (OSError, ValueError) as exc:
        raise FitError(f"cannot read {file} as GGUF: {exc}", param="model") from exc

    def field(key: str, default: Any = None) -> Any:
        f = reader.get_field(key)
        return f.contents() if f is not None else default

    arch = field("general.architecture", "llama")
    heads = field(f"{arch}.attention.head_count")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    config = {"hidden_size": field(f"{arch}.embedding_length"), "intermediate_size": field(f"{arch}.feed_forward_length"),
              "num_hidden_layers": field(f"{arch}.block_count"), "num_attention_heads": heads,
              "num_key_value_heads": field(f"{arch}.attention.head_count_kv", heads),
              "head_dim": field(f"{arch}.attention.key_length"),
              "vocab_size": field(f"{arch}.vocab_size", len(tokens.data) if tokens is not None else None),
              "max_position_embeddings": field(f"{arch}.context_length"),
              "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors)}
    shape = ModelShape.from_config(config, file.name)
    per_layer, output, embeddings = [0] * shape.layers, 0, 0
    for t in reader.tensors:
        n = int(t.n_bytes)
        if t.name.startswith("blk."):
            per_layer[int(t.name.split(".")[1])] += n
        elif t.name.startswith("token_embd."):
            embeddings += n
        else:  # output.weight, output_norm.weight, rope factors
            output += n
    if shape.tied_embeddings:  # llama.cpp loads a copy of the embeddings as the head, where the head goes
        output += embeddings
    return shape, LayerWeights(per_layer=per_layer, output=output, embeddings=embeddings, source="gguf")


@dataclass(frozen=True)
class LayerSplit:
    """Blocks on the GPU under a budget, and what stays on the CPU; n_gpu_layers is what llama.cpp is told."""

    model: str
    profile: str
    budget: int
    layers: int
    gpu_layers: int  # repeating blocks offloaded (the last ones)
    output_on_gpu: bool
    runtime_overhead: int
    compute: int
    kv_tokens: int  # positions of KV cache in all (context x sequences)
    kv_per_layer: int
    gpu_weights: int
    gpu_kv: int
    cpu_weights: int
    cpu_kv: int
    weights_source: str
    smallest_layer: int  # bytes of the cheapest block with its KV (the first one to offload needs this much)

    @property
    def n_gpu_layers(self) -> int:
        return self.gpu_layers + (1 if self.output_on_gpu else 0)

    @property
    def gpu_bytes(self) -> int:
        return self.runtime_overhead + self.compute + self.gpu_weights + self.gpu_kv

    @property
    def fits(self) -> bool:
        return self.gpu_layers > 0

    def reason(self) -> str:
        """Why no block fits (empty when one does)."""
        if self.fits:
            return ""
        fixed = self.runtime_overhead + self.compute
        if fixed >= self.budget:
            return (f"runtime {format_bytes(self.runtime_overhead)} + compute buffer {format_bytes(self.compute)} = "
                    f"{format_bytes(fixed)} exceed the {format_bytes(self.budget)} budget before any layer; "
                    "serve on the CPU (--device cpu) or give a larger budget")
        return (f"one layer with its KV cache for {self.kv_tokens} tokens needs {format_bytes(self.smallest_layer)}, "
                f"more than the {format_bytes(self.budget - fixed)} left after runtime and compute buffer; "
                "lower --max-model-len (the KV cache grows with it), serve on the CPU (--device cpu), "
                "or give a larger budget")

    def to_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out.update(n_gpu_layers=self.n_gpu_layers, gpu_bytes=self.gpu_bytes, fits=self.fits, reason=self.reason())
        return out


def split_layers(shape: ModelShape, weights: LayerWeights, budget: int, *, context: int, sequences: int,
                 n_batch: int, kv_dtype_bytes: int = 2, runtime_overhead: int = RUNTIME_OVERHEAD_BYTES,
                 profile: str = "") -> LayerSplit:
    """As many of the last blocks as fit in `budget` after the runtime and the compute buffer, each with its
    KV cache for context x sequences positions; then the output head if every block fit."""
    kv_tokens = context * sequences
    kv_layer = kv_tokens * 2 * shape.kv_heads * shape.head_dim * kv_dtype_bytes
    compute = llamacpp_compute_bytes(shape, n_batch, context)
    free = budget - runtime_overhead - compute
    used, n = 0, 0
    for block in reversed(weights.per_layer):
        if used + block + kv_layer > free:
            break
        used, n = used + block + kv_layer, n + 1
    head = n == len(weights.per_layer) and used + weights.output <= free
    gpu_weights = used - n * kv_layer + (weights.output if head else 0)
    total = sum(weights.per_layer) + weights.output + weights.embeddings
    return LayerSplit(model=shape.name, profile=profile, budget=budget, layers=len(weights.per_layer), gpu_layers=n,
                      output_on_gpu=head, runtime_overhead=runtime_overhead, compute=compute, kv_tokens=kv_tokens,
                      kv_per_layer=kv_layer, gpu_weights=gpu_weights, gpu_kv=n * kv_layer,
                      cpu_weights=total - gpu_weights, cpu_kv=(len(weights.per_layer) - n) * kv_layer,
                      weights_source=weights.source,
                      smallest_layer=min(weights.per_layer, default=0) + kv_layer)


def render_split(s: LayerSplit) -> str:
    """The split as a few lines: how many layers on each side, and the bytes on each."""
    head = "the output head on the GPU" if s.output_on_gpu else "the output head on the CPU"
    under = f" under {s.profile}" if s.profile else ""
    lines = [
        f"{s.model}{under} on llama.cpp in {format_bytes(s.budget)} "
        f"(KV for {s.kv_tokens} tokens, {format_bytes(s.kv_per_layer)} per layer; weights: {s.weights_source}):",
        f"  {s.gpu_layers} of {s.layers} layers on the GPU, {s.layers - s.gpu_layers} on the CPU; {head}, "
        f"token embeddings on the CPU (n_gpu_layers {s.n_gpu_layers})",
        f"  GPU {format_bytes(s.gpu_bytes):>10}  = runtime {format_bytes(s.runtime_overhead)} + compute "
        f"{format_bytes(s.compute)} + weights {format_bytes(s.gpu_weights)} + KV {format_bytes(s.gpu_kv)}",
        f"  CPU {format_bytes(s.cpu_weights + s.cpu_kv):>10}  = weights {format_bytes(s.cpu_weights)} + KV "
        f"{format_bytes(s.cpu_kv)}",
    ]
    if not s.fits:
        lines.append(f"no layer fits: {s.reason()}")
    return "\n".join(lines)


def layer_split_for(model: str | None, spec: ProfileSpec, budget: int, home: Path, *, context: int | None = None,
                    kv_dtype_bytes: int = 2) -> LayerSplit:
    """The llamacpp engine's split for whatever `model` names: a .gguf file or a built GGUF artifact is read
    (exact bytes per layer), anything else is estimated from its shape and the profile; the context and the
    sequences are the engine's (its default context unless `context` is given)."""
    from leanserve import models
    from leanserve.engines import llamacpp
    from leanserve.profiles.store import artifact_dir, read_manifest

    path = Path(model).expanduser() if model else None
    built: Path | None = None
    if path is not None and path.is_file() and path.suffix == ".gguf":
        built = path
    elif spec.needs_artifact and not (model and model.startswith(SHAPE_PREFIX)):
        directory = artifact_dir(home, model or models.DEFAULT_MODEL, spec.name)
        if read_manifest(directory) is not None and any(directory.glob("*.gguf")):
            built = llamacpp.gguf_file(directory)
    if built is not None:
        shape, weights = read_gguf(built)
    else:
        shape = load_shape(model, home)[0]
        weights = estimated_layer_weights(shape, spec)
    ctx = min(context or llamacpp.DEFAULT_CONTEXT, shape.max_position)
    served_as = "" if built is not None and built == path else spec.name  # a .gguf --model is served as it is
    return split_layers(shape, weights, budget, context=ctx, sequences=llamacpp.SEQUENCES, n_batch=llamacpp.N_BATCH,
                        kv_dtype_bytes=kv_dtype_bytes, profile=served_as)
