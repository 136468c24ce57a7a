#!/usr/bin/env python3
"""Render the key ffa-lora metrics of a federation run, as stored by Prometheus, into one PNG.

Queries a running Prometheus over its HTTP API (``/api/v1/query_range``) and plots, over the
run: the coordinator's round (with its phase), updates accepted and rejected per second, bytes
sent and received, encryption and decryption seconds, privacy epsilon spent, and the global
loss and accuracy. Only the metric names fixed for the services are used (the same ones as the
Grafana dashboard, ``deploy/tools/gen_dashboard.py``).

Two ways to run it:

* against any Prometheus that scraped a run::

      python deploy/tools/render_metrics_png.py --prometheus http://127.0.0.1:9090 \\
          --start 2025-01-01T10:00:00Z --end 2025-01-01T10:12:00Z --out metrics.png

* ``--demo``: start a local Prometheus (Debian package ``prometheus``) that scrapes every
  1 s, run ``ffa_lora_tools.demo.run_demo`` (all services as OS processes over mTLS on loopback),
  then render that run (how ``docs/deploy-metrics.png`` was made; see ``--help`` for the
  federation settings)::

      .venv/bin/python deploy/tools/render_metrics_png.py --demo --rounds 5 \\
          --out docs/deploy-metrics.png

Run it with the project's virtualenv (matplotlib, and the project for ``--demo``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ffa_lora_tools.demo import DemoSettings, run_demo
from ffa_lora_tools.harness.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusHarness,
    find_binary,
    seconds,
)
from ffa_lora_tools.harness.tiny_model import tiny_bert

Series = list[tuple[dict[str, str], list[tuple[float, float]]]]


def matrix(api: PrometheusClient, expr: str, start: float, end: float, step: float) -> Series:
    """A range query as ``[(labels, [(t, value), ...]), ...]`` (NaN and infinite samples
    dropped)."""
    out: Series = []
    for r in api.query_range(expr, start, end, step):
        points = [(float(t), float(v)) for t, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
        if points:
            out.append((dict(r["metric"]), points))
    return out


def first_sample_time(api: PrometheusClient, expr: str, start: float, end: float) -> float | None:
    """Time of the first sample of ``expr`` in [start, end] (to trim an idle lead-in)."""
    series = matrix(api, expr, start, end, max((end - start) / 2000, 0.5))
    times = [pts[0][0] for _, pts in series if pts]
    return min(times) if times else None


# -- the panels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One query of a panel; ``label`` is formatted with the series' labels."""

    expr: str
    label: str
    scale: float = 1.0
    style: str = "-"
    axis: str = "left"  # or "right"


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    lines: tuple[Line, ...]
    ylabel_right: str = ""
    step_plot: bool = False


def panels(rate_window: str) -> tuple[Panel, ...]:
    """The plotted queries; ``rate_window`` is the range of rate() (short runs: tens of seconds)."""
    w = rate_window
    coord = 'service="coordinator"'
    return (
        Panel(
            "Round (coordinator)",
            "round",
            (
                Line(f"ffalora_round{{{coord}}}", "round"),
                Line(
                    f'ffalora_round_phase{{{coord},phase="decrypting"}}',
                    "decrypting (0/1)",
                    style=":",
                    axis="right",
                ),
                Line(
                    f'ffalora_round_phase{{{coord},phase="training"}}',
                    "training (0/1)",
                    style="--",
                    axis="right",
                ),
            ),
            ylabel_right="phase",
            step_plot=True,
        ),
        Panel(
            f"Updates per second (rate over {w})",
            "updates / s",
            (
                Line(
                    f'sum by (role) (rate(ffalora_updates_accepted_total{{service="edge"}}[{w}]))',
                    "accepted by {role}",
                ),
                Line(
                    f"sum by (service, reason) (rate(ffalora_updates_rejected_total[{w}]))",
                    "rejected ({service}: {reason})",
                    style="--",
                ),
            ),
        ),
        Panel(
            "Encrypted update bytes (cumulative)",
            "MB",
            (
                # last_over_time: a service that has exited keeps counting in the sum
                Line(
                    'sum(last_over_time(ffalora_bytes_sent_total{service="client"}[10m]))',
                    "sent by clients",
                    scale=1e-6,
                ),
                Line(
                    'sum(last_over_time(ffalora_bytes_received_total{service="edge"}[10m]))',
                    "received by edges",
                    scale=1e-6,
                    style="--",
                ),
            ),
        ),
        Panel(
            "Crypto seconds (mean so far)",
            "seconds",
            (
                Line(
                    f"ffalora_decrypt_seconds_sum{{{coord}}} / ffalora_decrypt_seconds_count{{{coord}}}",
                    "decrypt + unpack per round (coordinator)",
                ),
                Line(
                    'sum(ffalora_encrypt_seconds_sum{service="client"}) / '
                    'sum(ffalora_encrypt_seconds_count{service="client"})',
                    "quantize + pack + encrypt per update (clients)",
                    style="--",
                ),
            ),
        ),
        Panel(
            "Differential privacy",
            "epsilon spent",
            (Line(f"ffalora_privacy_epsilon_spent{{{coord}}}", "epsilon spent"),),
            step_plot=True,
        ),
        Panel(
            "Global model",
            "loss",
            (
                # both gauges read 0 until the first round is committed: leave that out
                Line(f"ffalora_global_loss{{{coord}}} > 0", "weighted train loss"),
                Line(
                    f"ffalora_global_accuracy{{{coord}}} > 0",
                    "accuracy (held-out)",
                    style="--",
                    axis="right",
                ),
            ),
            ylabel_right="accuracy",
            step_plot=True,
        ),
    )


