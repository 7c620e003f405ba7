"""Every rotator metric the dashboard and the alerting rules query is one rotator exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from rotator.metrics import RotatorMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _exported() -> set[str]:
    registry = CollectorRegistry()
    RotatorMetrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum"))
    return names


@pytest.mark.parametrize(
    "path", ["grafana/rotator-dashboard.json", "prometheus/rotator-rules.yml"], ids=str
)
def test_deploy_files_query_only_exported_metrics(path: str) -> None:
    queried = set(re.findall(r"\brotator_[a-z_]+", (DEPLOY / path).read_text()))

    assert queried, "the file queries no rotator metric at all"
    assert queried <= _exported(), sorted(queried - _exported())


def test_spec_metric_names_are_exported() -> None:
    spec = {
        "rotator_exchanges_total",
        "rotator_exchange_duration_seconds",
        "rotator_access_token_expires_timestamp_seconds",
        "rotator_token_healthy",
        "rotator_issuances_last_hour",
        "rotator_vault_up",
        "rotator_alerts_firing",
        "rotator_vault_token_ttl_seconds",
        "rotator_last_cycle_timestamp_seconds",
    }

    assert spec <= _exported()
