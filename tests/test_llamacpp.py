"""The llamacpp engine on a real q4_k_m GGUF of the default model, over HTTP with the openai client.

References are llama-cpp-python itself, in this process: its high-level `Llama` for greedy output, its
all-position logits for echo logprobs, its tokenizer for the prompt's ids.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from openai import OpenAI

from leanserve.engines.speed import Machine, load_table
from leanserve.engines.tokenizer import Tokenizer
from tests.conftest import MODEL
from tests.servers import API_KEY, Server, start_server
from tests.support import one, scrape, wait_until

pytestmark = pytest.mark.server

PROMPT = "The capital of France is"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
TOTALS = re.compile(r"totals: (\d+) decode calls, (\d+) tokens sampled, at most (\d+) sequences")


@pytest.fixture(scope="module")
def artifact(gguf_built) -> Path:  # noqa: ANN001
    return gguf_built("q4_k_m")


@pytest.fixture(scope="module")
def gguf(artifact: Path) -> Path:
    return next(artifact.glob("*.gguf"))


@pytest.fixture(scope="module")
def server(artifact: Path, gguf_home: Path):  # noqa: ANN201
    s = start_server("llamacpp", "q4_k_m", gguf_home)
    yield s
    s.stop()


@pytest.fixture()
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def llama(gguf: Path):  # noqa: ANN201
    """llama-cpp-python's high-level Llama on the same file, with the engine's context settings."""
    return _reference_llama(gguf, flash_attn=False, logits_all=True)


def _reference_llama(gguf: Path, **kwargs):  # noqa: ANN202
    """llama-cpp-python's `Llama` on `gguf` with the engine's context and thread settings."""
    from leanserve.engines.llamacpp_lib import load

    load()  # registers the CPU backend from llama_cpp/lib (see llamacpp_lib)
    from llama_cpp import Llama

    threads = psutil.cpu_count(logical=False) or 1
    return Llama(str(gguf), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                 verbose=False, **kwargs)


def _greedy(llama, ids: list[int], n: int) -> list[int]:  # noqa: ANN001
    """The first `n` tokens llama-cpp-python itself generates greedily after `ids`."""
    expected: list[int] = []
    for token in llama.generate(ids, temp=0.0, top_k=1, reset=True):
        expected.append(token)
        if len(expected) == n:
            break
    return expected


def _log_softmax(row) -> np.ndarray:  # noqa: ANN001
    row = np.asarray(row, dtype=np.float64)
    return row - row.max() - np.log(np.exp(row - row.max()).sum())


def _assert_same_greedy_up_to_a_tie(got: list[str], logprobs: list[float], tops: list[dict[str, float]],
                                    expected: list[int], llama, n_prompt: int,  # noqa: ANN001
                                    tokenizer: Tokenizer, margin: float = 0.5) -> None:
    """The engine's greedy tokens and their logprobs are llama.cpp's own, to within `margin` nats, and where
    the two pick different tokens both rank them within `margin` of each other (a tie); the texts part there
    and nothing after it is compared. The margin is measured: KV computed in other batch shapes (a kept
    prefix decoded a token at a time, then the rest in one batch) moved the top-50 logprobs of the next token
    by up to 0.46 nats on this chat with q4_k_m (2-core AMD EPYC with AVX512-VNNI, 2026-12-02), against one
    batch of the whole prompt, and turned a 0.17-nat lead into a deficit. `llama` has just generated
    `expected` with logits_all (its scores row i predicts token i+1); `tops` are the engine's top-2 logprobs."""
    want = tokenizer.token_strings(expected)
    rows = [_log_softmax(llama.scores[n_prompt - 1 + i]) for i in range(len(expected))]
    k = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), len(want))
    for i in range(k):
        assert abs(logprobs[i] - rows[i][expected[i]]) < margin, (i, got, logprobs[i], rows[i][expected[i]])
    if k == len(want):
        return
    ours = tops[k]
    assert want[k] in ours and ours[got[k]] - ours[want[k]] < margin, (k, got, want, ours)
    top2 = np.argsort(rows[k])[-2:][::-1]
    theirs = dict(zip(tokenizer.token_strings([int(t) for t in top2]), rows[k][top2], strict=True))
    assert got[k] in theirs and theirs[want[k]] - theirs[got[k]] < margin, (k, got, want, theirs)


