"""A real Prometheus scrapes a real federation run and the ``ffalora_*`` series are read back.

One short federation (``ffa_lora_tools.demo.run_demo``: coordinator, two key holders, two
edges and three client agents as OS processes over mutual TLS on loopback; tiny BERT, 24
examples per site, 2 rounds, 512-bit test-only Paillier key) runs in a thread while a real Prometheus server (Debian package
``prometheus``) scrapes every service's metrics port once a second. The tests then read the
series back through Prometheus' HTTP API.

The two edges are laid out the way the Helm chart deploys edge replicas of one region with
operator-made certificates: one region (``eu``), one certificate identity per replica
(``edge-eu-0``, ``edge-eu-1``, issued by ``ffa-lora certs issue`` with the edge Service name as
``--host``), and the clients verify that Service name (``edge_server_name``). A round needs all
three clients (min_clients=3), so every committed round proves that the coordinator accepted
one partial sum from each replica of the region.

Skipped when ``/usr/bin/prometheus`` is missing (``apt-get install prometheus``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from chart_helpers import load_tool

from ffa_lora_tools.harness.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusHarness,
    find_binary,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,  # runs a whole federation
    pytest.mark.timeout(420),
    pytest.mark.skipif(
        find_binary() is None,
        reason="Prometheus server not installed: apt-get install -y prometheus "
        "(or set PROMETHEUS_BINARY)",
    ),
]

REGION = "eu"
EDGE_SERVICE = "ffa-lora-edge-eu"  # the Service name the chart gives region "eu"
WINDOW = "[15m]"  # range selectors: the services have exited when the tests query


@dataclass
class ScrapedRun:
    """What the fixture leaves for the tests: the server, the run and what was seen live."""

    prom: PrometheusHarness
    summary: dict[str, Any]
    layout: dict[str, Any]
    targets: dict[str, str] = field(default_factory=dict)  # name -> host:port
    live_up: set[str] = field(default_factory=set)  # targets seen up while the run went on
    seconds: float = 0.0


def as_chart_edge_replicas(layout: dict[str, Any]) -> None:
    """Re-issue the demo's edge certificates as the chart's per-replica identities of one region."""
    from services.common.certs import issue_certificate

    certs = layout["run"] / "certs"
    for i, edge in enumerate(layout["edges"]):
        replica_id = f"edge-{REGION}-{i}"
        crt, key = issue_certificate(
            certs, certs, role="edge", id=replica_id, hosts=[EDGE_SERVICE, "localhost", "127.0.0.1"]
        )
        path = layout["configs"][edge]
        cfg = yaml.safe_load(path.read_text())
        cfg["tls"].update(cert=str(crt), key=str(key))
        cfg["edge"]["region"] = REGION
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for client in layout["clients"]:
        path = layout["configs"][client]
        cfg = yaml.safe_load(path.read_text())
        cfg["client"]["edge_server_name"] = EDGE_SERVICE
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def scraped_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapedRun]:
    from ffa_lora_tools.demo import DemoSettings, run_demo
    from ffa_lora_tools.harness.tiny_model import tiny_bert

    root = tmp_path_factory.mktemp("scrape")
    model = tiny_bert(root / "tiny-bert")
    prom = PrometheusHarness(workdir=root / "prometheus").start()
    run = ScrapedRun(prom=prom, summary={}, layout={})
    prepared = threading.Event()

    def on_prepared(layout: dict[str, Any]) -> None:
        as_chart_edge_replicas(layout)
        run.layout = layout
        run.targets = {name: f"127.0.0.1:{port}" for name, port in layout["metrics_ports"].items()}
        # one target group per service, labelled role=<name>; file_sd picks it up within 1 s
        prom.set_targets({name: [addr] for name, addr in run.targets.items()})
        prepared.set()

    settings = DemoSettings(
        name="scrape",
        out_dir=root / "runs",
        model=str(model),
        rounds=2,
        key_bits=512,  # test-only key size
        max_train_per_site=24,
        max_test=30,
        deid=False,
        quiet=True,
        timeout_s=300,
    )
    errors: list[BaseException] = []

    def federation() -> None:
        try:
            run.summary = run_demo(settings, on_prepared=on_prepared)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test thread)
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=federation, name="federation", daemon=True)
    thread.start()
    try:
        assert prepared.wait(120), "the demo did not get as far as writing its configs"
        # While the federation runs, every service's endpoint must be scraped successfully.
        while thread.is_alive() and len(run.live_up) < len(run.targets):
            run.live_up |= {
                t["labels"]["role"] for t in prom.active_targets() if t["health"] == "up"
            }
            time.sleep(0.2)
        thread.join(360)
        run.seconds = time.monotonic() - started
        assert not thread.is_alive(), "the federation did not finish within 6 minutes"
        if errors:
            raise errors[0]
        time.sleep(1.5)  # let the last scrapes land in the TSDB
        yield run
    finally:
        prom.stop()


def by_role(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["role"]: float(r["value"][1]) for r in result}


def test_every_service_was_scraped_while_the_federation_ran(scraped_run: ScrapedRun) -> None:
    run = scraped_run
    assert set(run.targets) == {"coordinator", *run.layout["keyholders"], *run.layout["edges"],
                                *run.layout["clients"]}
    assert run.live_up == set(run.targets), f"never seen up: {set(run.targets) - run.live_up}"
    # and in the TSDB: the `up` series of every target reached 1
    up = by_role(run.prom.query(f"max_over_time(up{WINDOW})"))
    assert up == {name: 1.0 for name in run.targets}


def test_ffalora_series_from_every_service(scraped_run: ScrapedRun) -> None:
    prom = scraped_run.prom
    services = {s["service"] for s in prom.series('{__name__=~"ffalora_.+"}')}
    assert services == {"coordinator", "keyholder", "edge", "client"}
    # every series keeps the services' own `service` label (honor_labels) and nothing else
    # identifying: service, role (ours), instance/job (Prometheus), phase/reason/client/...
    for s in prom.series('{__name__=~"ffalora_.+"}'):
        assert set(s) - {"__name__", "service", "role", "instance", "job"} <= {
            "phase",
            "reason",
            "client",
            "entity_type",
            "class",  # the task's class names (per-class ROC-AUC), from the federation config
            "le",
        }, s

    rounds = by_role(prom.query(f'max_over_time(ffalora_round{{service="coordinator"}}{WINDOW})'))
    assert rounds["coordinator"] >= 1

    accepted = by_role(
        prom.query(f'max_over_time(ffalora_updates_accepted_total{{service="edge"}}{WINDOW})')
    )
    assert set(accepted) == set(scraped_run.layout["edges"])
    assert all(v > 0 for v in accepted.values()), accepted  # both replicas took updates

    sent = by_role(
        prom.query(f'max_over_time(ffalora_bytes_sent_total{{service="client"}}{WINDOW})')
    )
    assert set(sent) == set(scraped_run.layout["clients"])
    assert all(v > 0 for v in sent.values()), sent

    encrypt = by_role(
        prom.query(f'max_over_time(ffalora_encrypt_seconds_count{{service="client"}}{WINDOW})')
    )
    assert encrypt and all(v >= 1 for v in encrypt.values()), encrypt
    decrypt = prom.query(
        f'max_over_time(ffalora_decrypt_seconds_count{{service="coordinator"}}{WINDOW})'
    )
    assert float(decrypt[0]["value"][1]) >= 1


def test_query_range_returns_the_rounds_over_time(scraped_run: ScrapedRun) -> None:
    """The data a dashboard (or deploy/tools/render_metrics_png.py) plots."""
    end = time.time()
    result = scraped_run.prom.query_range(
        'ffalora_round{service="coordinator"}', end - scraped_run.seconds - 30, end, step=1
    )
    assert len(result) == 1
    values = [float(v) for _, v in result[0]["values"]]
    assert values == sorted(values) and values[-1] >= 1  # the round number only grows


def test_edge_replicas_of_one_region_each_delivered_a_partial_sum(
    scraped_run: ScrapedRun,
) -> None:
    """Per-replica identities (as the chart issues them) are what lets two replicas of one
    region contribute to the same round: with a shared identity the coordinator would refuse
    the second partial sum ("second_partial") and the round would lack a client."""
    summary = scraped_run.summary
    assert summary["rounds"] == 2
    assert [r["clients"] for r in summary["per_round"]] == [3, 3]
    logs = {
        e: (scraped_run.layout["run"] / "logs" / f"{e}.log").read_text()
        for e in scraped_run.layout["edges"]
    }
    for i, (edge, log) in enumerate(sorted(logs.items())):
        assert f"edge edge-{REGION}-{i} (region {REGION})" in log, log[-2000:]
    rejected = scraped_run.prom.query(
        f'max_over_time(ffalora_updates_rejected_total{{service="coordinator"}}{WINDOW}) > 0'
    )
    assert rejected == [], rejected


def test_harness_reports_a_failed_query_clearly(scraped_run: ScrapedRun) -> None:
    with pytest.raises(PrometheusError, match="parse error"):
        scraped_run.prom.query("ffalora_round{")


def test_render_metrics_png_plots_every_panel(
    scraped_run: ScrapedRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """deploy/tools/render_metrics_png.py (how docs/deploy-metrics.png is made) on this run."""
    tool = load_tool("render_metrics_png")
    out = tmp_path_factory.mktemp("png") / "metrics.png"
    end = time.time()
    counts = tool.render(
        PrometheusClient(scraped_run.prom.url),
        start=end - scraped_run.seconds - 10,
        end=end,
        step=1.0,
        out=out,
        title="test",
    )
    # every panel has data except "rejected" lines (nothing was rejected)
    assert all(n >= 1 for n in counts.values()), counts
    assert counts["Updates per second (rate over 20s)"] == 2  # one line per edge replica
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
