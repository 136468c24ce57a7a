"""The protocol's own checks: ``buf lint`` with the STANDARD rules and ``buf breaking`` (WIRE,
see buf.yaml) against the proto of the previous commit.

buf comes from the npm registry (``make proto-tools`` installs it, pinned, into ``.tools/``);
without it these tests skip and say how to get it. The base of the breaking check is
``HEAD~1`` (on main: the previous commit), or the revision in ``FFALORA_PROTO_BASE``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCAL_BUF = ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"


def _buf() -> str:
    found = str(LOCAL_BUF) if LOCAL_BUF.exists() else shutil.which("buf")
    if found is None:
        pytest.skip("buf is not installed: run `make proto-tools` (needs npm) to lint the proto")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_buf_lint_standard() -> None:
    out = _run(_buf(), "lint")
    assert out.returncode == 0, out.stdout + out.stderr


def _base_protos(tmp_path: Path) -> Path:
    """The protos/ folder of the base revision, with this checkout's buf.yaml beside it."""
    base = os.environ.get("FFALORA_PROTO_BASE", "HEAD~1")
    if shutil.which("git") is None:
        pytest.skip("git is not available: cannot read the previous commit's proto")
    archive = subprocess.run(["git", "archive", base, "protos"], check=False, cwd=ROOT, capture_output=True,
                             timeout=60)
    if archive.returncode != 0:
        pytest.skip(f"no proto at {base} to compare with (a shallow clone?): "
                    f"{archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp_path, filter="data")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def test_buf_breaking_wire_against_previous_commit(tmp_path: Path) -> None:
    buf = _buf()
    out = _run(buf, "breaking", "--against", str(_base_protos(tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr


def test_buf_breaking_catches_a_type_change(tmp_path: Path) -> None:
    """Guards the check above against passing vacuously: a field whose wire type changed is
    reported."""
    buf = _buf()
    base = tmp_path / "base"
    shutil.copytree(ROOT / "protos", base / "protos")
    shutil.copy(ROOT / "buf.yaml", base / "buf.yaml")
    proto = base / "protos" / "ffalora" / "v1" / "federation.proto"
    text = proto.read_text()
    assert "uint32 warmup_rounds = 11;" in text
    proto.write_text(text.replace("uint32 warmup_rounds = 11;", "string warmup_rounds = 11;"))
    out = _run(buf, "breaking", "--against", str(base))
    assert out.returncode != 0 and "warmup_rounds" in out.stdout + out.stderr