def render(
    api: PrometheusClient,
    *,
    start: float,
    end: float,
    step: float,
    out: Path,
    title: str,
    caption: str = "",
    rate_window: str = "20s",
    trim: bool = True,
) -> dict[str, int]:
    """Query every panel over [start, end] and write the PNG; return series counts per panel."""
    if trim:  # start the x axis where the coordinator's first sample is
        first = first_sample_time(api, 'ffalora_round{service="coordinator"}', start, end)
        if first is not None:
            start = max(start, first - step)
    ps = panels(rate_window)
    ncols = 3
    nrows = -(-len(ps) // ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    counts: dict[str, int] = {}
    for ax, panel in zip(axes.flat, ps):
        right = ax.twinx() if any(line.axis == "right" for line in panel.lines) else None
        n, peak = 0, 0.0
        for line in panel.lines:
            target = right if (line.axis == "right" and right is not None) else ax
            for labels, points in matrix(api, line.expr, start, end, step):
                xs = [t - start for t, _ in points]
                ys = [v * line.scale for _, v in points]
                label = line.label.format_map(_Default(labels))
                peak = max(peak, *ys)
                if panel.step_plot:
                    target.step(xs, ys, line.style, where="post", label=label)
                else:
                    target.plot(xs, ys, line.style, label=label)
                n += 1
        counts[panel.title] = n
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("seconds since the run started")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        handles, labels_ = ax.get_legend_handles_labels()
        if right is not None:
            right.set_ylabel(panel.ylabel_right)
            if panel.ylabel_right == "phase":
                right.set_ylim(-0.05, 3)  # keep the 0/1 phase lines low, under the round steps
            elif panel.ylabel_right == "accuracy":
                right.set_ylim(0, 1)
            h2, l2 = right.get_legend_handles_labels()
            handles, labels_ = handles + h2, labels_ + l2
        if panel.title == "Differential privacy" and n and peak == 0:
            ax.set_ylim(-0.05, 1)
            ax.text(
                0.5,
                0.6,
                "no epsilon spent\n(privacy.mode=off in this run)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=9,
            )
        if handles:
            ax.legend(handles, labels_, fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(ps) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    if caption:
        fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return counts


class _Default(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"


# -- --demo: a local Prometheus + one federation run ---------------------------------------------


def run_demo_scraped(
    args: argparse.Namespace,
) -> tuple[float, float, str, PrometheusHarness]:
    """Run one federation under a local Prometheus; return what render() needs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if find_binary(args.prometheus_binary) is None:
        raise SystemExit(
            "prometheus not found: apt-get install prometheus (or --prometheus-binary)"
        )
    model = args.model
    if args.tiny_model:
        model = str(tiny_bert(Path(tempfile.mkdtemp(prefix="ffa-tiny-")) / "model"))
    prom = PrometheusHarness(binary=args.prometheus_binary, scrape_interval=args.scrape_interval,
                             workdir=args.keep_data).start()

    def scrape(layout: dict[str, Any]) -> None:
        prom.set_targets({name: [f"127.0.0.1:{port}"]
                          for name, port in layout["metrics_ports"].items()})

    privacy = {"mode": "central", "epsilon": args.epsilon} if args.epsilon > 0 else {}
    settings = DemoSettings(
        name="metrics-png",
        out_dir=Path(tempfile.mkdtemp(prefix="ffa-demo-")),
        model=model,
        rounds=args.rounds,
        key_bits=args.key_bits,
        max_train_per_site=args.max_train_per_site,
        max_test=args.max_test,
        local_epochs=args.local_epochs,
        privacy=privacy,
        quiet=False,
    )
    start = time.time()
    try:
        summary = run_demo(settings, on_prepared=scrape)
    except BaseException:
        prom.stop()
        raise
    time.sleep(2 * seconds(args.scrape_interval))
    end = time.time()
    data = summary["data"]
    model_name = (
        "tiny random BERT"
        if args.tiny_model
        else "MiniLM-L6 (demo model)"
        if model == "demo"
        else model
    )
    caption = (
        f"ffa_lora_tools.demo.run_demo as OS processes over mTLS, scraped every {args.scrape_interval} by "
        f"Prometheus: model {model_name}, "
        f"{summary['clients']} clients ({', '.join(f'{k} {v}' for k, v in data['sites'].items())} "
        f"training examples), {data['test']} test examples, 2 edges, {summary['rounds']} rounds, "
        f"{args.key_bits}-bit Paillier, "
        + (f"central DP (epsilon budget {args.epsilon:g})" if privacy else "no DP")
        + f"; final accuracy {summary['final_accuracy']:.3f}; wall {summary['wall_seconds']:.0f} s"
        + f" on {os.cpu_count()} shared CPU cores."
    )
    return start, end, caption, prom


def _time(value: str) -> float:
    """Unix seconds, RFC 3339, or ``now-<duration>`` / ``now``."""
    if value == "now":
        return time.time()
    if value.startswith("now-"):
        return time.time() - seconds(value[4:])
    try:
        return float(value)
    except ValueError:
        return dt.datetime.fromisoformat(value).timestamp()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", help="base URL of a Prometheus that scraped the run")
    ap.add_argument("--start", default="now-15m", help="unix seconds, RFC 3339 or now-15m")
    ap.add_argument("--end", default="now")
    ap.add_argument("--step", type=float, default=1.0, help="query_range step in seconds")
    ap.add_argument("--rate-window", default="20s", help="range of rate() (Grafana uses 5m)")
    ap.add_argument("--out", type=Path, default=Path("deploy-metrics.png"))
    ap.add_argument("--title", default="ffa-lora federation metrics (Prometheus)")
    ap.add_argument("--caption", default="")
    ap.add_argument("--no-trim", action="store_true", help="keep an idle lead-in before the run")
    demo = ap.add_argument_group("--demo: run a local federation under a local Prometheus")
    demo.add_argument("--demo", action="store_true")
    demo.add_argument("--prometheus-binary", default=None)
    demo.add_argument("--scrape-interval", default="1s")
    demo.add_argument(
        "--keep-data",
        type=Path,
        default=None,
        help="keep the local Prometheus config and TSDB in this folder (to render again later)",
    )
    demo.add_argument("--model", default="demo", help="HF id/path; default the shipped MiniLM-L6")
    demo.add_argument("--tiny-model", action="store_true", help="a tiny random BERT (fast)")
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--key-bits", type=int, default=2048)
    demo.add_argument("--max-train-per-site", type=int, default=200)
    demo.add_argument("--max-test", type=int, default=300)
    demo.add_argument("--local-epochs", type=float, default=1.0)
    demo.add_argument(
        "--epsilon",
        type=float,
        default=0.0,
        help="central DP budget; 0 = DP off (as in `make demo`)",
    )
    args = ap.parse_args(argv)

    local: PrometheusHarness | None = None
    api: PrometheusClient
    if args.demo:
        start, end, caption, local = run_demo_scraped(args)
        api, caption = local, args.caption or caption
    elif args.prometheus:
        api, start, end, caption = (
            PrometheusClient(args.prometheus, timeout=30.0),
            _time(args.start),
            _time(args.end),
            args.caption,
        )
    else:
        ap.error("give --prometheus URL (a Prometheus that scraped a run) or --demo")
    try:
        counts = render(
            api,
            start=start,
            end=end,
            step=args.step,
            out=args.out,
            title=args.title,
            caption=caption,
            rate_window=args.rate_window,
            trim=not args.no_trim,
        )
    except PrometheusError as exc:
        raise SystemExit(f"Prometheus: {exc}") from None
    finally:
        if local is not None:
            local.stop()
    print(json.dumps({"out": str(args.out), "start": start, "end": end, "series": counts}))
    if local is not None and args.keep_data is not None:
        d = args.keep_data.resolve()
        print(
            f"render again: prometheus --config.file={d}/prometheus.yml --storage.tsdb.path={d}/data"
            f" --web.listen-address=127.0.0.1:9090 &  then  {sys.argv[0]} --prometheus"
            f" http://127.0.0.1:9090 --start {start:.0f} --end {end:.0f} --caption '...'",
            file=sys.stderr,
        )
    return 0 if any(counts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
