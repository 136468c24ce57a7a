"""Paths and helpers shared by the deployment tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "deploy/helm/ffa-lora"
TOOLS = REPO / "deploy/tools"
KUBE_VERSION = "1.29.0"


class HelmError(Exception):
    """helm exited non-zero; the message is its output."""


def helm_args_of(values_file: Path) -> list[str]:
    """Extra helm flags a scenario asks for in ``# helm-args:`` comment lines."""
    args: list[str] = []
    for line in values_file.read_text().splitlines():
        if line.startswith("# helm-args:"):
            args += line.split(":", 1)[1].split()
    return args


def expectations_of(values_file: Path) -> list[str]:
    """Messages an invalid scenario must fail with (``# expect:`` comment lines)."""
    return [
        line.split(":", 1)[1].strip()
        for line in values_file.read_text().splitlines()
        if line.startswith("# expect:")
    ]


def run_helm(helm: str, *args: str) -> str:
    """Run helm; return stdout, or raise HelmError with the combined output."""
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise HelmError(proc.stdout + proc.stderr)
    return proc.stdout


def load_tool(name: str) -> Any:
    """Import ``deploy/tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"ffa_deploy_{name}", TOOLS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
