"""The layering of the project, checked on the source (see docs/architecture.md).

- ``ffa_lora`` (the algorithms) imports no transport (gRPC, generated protos), no services,
  no tools and no tests, and never reads the environment;
- in ``services`` only the transport modules (servicers, ``main``, the session and TLS
  plumbing, the error catalog, serde and the client agent's channel) touch gRPC or the
  generated protos: handlers, stores, policies and the shared domain code do not;
- ``services`` imports neither the tools (``ffa_lora_tools``) nor the tests, and the tools
  do not import the tests (tests may import anything);
- no import cycles among the project's modules;
- the committed generated protobuf code equals what ``make proto`` makes.

Imports are read with ``ast`` (module level and inside functions; ``if TYPE_CHECKING:``
blocks are left out: they never run).
"""

from __future__ import annotations

import ast
import filecmp
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ffa_lora", "services", "ffa_lora_tools")
TRANSPORT = {"grpc", "grpc_health", "ffalora"}

# The modules of ``services`` that may speak gRPC: the rest is domain code.
SERVICES_TRANSPORT = frozenset({
    "services.client_agent.agent",
    "services.client_agent.main",
    "services.cloud_coordinator.main",
    "services.cloud_coordinator.servicer",
    "services.common.errors",
    "services.common.serde",
    "services.common.session",
    "services.common.tls",
    "services.edge_aggregator.main",
    "services.edge_aggregator.servicer",
    "services.key_holder.link",
    "services.key_holder.main",
})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every project module by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` (their ``else`` is kept)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for stmt in child.orelse:
                yield stmt
                yield from _walk(stmt)
            continue
        yield child
        yield from _walk(child)


@cache
def imports(module: str) -> frozenset[tuple[str, int]]:
    """``(imported name, line)`` for every import in ``module``; ``from a import b`` yields
    ``a.b`` (a submodule or a name in ``a``), relative imports resolved."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[tuple[str, int]] = set()
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.update((f"{base}.{a.name}" if a.name != "*" else base, node.lineno)
                         for a in node.names)
    return frozenset(found)


def _top(name: str) -> str:
    return name.split(".")[0]


def _offenders(prefix: str, banned: set[str], *, exempt: frozenset[str] = frozenset()) -> list[str]:
    out = []
    for module in modules():
        if not (module == prefix or module.startswith(prefix + ".")) or module in exempt:
            continue
        for name, line in sorted(imports(module)):
            if _top(name) in banned:
                out.append(f"{module}:{line} imports {name}")
    return out


def _project_target(name: str) -> str | None:
    """The project module that importing ``name`` runs: the longest module prefix of it."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules():
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's ``__init__`` counts as a module;
    the implicit import of parent packages does not)."""
    graph: dict[str, set[str]] = {}
    for module in modules():
        targets = {_project_target(name) for name, _ in imports(module)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


# ---------------------------------------------------------------------------------------------


def test_the_checker_sees_the_project() -> None:
    """Guards the checks below against passing on an empty or misread tree."""
    assert {"ffa_lora.crypto.paillier", "services.cloud_coordinator.handlers",
            "ffa_lora_tools.cli"} <= set(modules())
    assert any(_top(name) == "grpc" for name, _ in imports("services.common.session"))
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_core_imports_no_transport_services_tools_or_tests() -> None:
    offenders = _offenders("ffa_lora", TRANSPORT | {"services", "ffa_lora_tools", "tests"})
    assert not offenders, offenders


def test_core_reads_no_environment() -> None:
    """Config enters at the edge of the program: the core never reads os.environ/getenv."""
    offenders = []
    for module, path in modules().items():
        if _top(module) != "ffa_lora":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            reads_attr = isinstance(node, ast.Attribute) and node.attr in {
                "environ", "getenv", "environb", "putenv"}
            imports_name = isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in {"environ", "getenv", "environb"} for a in node.names)
            if reads_attr or imports_name:
                offenders.append(f"{module}:{getattr(node, 'lineno', 0)}")
    assert not offenders, offenders


def test_domain_code_of_the_services_imports_no_grpc() -> None:
    """Handlers, stores, policies, transfer and the rest of the services' domain code raise
    domain errors; only the transport modules map them to gRPC."""
    assert SERVICES_TRANSPORT <= set(modules()), SERVICES_TRANSPORT - set(modules())
    offenders = _offenders("services", TRANSPORT, exempt=SERVICES_TRANSPORT)
    assert not offenders, offenders


def test_services_import_no_tools_and_no_tests() -> None:
    offenders = _offenders("services", {"ffa_lora_tools", "tests"})
    assert not offenders, offenders


def test_tools_import_no_tests() -> None:
    """The tools run from an installed wheel, where there is no tests package."""
    offenders = _offenders("ffa_lora_tools", {"tests"})
    assert not offenders, offenders


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_generated_protos_do_not_drift(tmp_path: Path) -> None:
    """`make proto` output equals what is committed."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         str(ROOT / "protos/ffalora/v1/federation.proto")],
        check=True,
    )
    for name in ("federation_pb2.py", "federation_pb2.pyi", "federation_pb2_grpc.py"):
        committed = ROOT / "protos/ffalora/v1" / name
        fresh = tmp_path / "ffalora/v1" / name
        assert filecmp.cmp(committed, fresh, shallow=False), f"{name} is stale: run `make proto`"
