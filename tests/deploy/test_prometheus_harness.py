"""The Prometheus harness against a real Prometheus server and real prometheus_client exporters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ffa_lora_tools.harness.cluster import free_port
from ffa_lora_tools.harness.prometheus import PrometheusError, PrometheusHarness

pytestmark = pytest.mark.slow  # a Prometheus server

prometheus_client = pytest.importorskip("prometheus_client")


class Exporter:
    """A tiny /metrics endpoint on 127.0.0.1 exporting ``ffalora_round{service=...}``."""

    def __init__(self, service: str) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.round = prometheus_client.Gauge(
            "ffalora_round", "Current round", ["service"], registry=self.registry
        ).labels(service=service)
        self.port = free_port()
        self.server, self.thread = prometheus_client.start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporters() -> Iterator[Callable[[str], Exporter]]:
    made: list[Exporter] = []

    def _make(service: str) -> Exporter:
        made.append(Exporter(service))
        return made[-1]

    yield _make
    for e in made:
        e.close()


def _value(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_scrapes_and_queries_a_real_exporter(prometheus_server: Any, exporters: Any) -> None:
    coordinator = exporters("coordinator")
    coordinator.round.set(3)
    prom = prometheus_server({"coordinator": [coordinator.address]})

    prom.wait_for_targets_up(timeout=20)
    result = prom.wait_for('ffalora_round{service="coordinator"}', timeout=20)
    assert _value(result) == 3
    labels = result[0]["metric"]
    # honor_labels keeps the exporter's own `service` label; file_sd adds `role`
    assert labels["service"] == "coordinator" and labels["role"] == "coordinator"
    assert labels["instance"] == coordinator.address

    coordinator.round.set(4)
    assert _value(prom.wait_for('ffalora_round{service="coordinator"} == 4', timeout=20)) == 4

    now = time.time()
    matrix = prom.query_range('ffalora_round{service="coordinator"}', now - 30, now, step=1)
    values = [float(v) for _, v in matrix[0]["values"]]
    assert values[0] == 3 and values[-1] == 4 and values == sorted(values)
    assert prom.series("ffalora_round")[0]["service"] == "coordinator"


def test_targets_can_be_added_after_start(prometheus_server: Any, exporters: Any) -> None:
    prom = prometheus_server()  # no target yet, e.g. before the services have ports
    assert prom.query("ffalora_round") == []
    edge, client = exporters("edge"), exporters("client")
    edge.round.set(7)
    client.round.set(7)
    prom.set_targets({"edge": [edge.address], "client": [client.address]})
    prom.wait_for_targets_up(2, timeout=20)
    result = prom.wait_for("ffalora_round == 7", lambda r: len(r) == 2, timeout=20)
    assert {r["metric"]["service"] for r in result} == {"edge", "client"}


def test_bad_queries_and_unmet_conditions_raise(prometheus_server: Any) -> None:
    prom = prometheus_server()
    with pytest.raises(PrometheusError, match="parse error"):
        prom.query("sum(")
    with pytest.raises(PrometheusError, match="did not satisfy"):
        prom.wait_for("ffalora_round", timeout=0.5)


def test_stop_ends_the_server(tmp_path: Any) -> None:
    harness = PrometheusHarness(workdir=tmp_path)
    if harness.binary is None:
        pytest.skip("prometheus server binary not found (apt-get install prometheus)")
    with harness as prom:
        assert prom.query("vector(1)")[0]["value"][1] == "1"
        proc = prom._proc
    assert proc is not None and proc.poll() is not None
    with pytest.raises(PrometheusError):
        harness.query("vector(1)")
