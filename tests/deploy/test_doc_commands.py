"""Every ``helm install`` command printed in the deployment docs renders and validates.

The commands of ``docs/deploy.md`` (the per-site installation the README's "Deploy on Kubernetes"
section links to), of ``README.md`` and of ``deploy/README.md`` are run as
``helm template`` with the same flags, then every rendered object is validated strictly against
the Kubernetes schemas, like the ``ci/`` scenarios. The per-replica edge secrets the docs create
are checked against the names the rendered StatefulSet mounts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import KUBE_VERSION, REPO, load_tool, run_helm

DOCS = [REPO / "docs/deploy.md", REPO / "deploy/README.md", REPO / "README.md"]
# render as on a cluster that serves cert-manager's API (deploy/README.md shows it for test clusters)
API_VERSIONS = ["--api-versions", "cert-manager.io/v1"]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


def helm_installs(path: Path) -> list[list[str]]:
    """argv of each ``helm install`` line (continuations joined) in the file's sh blocks."""
    out = []
    for block in shell_blocks(path.read_text()):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("helm install "):
                out.append(shlex.split(line))
    return out


def _cases() -> list[Any]:
    cases = []
    for doc in DOCS:
        if not doc.exists() or "helm install" not in doc.read_text():
            continue
        for i, argv in enumerate(helm_installs(doc)):
            cases.append(pytest.param(argv, id=f"{doc.relative_to(REPO)}#{i}"))
    return cases


CASES = _cases()


def test_the_docs_have_an_install_command_per_kind_of_site() -> None:
    section = helm_installs(REPO / "docs/deploy.md")
    enabled = []
    for argv in section:
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        off = {s.split(".")[0] for s in sets if s.endswith(".enabled=false")}
        on = {s.split(".")[0] for s in sets if s.endswith(".enabled=true")}
        enabled.append(({"cloudCoordinator", "edgeAggregator", "clientAgent"} - off) | on)
    assert enabled == [
        {"cloudCoordinator"},
        {"edgeAggregator"},
        {"clientAgent"},
        {"keyHolder"},
    ]


@pytest.mark.parametrize("argv", CASES)
def test_documented_install_renders_and_validates(helm: str, argv: list[str]) -> None:
    assert argv[:2] == ["helm", "install"]
    args = ["template", *argv[2:], "--kube-version", KUBE_VERSION, *API_VERSIONS]
    args = [str(REPO / a) if a == "deploy/helm/ffa-lora" else a for a in args]
    objs = [d for d in yaml.safe_load_all(run_helm(helm, *args)) if d]
    assert objs
    pytest.importorskip("kubernetes_validate")
    validator = load_tool("validate_manifests")
    report = validator.validate_objects([(o["kind"], o) for o in objs], [KUBE_VERSION])
    assert report.ok, "\n".join(report.errors)


def test_documented_edge_secrets_match_what_the_edge_mounts(helm: str) -> None:
    doc = (REPO / "docs/deploy.md").read_text()
    block = next(b for b in shell_blocks(doc) if "--role edge" in b)
    loop = re.search(r"for i in \$\(seq 0 (\d+)\)", block)
    assert loop, block
    made = {f"edge-eu-west-tls-{i}" for i in range(int(loop.group(1)) + 1)}
    assert "create secret generic edge-eu-west-tls-$i" in block
    argv = next(
        a
        for a in helm_installs(REPO / "docs/deploy.md")
        if "edgeAggregator.region=eu-west" in a
    )
    args = ["template", *argv[2:], "--kube-version", KUBE_VERSION]
    args = [str(REPO / a) if a == "deploy/helm/ffa-lora" else a for a in args]
    objs = [d for d in yaml.safe_load_all(run_helm(helm, *args)) if d]
    sts = next(o for o in objs if o["kind"] == "StatefulSet")
    tls = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    mounted = {s["secret"]["name"] for s in tls["projected"]["sources"]}
    assert mounted == made
    # callers pin the role name `ffa-lora certs issue` gives every edge certificate: no --host
    probe = sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
    assert probe[probe.index("--server-name") + 1] == "edge.ffa-lora.ffa-lora.invalid"
    assert "--host" not in block
