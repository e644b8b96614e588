"""Locust users that chat with a leanserve (or any OpenAI-compatible) server over streaming SSE.

Each request is one Locust entry for the whole streamed response (POST /v1/chat/completions), plus
three entries of our own fired through `environment.events.request`, so Locust's console stats,
CSV files and web UI show them beside it:
  TTFT  "time to first token"          ms from sending to the first content chunk
  ITL   "inter-token latency"          ms between tokens, the request's mean (decode time / (tokens - 1))
  TPS   "output tokens/s (value)"      the request's output tokens per second, in the "ms" columns
With --records FILE every request is also appended as one JSON line, from which `leanserve loadtest`
computes its exact percentiles and the over-time plot.

Run it by hand:  locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --api-key KEY
Options (also environment variables): --prompt-tokens / LEANSERVE_LT_PROMPT_TOKENS and
--answer-tokens / LEANSERVE_LT_ANSWER_TOKENS take fixed:N, uniform:LO:HI, normal:MEAN:SD or
lognormal:MEDIAN:SIGMA; --model, --api-key, --temperature, --think-time, --ignore-eos, --records.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from locust import HttpUser, between, constant, events, task

from leanserve.loadtest import lengths
from leanserve.loadtest.lengths import Lengths

WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name").split()
CHAT_PATH = "/v1/chat/completions"
TTFT, ITL, TPS = "TTFT", "ITL", "TPS"
TTFT_NAME, ITL_NAME, TPS_NAME = "time to first token", "inter-token latency", "output tokens/s (value)"


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--prompt-tokens", env_var="LEANSERVE_LT_PROMPT_TOKENS", default=lengths.DEFAULT,
                        help="Prompt length distribution in words (about one token each)")
    parser.add_argument("--answer-tokens", env_var="LEANSERVE_LT_ANSWER_TOKENS", default=lengths.DEFAULT,
                        help="max_tokens distribution for the answers")
    parser.add_argument("--model", env_var="LEANSERVE_LT_MODEL", default="",
                        help="Model name to send (default: the first of GET /v1/models)")
    parser.add_argument("--api-key", env_var="LEANSERVE_API_KEY", default="", is_secret=True,
                        help="Bearer key, if the server was started with --api-key")
    parser.add_argument("--temperature", env_var="LEANSERVE_LT_TEMPERATURE", type=float, default=0.7)
    parser.add_argument("--think-time", env_var="LEANSERVE_LT_THINK_TIME", type=float, default=0.0,
                        help="Each user waits uniformly 0..this many seconds between requests (0: closed loop)")
    parser.add_argument("--ignore-eos", env_var="LEANSERVE_LT_IGNORE_EOS", default="true",
                        help="true: generate exactly max_tokens (vLLM's extension), so answer lengths follow the distribution")
    parser.add_argument("--records", env_var="LEANSERVE_LT_RECORDS", default="", include_in_web_ui=False,
                        help="Append one JSON line per request to this file")


@events.test_start.add_listener
def _check_options(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is not None:  # fail at once on a bad distribution, not in every user
        Lengths.parse(opts.prompt_tokens), Lengths.parse(opts.answer_tokens)


def _prompt(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(max(1, words - 8)))
    return f"Write a story using these words: {body}"


class LLMUser(HttpUser):
    """One chat user: streams a completion, times its first token and the gaps after it."""

    abstract = True
    wait_time = constant(0)
    _model: str | None = None  # shared by every user once looked up

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.rng = random.Random()
        self.prompt_lengths = Lengths.parse(opts.prompt_tokens)
        self.answer_lengths = Lengths.parse(opts.answer_tokens)
        self.headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
        if opts.think_time > 0:
            self.wait_time = between(0, opts.think_time)
        if not (opts.model or LLMUser._model):
            with self.client.get("/v1/models", headers=self.headers, name="/v1/models", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"GET /v1/models: {r.status_code} {r.text[:200]}")
                    return
                LLMUser._model = r.json()["data"][0]["id"]

    def _fire(self, kind: str, name: str, value: float, length: int = 0) -> None:
        self.environment.events.request.fire(request_type=kind, name=name, response_time=value,
                                             response_length=length, exception=None, context={})

    def _record(self, rec: dict[str, Any]) -> None:
        path = self.environment.parsed_options.records
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    @task
    def chat(self) -> None:
        opts = self.environment.parsed_options
        max_tokens = self.answer_lengths.sample(self.rng)
        body = {
            "model": opts.model or LLMUser._model or "default",
            "messages": [{"role": "user", "content": _prompt(self.rng, self.prompt_lengths.sample(self.rng))}],
            "max_tokens": max_tokens, "temperature": opts.temperature, "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": str(opts.ignore_eos).lower() in ("1", "true", "yes"),
        }
        rec: dict[str, Any] = {"start": time.time(), "max_tokens": max_tokens, "ok": False}
        t0 = time.perf_counter()
        chunks: list[float] = []  # seconds since t0 of each chunk with content
        usage: dict[str, int] = {}
        with self.client.post(CHAT_PATH, json=body, headers=self.headers, stream=True, catch_response=True,
                              name=CHAT_PATH, timeout=600) as resp:
            try:
                if resp.status_code != 200:
                    raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:300]}")
                for line in resp.iter_lines(decode_unicode=True):
                    if not line or not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        raise RuntimeError(f"error event: {event['error']}")
                    if event.get("usage"):
                        usage = event["usage"]
                    if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                        chunks.append(time.perf_counter() - t0)
                if not chunks:
                    raise RuntimeError("the stream ended without any content")
            except Exception as exc:  # any failure is the request's failure, counted by Locust
                resp.failure(str(exc))
                rec.update(error=str(exc), e2e=time.perf_counter() - t0)
                resp.request_meta["response_time"] = rec["e2e"] * 1000
                self._record(rec)
                return
            e2e = time.perf_counter() - t0
            tokens = int(usage.get("completion_tokens") or len(chunks))
            # Locust timed the headers only (stream=True): report the whole stream, and output tokens as length
            resp.request_meta["response_time"] = e2e * 1000
            resp.request_meta["response_length"] = tokens
            resp.success()
        ttft = chunks[0]
        itl = (chunks[-1] - ttft) / (tokens - 1) if tokens > 1 else 0.0
        tps = tokens / e2e
        self._fire(TTFT, TTFT_NAME, ttft * 1000)
        if tokens > 1:
            self._fire(ITL, ITL_NAME, itl * 1000, tokens)
        self._fire(TPS, TPS_NAME, tps, tokens)
        rec.update(ok=True, ttft=ttft, e2e=e2e, itl=itl, output_tokens=tokens,
                   prompt_tokens=int(usage.get("prompt_tokens", 0)), chunks=[round(c, 4) for c in chunks])
        self._record(rec)


class ChatUser(LLMUser):
    """The user `leanserve loadtest` runs."""
