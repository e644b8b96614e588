"""The gguf compressor job on the real default model: what its manifest records, that the file's
tokenizer metadata is what llama.cpp expects (compared with the default model's own GGUF), that
`compress` then `serve` answers, and that a killed or failing job leaves nothing that loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from leanserve import models
from leanserve.compressors.job import file_hashes
from tests.conftest import GGUF_SMALL, MODEL
from tests.servers import API_KEY, start_server
from tests.test_compressors import compress

pytestmark = pytest.mark.build

N_TENSORS = 272  # SmolLM2-135M: embeddings + 30 layers x 9 + the final norm (output tied to the embeddings)
TOKENIZER_KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                  "tokenizer.chat_template", "llama.rope.dimension_count", "llama.attention.head_count_kv"]


def _fields(path: Path) -> dict[str, object]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {k: reader.fields[k].contents() for k in TOKENIZER_KEYS if k in reader.fields}


def test_q4_k_m_manifest_records_source_quant_imatrix_types_and_sizes(gguf_built) -> None:  # noqa: ANN001
    path = gguf_built("q4_k_m")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["profile"] == "q4_k_m" and manifest["quant_type"] == "q4_k_m"
    assert manifest["source"]["profile"] == "bf16" and manifest["source"]["dir"].endswith(MODEL)
    imatrix = manifest["imatrix"]
    assert imatrix["calibration"]["name"] == "wikitext2-valid" and imatrix["calibration"]["samples"] == 4
    assert imatrix["calibration"]["seq_len"] == 256 and imatrix["tokens"] == 1024
    assert imatrix["tensors"] == 30 * 7  # q, k, v, o, gate, up, down in every layer
    types = manifest["tensor_types"]
    assert sum(types.values()) == N_TENSORS and types["F32"] == 61  # norms stay F32
    assert "Q4_K" in types or "Q5_K" in types or "Q6_K" in types  # some tensors did get k-quants...
    assert set(types) - {"F32", "Q4_K", "Q5_K", "Q6_K"}  # ...and width 576 sent others to fallback types
    gguf = path / manifest["gguf_file"]
    assert manifest["sizes"]["gguf_bytes"] == gguf.stat().st_size < manifest["sizes"]["intermediate_bytes"] / 4
    files = file_hashes(path)
    files.pop("manifest.json")
    assert files == manifest["files"] and not any(f.startswith(".intermediate") for f in files)
    assert {"tokenizer.json", "config.json", gguf.name} <= set(files)


def test_tokenizer_metadata_matches_the_default_models_own_gguf(gguf_built, tmp_path: Path) -> None:  # noqa: ANN001
    reference = models._installed_gguf() or models._download_gguf(tmp_path)
    path = gguf_built("q4_k_m")
    ours = _fields(next(path.glob("*.gguf")))
    theirs = _fields(reference)
    assert ours["tokenizer.ggml.pre"] == "smollm"
    assert ours == theirs


def test_compress_then_serve_answers_paris(gguf_built, gguf_home: Path) -> None:  # noqa: ANN001
    gguf_built("q4_k_m")
    server = start_server("llamacpp", "q4_k_m", gguf_home)
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
        answer = client.chat.completions.create(model=MODEL, max_tokens=24, temperature=0,
                                                messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in answer.choices[0].message.content
    finally:
        server.stop()


def test_q8_0_has_no_imatrix_and_is_mostly_q8(gguf_built) -> None:  # noqa: ANN001
    manifest = json.loads((gguf_built("q8_0") / "manifest.json").read_text())
    assert manifest["imatrix"] is None and manifest["quant_type"] == "q8_0"
    assert manifest["tensor_types"] == {"F32": 61, "Q8_0": N_TENSORS - 61}


def test_a_killed_job_leaves_nothing_that_loads(gguf_home: Path) -> None:
    cmd = [sys.executable, "-m", "leanserve.cli", "compress", "--profile", "q5_k_m", "--home", str(gguf_home),
           *GGUF_SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # until the job is writing its intermediate GGUF
        seen.append(line)
        if "gguf: converting" in line:
            break
    proc.kill()
    proc.wait()
    assert any("gguf: converting" in line for line in seen), "".join(seen[-20:])
    final = gguf_home / "artifacts" / MODEL / "q5_k_m"
    assert not final.exists()
    r = subprocess.run([sys.executable, "-m", "leanserve.cli", "serve", "--profile", "q5_k_m", "--home", str(gguf_home)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "has no artifact" in r.stdout + r.stderr


def test_bad_params_and_unbuilt_sources_are_refused(gguf_home: Path) -> None:
    r = compress(gguf_home, "q8_0", "--param", "quant=q3_k_s", "--force")
    assert r.returncode == 2 and "quant" in r.stdout + r.stderr
    r = compress(gguf_home, "q8_0", "--param", "source=pruned", "--force")
    assert r.returncode == 2 and "leanserve compress --profile pruned" in r.stdout + r.stderr
    r = compress(gguf_home, "q8_0", "--param", "source=gptq-4", "--force")
    assert r.returncode == 2 and "not a dense built profile" in r.stdout + r.stderr