@pytest.fixture(scope="module")
def tokenizer(artifact: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(str(artifact))


def test_hf_and_llama_cpp_tokenizers_agree_on_the_france_prompt(llama, tokenizer: Tokenizer) -> None:  # noqa: ANN001
    chat = tokenizer.apply_chat_template(FRANCE)
    text = tokenizer._tok.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=False)
    assert llama.tokenize(text.encode(), add_bos=False, special=True) == chat
    assert llama.tokenize(PROMPT.encode(), add_bos=False) == tokenizer.encode(PROMPT)


def test_greedy_output_equals_llama_cpp_pythons_own(client: OpenAI, llama, tokenizer: Tokenizer) -> None:  # noqa: ANN001
    n = 48
    llama.reset()
    expected = _greedy(llama, tokenizer.encode(PROMPT), n)
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=n, temperature=0, logprobs=0,
                                  extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == n
    assert r.choices[0].logprobs.tokens == tokenizer.token_strings(expected)
    assert r.choices[0].text == tokenizer.decode(expected)


def test_the_next_turn_of_a_chat_reuses_the_kv_of_the_first(client: OpenAI, server: Server, llama,  # noqa: ANN001
                                                             tokenizer: Tokenizer) -> None:
    """The second turn's prompt starts with the first turn's: the engine gives it the sequence that holds
    that KV, says so in usage.prompt_tokens_details.cached_tokens, and answers what llama.cpp computes
    from the whole prompt."""
    system = [{"role": "system", "content": "You are a terse geography tutor. Answer in one sentence."}]
    lab = {"profile": "q4_k_m", "model": MODEL}
    counted = one(scrape(server), "leanserve_prompt_tokens_cached_total", **lab)
    first = client.chat.completions.create(model=MODEL, messages=system + FRANCE, max_tokens=12, temperature=0)
    turn = [*system, *FRANCE, {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And the capital of Italy?"}]
    n = 12
    second = client.chat.completions.create(model=MODEL, messages=turn, max_tokens=n, temperature=0, logprobs=True,
                                            top_logprobs=2, extra_body={"ignore_eos": True})
    before, after = tokenizer.apply_chat_template(system + FRANCE), tokenizer.apply_chat_template(turn)
    shared = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), len(before))
    assert shared > 20  # the system prompt and the first question at least
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert shared <= cached < len(after) == second.usage.prompt_tokens
    first_cached = first.usage.prompt_tokens_details.cached_tokens
    assert one(scrape(server), "leanserve_prompt_tokens_cached_total", **lab) - counted == first_cached + cached
    llama.reset()
    expected = _greedy(llama, after, n)
    content = second.choices[0].logprobs.content
    _assert_same_greedy_up_to_a_tie([t.token for t in content], [t.logprob for t in content],
                                    [{a.token: a.logprob for a in t.top_logprobs} for t in content],
                                    expected, llama, len(after), tokenizer)
    # a prompt that shares nothing with any kept KV is computed whole
    fresh = client.completions.create(model=MODEL, prompt="Zebras", max_tokens=1)
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0


def test_flash_attention_serves_what_llama_cpp_computes_with_it(gguf: Path, gguf_home: Path,
                                                                tokenizer: Tokenizer) -> None:
    """`--flash-attn` is on in llama.cpp for real: greedy output equals llama-cpp-python's own with it on,
    and the log says so. (Off, the module's server matches the flash-attention-off reference above.)"""
    n = 32
    fa = _reference_llama(gguf, flash_attn=True)
    expected = _greedy(fa, tokenizer.encode(PROMPT), n)
    del fa
    server = start_server("llamacpp", "q4_k_m", gguf_home, "--flash-attn")
    try:
        c = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300)
        r = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=n, temperature=0, logprobs=0,
                                 extra_body={"ignore_eos": True})
        assert r.choices[0].logprobs.tokens == tokenizer.token_strings(expected)
        assert "flash attention on" in server.log_text()
    finally:
        server.stop()


def test_flash_attention_is_refused_by_an_engine_without_it(gguf_home: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "leanserve.cli", "serve", "--engine", "transformers", "--home",
                        str(gguf_home), "--port", "0", "--flash-attn"], capture_output=True, text=True, timeout=300)
    out = " ".join((r.stdout + r.stderr).split())  # the console wraps long lines
    assert r.returncode == 2, out[-3000:]
    assert "--flash-attn is a llamacpp setting" in out and "served by transformers" in out


