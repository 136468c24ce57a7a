"""A real Prometheus server for tests and tools: start, scrape given targets every second,
query, stop.

Uses the Prometheus binary of the Debian package ``prometheus`` (``/usr/bin/prometheus``; another
path with ``binary=``). The server listens on 127.0.0.1 on a free port, keeps its TSDB in a
temporary directory, and reads its targets from a file_sd JSON file, so targets can be set or
changed after start (:meth:`PrometheusHarness.set_targets`) — e.g. once the services of a
federation run have picked their metrics ports. Every target is scraped at ``scrape_interval``
(default 1 s) with ``honor_labels: true``, so the services' own ``service`` label is kept.

Typical use (pytest)::

    def test_round_is_scraped(prometheus_server):       # fixture from tests/deploy/conftest.py
        prom = prometheus_server({"coordinator": ["127.0.0.1:9400"]})
        prom.wait_for_targets_up()
        series = prom.wait_for('ffalora_round{service="coordinator"} >= 1')
        assert series[0]["value"][1] == "1"

or as a context manager: ``with PrometheusHarness(["127.0.0.1:9400"]) as prom: ...``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from ffa_lora_tools.harness.cluster import free_port

DEFAULT_BINARY = "/usr/bin/prometheus"

Targets = Sequence[str] | Mapping[str, Sequence[str]]
"""``["host:port", ...]`` or ``{"job-or-role label": ["host:port", ...]}``."""


class PrometheusError(RuntimeError):
    """The server did not start, a query failed, or a condition was not met in time."""


def find_binary(binary: str | None = None) -> str | None:
    """Path of the Prometheus server binary, or None when it is not installed."""
    for candidate in (
        binary,
        os.environ.get("PROMETHEUS_BINARY"),
        DEFAULT_BINARY,
        shutil.which("prometheus"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class PrometheusClient:
    """Read-only client of a Prometheus server's HTTP API at ``url``."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self.timeout = timeout

    @property
    def url(self) -> str:
        """Base URL of the server's HTTP API."""
        return self._url

    # -- queries --------------------------------------------------------------------------------

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (vector: ``{"metric": {...}, "value": [t, "v"]}``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return list(self._get("/api/v1/query", params)["result"])

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        """Range query; the ``result`` list (matrix: ``{"metric": {...}, "values": [...]}``)."""
        return list(
            self._get(
                "/api/v1/query_range",
                {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"},
            )["result"]
        )

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until ``predicate(result)`` holds; return that result."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(interval)
        raise PrometheusError(
            f"{expr!r} did not satisfy the condition within {timeout}s; last result: {result}"
        )

    def series(self, match: str) -> list[dict[str, str]]:
        """Label sets of the series matching a selector (``/api/v1/series``)."""
        return list(self._get("/api/v1/series", {"match[]": match}))

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
            raise PrometheusError(
                f"{path} {params}: HTTP {e.code}: {body.get('error', body)}"
            ) from e
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise PrometheusError(f"{path}: Prometheus at {self.url} unreachable: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('error', body)}")
        return body["data"]


class PrometheusHarness(PrometheusClient):
    """One Prometheus server process scraping ``targets``; see the module docstring."""

    def __init__(
        self,
        targets: Targets = (),
        *,
        binary: str | None = None,
        scrape_interval: str = "1s",
        rule_files: Sequence[str | Path] = (),
        workdir: str | Path | None = None,
        startup_timeout: float = 30.0,
        port: int | None = None,
    ) -> None:
        self.binary = find_binary(binary)
        self.scrape_interval = scrape_interval
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.startup_timeout = startup_timeout
        self.port = port or free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ffa-prom-"))
        self.config_path = self.workdir / "prometheus.yml"
        self.targets_path = self.workdir / "targets.json"
        self.log_path = self.workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.set_targets(targets)

    # -- lifecycle ------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The prometheus.yml the server runs with."""
        interval_s = seconds(self.scrape_interval)
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": f"{max(int(interval_s * 800), 100)}ms",
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": [
                {
                    "job_name": "ffa-lora",
                    "metrics_path": "/metrics",
                    "honor_labels": True,
                    "file_sd_configs": [
                        {"files": [str(self.targets_path)], "refresh_interval": "1s"}
                    ],
                }
            ],
        }

    def start(self) -> Self:
        """Write the config, start the server and wait until /-/ready answers."""
        if self.binary is None:
            raise PrometheusError(
                "prometheus binary not found: apt-get install prometheus "
                "(or pass binary= / set PROMETHEUS_BINARY)"
            )
        if self._proc is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (open while the server runs)
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self._proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(
            f"prometheus not ready after {self.startup_timeout}s: {self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove a temporary workdir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server logged (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- targets --------------------------------------------------------------------------------

    def set_targets(self, targets: Targets) -> None:
        """Replace the scraped targets (picked up within about a second)."""
        if isinstance(targets, Mapping):
            groups = [
                {"targets": list(addrs), "labels": {"role": str(role)}}
                for role, addrs in targets.items()
            ]
        else:
            groups = [{"targets": list(targets), "labels": {}}] if targets else []
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_path)  # atomic: Prometheus never reads a half-written file

    def active_targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets`` active targets (scrapeUrl, health, lastError, labels, ...)."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return list(data["activeTargets"])

    def wait_for_targets_up(self, count: int | None = None, timeout: float = 30.0) -> None:
        """Wait until ``count`` targets (default: all configured) report health "up"."""
        want = (
            count
            if count is not None
            else sum(len(g["targets"]) for g in json.loads(self.targets_path.read_text()))
        )
        deadline = time.monotonic() + timeout
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            targets = self.active_targets()
            if sum(t["health"] == "up" for t in targets) >= want:
                return
            time.sleep(0.2)
        states = ", ".join(
            f"{t['scrapeUrl']}={t['health']} {t.get('lastError', '')}".strip() for t in targets
        )
        raise PrometheusError(f"{want} target(s) not up after {timeout}s: {states or 'none'}")

def seconds(duration: str) -> float:
    """A Prometheus duration (``500ms``, ``1s``, ``5m``, ``1h``, or plain seconds) in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    return float(duration)
