"""House rules that keep the layers apart, and generated code that must not drift."""

from __future__ import annotations

import ast
import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_no_transport() -> None:
    """ffa_lora (the algorithms) never imports grpc, generated protos or the services."""
    offenders = []
    for py in sorted((ROOT / "ffa_lora").rglob("*.py")):
        for name in _imports(py):
            top = name.split(".")[0]
            if top in {"grpc", "grpc_health", "ffalora", "services"}:
                offenders.append(f"{py.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_core_reads_no_environment() -> None:
    """Config enters at the edge of the program: the core never reads os.environ/getenv."""
    offenders = []
    for py in sorted((ROOT / "ffa_lora").rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            reads_attr = isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}
            imports_name = isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in {"environ", "getenv"} for a in node.names)
            if reads_attr or imports_name:
                offenders.append(f"{py.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_generated_protos_do_not_drift(tmp_path: Path) -> None:
    """`make proto` output equals what is committed."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "protos/ffalora/v1/federation.proto")],
        check=True,
    )
    for name in ("federation_pb2.py", "federation_pb2.pyi", "federation_pb2_grpc.py"):
        committed = ROOT / "protos/ffalora/v1" / name
        fresh = tmp_path / "ffalora/v1" / name
        assert filecmp.cmp(committed, fresh, shallow=False), f"{name} is stale: run `make proto`"