def test_echo_logprobs_equal_an_in_process_computation(client: OpenAI, llama, tokenizer: Tokenizer) -> None:  # noqa: ANN001
    ids = tokenizer.encode(PROMPT)
    llama.reset()
    llama.eval(ids)
    logits = np.asarray(llama.scores[: len(ids)], dtype=np.float64)  # [S, V], row i predicts token i+1
    logprobs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    expected = [float(logprobs[i - 1, t]) for i, t in enumerate(ids) if i > 0]
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1, temperature=0)
    got = r.choices[0].logprobs.token_logprobs
    assert got[0] is None and len(got) == len(ids)
    assert np.allclose(got[1:], expected, atol=1e-3), (got, expected)
    # aligned: " of" is the model's top choice after "The capital" (llama_cpp.server is one position off here)
    assert list(r.choices[0].logprobs.top_logprobs[2]) == [" of"]


def test_the_shared_sampler_controls_apply(client: OpenAI, server: Server) -> None:
    """Structured output, logit_bias and top_k go through the same Slot as on the transformers engine."""
    import json

    schema = {"type": "object", "required": ["city", "country"], "additionalProperties": False,
              "properties": {"city": {"type": "string"}, "country": {"type": "string"}}}
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=60, temperature=1.0, seed=3,
                                       response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert set(json.loads(r.choices[0].message.content)) == {"city", "country"}
    ask = dict(model=MODEL, messages=FRANCE, max_tokens=8, logprobs=True)
    greedy = client.chat.completions.create(**ask, temperature=0).choices[0]
    top1 = client.chat.completions.create(**ask, temperature=1.0, seed=5, extra_body={"top_k": 1}).choices[0]
    assert top1.message.content == greedy.message.content
    first = greedy.logprobs.content[0].token
    (tid,) = httpx.post(f"{server.base_url}/tokenize", headers={"Authorization": f"Bearer {API_KEY}"},
                        json={"prompt": first}).json()["tokens"]
    biased = client.chat.completions.create(**ask, temperature=0, logit_bias={str(tid): -100}).choices[0]
    assert biased.logprobs.content[0].token != first


def test_a_streamed_forced_tool_call_is_assembled_by_the_client(client: OpenAI) -> None:
    """Tool calls go through the same routes and grammar on this engine: the client's stream helper
    assembles the deltas into a call whose arguments validate."""
    import json

    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}}
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                        tools=[weather], tool_choice="required", parallel_tool_calls=False,
                                        max_tokens=60, temperature=0) as s:
        for _ in s:
            pass
        (c,) = s.get_final_completion().choices
    assert c.finish_reason == "tool_calls", c.message
    (call,) = c.message.tool_calls
    assert call.function.name == "get_weather" and set(json.loads(call.function.arguments)) == {"city"}


def _freed_totals(server: Server, request_id: str) -> tuple[int, int, int]:
    """The engine's totals on the line that freed this request's sequence, once it is logged. The engine
    frees a sequence in the same step that sends its last token, before it admits anything new, so the
    line of a request sent after all others finished holds totals that count all of those."""
    pattern = re.compile(re.escape(request_id) + r"-0 .*?freed after.*?" + TOTALS.pattern)
    found = wait_until(lambda: pattern.search("".join(server.log)), what=f"the freed line of {request_id}",
                       deadline_s=60)
    return tuple(map(int, found.groups()))  # type: ignore[return-value]


def _freed_seq(server: Server, request_id: str) -> int:
    """The sequence the engine gave this request, from the line that freed it, once it is logged."""
    pattern = re.compile(re.escape(request_id) + r"-0 \w+: seq (\d+) freed")
    found = wait_until(lambda: pattern.search("".join(server.log)), what=f"the freed line of {request_id}",
                       deadline_s=60)
    return int(found.group(1))


