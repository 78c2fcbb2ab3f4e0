"""deploy/prometheus/alerts.yml alerts on series ``/metrics`` really exports, with the seeds' thresholds.

Every metric name in every rule's expression must appear in a scrape of ``run.py serve`` (the whole
application, with a throwaway redis-server so that ``vigil_redis_up`` is exported); stopping that Redis turns
``vigil_redis_up`` to 0 at the next scrape. ``promtool check rules`` runs too where promtool is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.ingest_helpers import OPS_TOKEN, REPO, running_server
from tests.integration.test_coordination_redis import PrivateRedis, private_redis  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}

# The failure-modes documents' table: (warning, critical) and how long before it fires.
SEEDS = {
    "VigilOutboxLagHigh": ("warning", "> 1000", "5m"),
    "VigilOutboxLagCritical": ("critical", "> 10000", "5m"),
    "VigilErrorRateHigh": ("warning", "> 0.01", "5m"),
    "VigilErrorRateCritical": ("critical", "> 0.05", "5m"),
    "VigilDatabasePoolBusy": ("warning", "> 0.80", "5m"),
    "VigilDatabasePoolExhausted": ("critical", "> 0.95", "5m"),
    "VigilRedisDown": ("critical", "== 0", "30s"),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values", "group"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers outside label matchers, strings and ranges that are not
    functions (followed by '(') or PromQL keywords."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = {m.group(1) for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", bare) if not m.group(2)}
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def exported(scrape: str) -> set[str]:
    return {line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE ")} | {
        re.split(r"[{ ]", line, maxsplit=1)[0] for line in scrape.splitlines() if line and not line.startswith("#")}


def test_every_alert_has_the_seeds_threshold_duration_and_severity() -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) == set(SEEDS)
    for name, (severity, threshold, duration) in SEEDS.items():
        rule = found[name]
        assert rule["labels"]["severity"] == severity, name
        assert rule["for"] == duration, name
        assert " ".join(str(rule["expr"]).split()).endswith(threshold), (name, rule["expr"])
        assert rule["annotations"]["summary"], name


def test_the_metric_name_parser_skips_functions_labels_and_ranges() -> None:
    expr = 'sum(rate(a_total{status_class="5xx"}[5m])) / sum by (x) (rate(b_total[5m])) > 0.01'
    assert metric_names(expr) == {"a_total", "b_total"}


async def test_every_series_in_the_rules_is_exported_by_a_running_app(tmp_path: Path,
                                                                       private_redis: PrivateRedis) -> None:  # noqa: F811
    wanted = set().union(*(metric_names(str(rule["expr"])) for rule in rules()))
    assert "vigil_redis_up" in wanted and "vigil_http_responses_total" in wanted
    async with running_server(tmp_path, "--decode-processes", "0", "--redis", private_redis.url) as server, \
            httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        assert (await client.get("/nope")).status_code == 404  # a response of each class the alerts divide
        scrape = (await client.get("/metrics", headers=OPS)).text
        missing = wanted - exported(scrape)
        assert not missing, f"alerts.yml reads series /metrics does not export: {sorted(missing)}"
        assert "vigil_redis_up 1.0" in scrape
        assert 'vigil_http_responses_total{status_class="4xx"} 1.0' in scrape
        assert "vigil_store_pool_connections_max 2.0" in scrape  # SQLite: the writer and the reader
        # Redis gone: the next scrape says so (within the probe's timeout) instead of hanging or failing.
        private_redis.kill()
        down = await client.get("/metrics", headers=OPS)
        assert down.status_code == 200 and "vigil_redis_up 0.0" in down.text
        assert await server.terminate() == 0


def test_promtool_accepts_the_rules_where_installed() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (optional: the rules are checked against a real scrape above)")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
