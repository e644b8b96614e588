"""What does constrained decoding cost? Decode tokens/s of one stream with a JSON schema (xgrammar's
mask applied every token) against free text, side by side on one server, median of --repeats runs.

Target (issue 11): the schema run at most 10% slower than free text. Decode speed is measured from the
first to the last streamed token (prefill excluded), since the two answers differ in length.
Prints a table; writes benchmarks/results/structured_speed-<device>.json.

    python benchmarks/structured_speed.py [--engine transformers] [--repeats 3] [--tokens 96]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name, write_result  # noqa: E402

PROMPT = "List ten European cities with their country and a one-line description of each."
SCHEMA = {"type": "object", "required": ["cities"], "properties": {"cities": {"type": "array", "items": {
    "type": "object", "required": ["name", "country", "description"],
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}, "description": {"type": "string"}}}}}}


def decode_rate(client, model: str, tokens: int, response_format: dict | None) -> tuple[float, int]:  # noqa: ANN001
    """(tokens/s between the first and the last streamed token, tokens) of one greedy answer."""
    extra = {"response_format": response_format} if response_format else {}
    stamps: list[float] = []
    usage = 0
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, **extra)
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.completion_tokens
        elif chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    if usage < 8 or len(stamps) < 2:
        raise RuntimeError(f"answer too short to time ({usage} tokens)")
    return (usage - 1) / (stamps[-1] - stamps[0]), usage


def main() -> None:
    from openai import OpenAI

    from leanserve.evals.runner import local_server
    from leanserve.paths import default_home

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    rows: dict[str, list[tuple[float, int]]] = {"free text": [], "json_schema": []}
    fmt = {"type": "json_schema", "json_schema": {"name": "cities", "schema": SCHEMA}}
    with local_server("bf16", model=None, engine=args.engine, home=default_home()) as (url, key):
        client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        decode_rate(client, model, 16, fmt)  # compile the grammar machinery once, outside the timing
        for _ in range(args.repeats):  # interleaved, so drift in the shared machine hits both alike
            rows["free text"].append(decode_rate(client, model, args.tokens, None))
            rows["json_schema"].append(decode_rate(client, model, args.tokens, fmt))
    med = {k: statistics.median(r for r, _ in v) for k, v in rows.items()}
    ratio = med["json_schema"] / med["free text"]
    result = {"device": device_name(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "engine": args.engine, "profile": "bf16", "repeats": args.repeats, "max_tokens": args.tokens,
              "runs": {k: [{"tok_s": round(r, 2), "tokens": n} for r, n in v] for k, v in rows.items()},
              "median_tok_s": {k: round(v, 2) for k, v in med.items()}, "schema_vs_free": round(ratio, 3),
              "target": "schema >= 0.90x free text", "meets_target": ratio >= 0.90}
    print(f"| decoding | tok/s, 1 stream (median of {args.repeats}) | vs free text |\n|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {v / med['free text']:.2f} |")
    print(f"{args.engine}, {result['device']}, {result['date']}")
    write_result(args.out, "structured_speed", result)


if __name__ == "__main__":
    main()