def test_eight_concurrent_streams_complete_and_are_batched(client: OpenAI, server: Server) -> None:
    n_streams, n_tokens = 8, 32
    mark = client.completions.create(model=MODEL, prompt="Before:", max_tokens=1)
    calls_before, sampled_before, _ = _freed_totals(server, mark.id)
    start = threading.Barrier(n_streams)
    results: dict[int, tuple[int, str | None]] = {}
    ids: dict[int, str] = {}

    def stream(i: int) -> None:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300)
        start.wait()
        chunks = list(client.completions.create(model=MODEL, prompt=f"Story number {i}:", max_tokens=n_tokens,
                                                temperature=0.8, seed=i, stream=True, extra_body={"ignore_eos": True},
                                                stream_options={"include_usage": True}))
        usage = next(c.usage for c in chunks if c.usage)
        reason = next((c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None)
        results[i] = (usage.completion_tokens, reason)
        ids[i] = chunks[0].id

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(n_streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == {i: (n_tokens, "length") for i in range(n_streams)}
    # the last line freed carries the largest totals (they only grow)
    calls, sampled, peak = max(_freed_totals(server, rid) for rid in ids.values())
    assert sampled - sampled_before == n_streams * n_tokens
    assert calls - calls_before < (sampled - sampled_before) / 2, "decode steps should carry several sequences each"
    assert peak >= 4


def test_a_request_admitted_among_generating_ones_is_decoded_right_and_next_to_them(
        client: OpenAI, server: Server, llama, tokenizer: Tokenizer) -> None:  # noqa: ANN001
    """A prompt that arrives while other streams generate is prefilled in the same batches as their tokens
    (each step sorted by sequence): its greedy answer is still llama.cpp's own. And it is given a sequence
    next to theirs, so the live ids stay consecutive (one llama.cpp pass a step), even though a short
    request just released a sequence and taking the one released longest ago (LRU alone) would leave a gap."""
    n_streams, n = 2, 12
    ids: dict[int, str] = {}
    threads: list[threading.Thread] = []

    def stream(i: int, started: threading.Event) -> None:
        c = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300)
        for chunk in c.completions.create(model=MODEL, prompt=f"A list of {i + 3} rivers:", max_tokens=96,
                                          temperature=0.7, seed=i, stream=True, extra_body={"ignore_eos": True}):
            ids.setdefault(i, chunk.id)
            started.set()

    for i in range(n_streams):  # one after the other, so each is admitted beside the ones before
        started = threading.Event()
        threads.append(threading.Thread(target=stream, args=(i, started)))
        threads[-1].start()
        assert started.wait(120), "a background stream did not start"
    short = client.completions.create(model=MODEL, prompt="Name a colour:", max_tokens=1)
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=n, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    for t in threads:
        t.join(300)
    llama.reset()
    prompt = tokenizer.encode(PROMPT)
    lp = r.choices[0].logprobs
    _assert_same_greedy_up_to_a_tie(lp.tokens, lp.token_logprobs, lp.top_logprobs, _greedy(llama, prompt, n), llama,
                                    len(prompt), tokenizer)
    live = sorted(_freed_seq(server, rid) for rid in [*ids.values(), r.id])
    assert live == list(range(live[0], live[0] + n_streams + 1)), (live, _freed_seq(server, short.id))


def test_disconnect_frees_the_sequence(server: Server) -> None:
    body = {"model": MODEL, "prompt": "Write a very long essay about the sea.", "max_tokens": 900, "temperature": 1.0,
            "seed": 1, "stream": True, "ignore_eos": True}
    lab = {"profile": "q4_k_m", "model": MODEL}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as r:
        lines = r.iter_lines()
        assert any(next(lines).startswith("data: ") for _ in range(6))
    deadline = time.monotonic() + 60
    while not re.search(r"cancelled: seq \d+ freed after \d+ prompt \+ (\d+) generated", "".join(server.log)):
        assert time.monotonic() < deadline, "the sequence was not freed after the client left:\n" + server.log_text()
    generated = int(re.findall(r"cancelled: seq \d+ freed after \d+ prompt \+ (\d+) generated", "".join(server.log))[-1])
    assert generated < 450
    while one(scrape(server), "leanserve_requests_running", **lab) != 0:
        assert time.monotonic() < deadline


def test_memory_reports_weights_and_kv_cache(server: Server, gguf: Path) -> None:
    samples = scrape(server)
    weights = one(samples, "leanserve_memory_bytes", kind="weights")
    kv = one(samples, "leanserve_memory_bytes", kind="kv_cache")
    assert 0.5 * gguf.stat().st_size < weights <= gguf.stat().st_size
    assert kv == 8 * 1024 * 30 * 2 * 3 * 64 * 2  # sequences x context x layers x (K, V) x kv heads x head dim x f16


def test_a_bare_gguf_file_serves_directly(gguf: Path, tmp_path: Path, gguf_home: Path, tokenizer: Tokenizer,
                                          client: OpenAI) -> None:
    alone = tmp_path / "smollm2-q4_k_m.gguf"
    shutil.copy(gguf, alone)  # no tokenizer.json beside it: the tokenizer comes from the file's metadata
    server = start_server("llamacpp", "bf16", gguf_home, "--model", str(alone))
    try:
        bare = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
        answer = bare.chat.completions.create(model=alone.name, max_tokens=24, temperature=0, messages=FRANCE)
        # the chat template comes from the file too: the prompt is the one tokenizer.json's template renders,
        # and the greedy answer is the artifact directory's (same weights; the France answer's first token is
        # a near-tie for this model, so the text itself is not asserted)
        assert answer.usage.prompt_tokens == len(tokenizer.apply_chat_template(FRANCE))
        same = client.chat.completions.create(model=MODEL, max_tokens=24, temperature=0, messages=FRANCE)
        assert answer.choices[0].message.content == same.choices[0].message.content
        assert "France" in answer.choices[0].message.content
    finally:
        server.stop()


def _serve(model: Path, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leanserve.cli", "serve", "--model", str(model), "--home", str(home),
                           "--port", "0"], capture_output=True, text=True, timeout=300)


