"""Fuzzing the generation routes with schemathesis, from the server's own /openapi.json (every engine).

Cases are drawn from the request schemas, valid ones (positive) and ones that break them (negative),
and sent to a real server. Checks: never a 5xx; every status and content type is one the schema
declares; JSON bodies match the declared response schema; schema-breaking input gets a 4xx. Bounded:
EXAMPLES cases per route, derandomized (the same cases every run, so CI failures reproduce).
Generated values that would make generation slow are tamed (see `_tame`); what is sent stays a case
the schema produced. Afterwards the server must still answer a normal request.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import MODEL
from tests.servers import API_KEY, Server

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 50
MAX_TOKENS = 4  # generated max_tokens above this are lowered: the fuzzer is after the API, not the model
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
ROUTES = ["/v1/chat/completions", "/v1/completions"]
# refused whatever their value (protocol.REFUSED), and ones whose drawn values make generation slow or random
UNSUPPORTED = ("suffix", "audio", "modalities", "prediction", "functions", "function_call", "web_search_options",
               "reasoning_effort", "verbosity", "service_tier", "best_of", "response_format", "tools",
               "tool_choice", "logit_bias", "stop_token_ids")
INTEGERS = ("n", "max_tokens", "max_completion_tokens", "seed", "logprobs", "top_logprobs")


def _tame(case: schemathesis.Case, use_served_model: bool) -> None:
    """Keep a drawn body cheap to serve without making an invalid one valid: lower only integer
    max_tokens that are already valid and large, add a small max_tokens to chats that have none (the
    default is the rest of the context). For half the valid (positive) cases, name the served model and
    drop the fields this server refuses by design, so that generation, not only a 4xx, is reached."""
    body = case.body
    if not isinstance(body, dict):
        return
    positive = not case.meta.generation.mode.is_negative
    if positive:
        for key in INTEGERS:  # JSON Schema calls 3.0 an integer; this server, like OpenAI, does not
            if isinstance(body.get(key), float) and body[key].is_integer():
                body[key] = int(body[key])
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS:
            body[key] = MAX_TOKENS
    if "messages" in body and body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_TOKENS  # (null is absent too: the default is the rest of the context)
    if not positive:
        return
    if isinstance(body.get("n"), int):
        body["n"] = min(body["n"], 2)
    if use_served_model:
        body["model"] = MODEL
        for key in UNSUPPORTED:
            body.pop(key, None)
        for m in body.get("messages") or []:  # what the schema cannot say: only tool messages answer a call
            if isinstance(m, dict):
                m.pop("tool_calls", None)
                m.pop("tool_call_id", None)
                if m.get("role") == "tool":
                    m["role"] = "user"


@pytest.mark.parametrize("route", ROUTES)
def test_fuzz_route(server: Server, route: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", headers=AUTH, timeout=30)
    operation = schema[route]["POST"]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    seen: dict[int, int] = {}
    answers: list[str] = []

    # no shrinking: a failure is reported as drawn (schemathesis prints the request), and CI time stays bounded
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=cases, use_served_model=st.booleans())
    def fuzz(case: schemathesis.Case, use_served_model: bool) -> None:
        _tame(case, use_served_model)
        response = case.call(base_url=server.base_url, headers=AUTH, timeout=120)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        answers.append(f"{response.status_code} {case.meta.generation.mode.name} {response.text[:120]}")
        case.validate_response(response, checks=CHECKS, headers=AUTH)

    try:
        fuzz()
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- server log ---\n{server.log_text()}") from exc
    assert sum(seen.values()) >= EXAMPLES, seen
    assert not any(code >= 500 for code in seen), seen
    assert 200 in seen and 400 in seen, f"the fuzzer should reach generation and validation: {seen}\n" + "\n".join(answers)
    r = httpx.post(f"{server.base_url}/v1/chat/completions", headers=AUTH, timeout=120,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("route", "extra"),
    [
        # each of these once answered 500 or stopped the engine; kept as fixed regressions
        ("/v1/chat/completions", {"temperature": 1e-300}),  # logits / 1e-300 = inf: NaN probabilities
        ("/v1/chat/completions", {"temperature": 5e-324, "top_p": 5e-324}),  # subnormal floats
        ("/v1/completions", {"top_p": 5e-324}),
        ("/v1/completions", {"temperature": 2.0, "top_p": 1e-10}),
    ],
)
def test_fuzz_regressions_answer_greedily(server: Server, route: str, extra: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 4, "seed": 1, **extra}
    body.update({"messages": [{"role": "user", "content": "Say hi"}]} if "chat" in route else {"prompt": "Hello"})
    r = httpx.post(f"{server.base_url}{route}", json=body, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    greedy = httpx.post(f"{server.base_url}{route}", json={**body, "temperature": 0, "top_p": 1}, headers=AUTH,
                        timeout=120)
    pick = (lambda j: j["choices"][0]["message"]["content"]) if "chat" in route else (lambda j: j["choices"][0]["text"])
    assert pick(r.json()) == pick(greedy.json())  # treated as greedy, and the engine still runs
