"""A real Prometheus scrapes a real leanserve; its HTTP API returns the leanserve series by profile,
and every query of the Grafana dashboard (deploy/grafana/dashboards/leanserve.json) runs on them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from tests.conftest import MODEL, ServerPool
from tests.prometheus import Prometheus, start_prometheus, write_config
from tests.servers import API_KEY, Server

pytestmark = pytest.mark.server

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "leanserve.json"


@pytest.fixture(scope="module")
def served(pool: ServerPool) -> Server:
    return pool.get("transformers")


@pytest.fixture(scope="module")
def prometheus(served: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    work = tmp_path_factory.mktemp("prometheus")
    config = write_config(work / "prometheus.yml", f"127.0.0.1:{served.port}", bearer=API_KEY)
    prom = start_prometheus(config, work)
    yield prom
    prom.stop()


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_prometheus_scrapes_leanserve_series_by_profile(served: Server, prometheus: Prometheus) -> None:
    prometheus.wait_for("healthy scrape", lambda: any(r["value"][1] == "1" for r in prometheus.query('up{job="leanserve"}')))
    client = OpenAI(base_url=f"{served.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi"}],
                                       max_tokens=5, temperature=0)
    assert r.usage.completion_tokens > 0

    def chat_requests() -> list[dict]:
        rows = prometheus.query('leanserve_requests_total{route="/v1/chat/completions", status="200"}')
        return [row for row in rows if float(row["value"][1]) >= 1]

    rows = prometheus.wait_for("leanserve_requests_total for the chat request", chat_requests)
    assert {row["metric"]["profile"] for row in rows} == {"bf16"}
    assert rows[0]["metric"]["model"] == MODEL and rows[0]["metric"]["job"] == "leanserve"
    tokens = prometheus.wait_for("generated tokens", lambda: prometheus.query('leanserve_generation_tokens_total{profile="bf16"} > 0'))
    assert float(tokens[0]["value"][1]) >= r.usage.completion_tokens
    info = prometheus.query('leanserve_model_info{profile="bf16"}')
    assert info and info[0]["metric"]["engine"] == "transformers" and info[0]["metric"]["bits"] == "16"


def test_dashboard_queries_return_series(served: Server, prometheus: Prometheus) -> None:
    """Each panel's PromQL (with Grafana's variables filled in) parses and finds data once scraped twice."""
    prometheus.wait_for("two scrapes of the TTFT histogram",
                        lambda: prometheus.query("count_over_time(leanserve_time_to_first_token_seconds_count[1m]) >= 3"))
    queries = dashboard_queries()
    assert len(queries) >= 10
    for expr in queries:
        filled = expr.replace("$__rate_interval", "1m").replace("$profile", ".*")
        assert prometheus.query(filled), f"no series for dashboard query {filled}"