def test_a_non_gguf_file_is_refused_at_startup(tmp_path: Path, gguf_home: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"this is not a model\n" * 100)
    r = _serve(bad, gguf_home)
    assert r.returncode == 2 and "is not a GGUF file" in r.stdout + r.stderr


def test_a_truncated_gguf_gives_a_clear_startup_error(gguf: Path, tmp_path: Path, gguf_home: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf.read_bytes()[: gguf.stat().st_size // 3])
    r = _serve(cut, gguf_home)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]  # an error exit, not an abort (SIGABRT would be -6)
    assert "could not load the model" in out and "llama.cpp could not load" in out


def test_auto_serves_q4_k_m_on_llamacpp_and_says_why(artifact: Path, gguf_home: Path) -> None:
    server = start_server("auto", "q4_k_m", gguf_home)
    try:
        health = httpx.get(f"{server.base_url}/health").json()
        assert health["engine"] == "llamacpp"
        table = load_table()
        if table is not None and table.mismatch(Machine.here("cpu")) is None:  # the committed table holds here
            assert "fastest measured for q4_k_m here: llamacpp" in health["engine_reason"]
        assert f"engine=llamacpp ({health['engine_reason']})" in server.log_text()  # the startup log says it too
    finally:
        server.stop()


def test_a_server_started_for_an_eval_takes_prompts_longer_than_a_serving_context(
        server: Server, artifact: Path, gguf_home: Path, data: Path, tokenizer: Tokenizer) -> None:
    # llamacpp gives each sequence 2,048 tokens by default; 5-shot MMLU prompts reach ~2,700. The server that
    # `leanserve eval` starts for a GGUF profile (engine auto) gets EVAL_CONTEXT, so such a prompt is scored.
    from leanserve.evals.client import EvalClient, EvalHTTPError
    from leanserve.evals.runner import EVAL_CONTEXT, local_server

    text = (data / "wikitext-2" / "wiki.test.tokens").read_text()[:20_000]
    prompt = tokenizer.decode(tokenizer.encode(text)[:2_800])
    assert 2_048 < len(tokenizer.encode(prompt)) < EVAL_CONTEXT
    with EvalClient(server.base_url, MODEL, api_key=API_KEY, retries=0) as ev:
        with pytest.raises(EvalHTTPError, match=r"maximum context length is \d+ tokens"):  # this module's server
            ev.next_token_logprobs(prompt)
    with local_server("q4_k_m", model=None, engine="auto", home=gguf_home) as (url, key):
        with EvalClient(url, MODEL, api_key=key) as ev:
            top = ev.next_token_logprobs(prompt)
    assert len(top) == 20 and all(v <= 0 for v in top.values())
