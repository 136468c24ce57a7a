"""docs/config.md is generated from the config models: it must be current, every field must
say what it does, and the generator must render what the models say (not a fixed text)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from ffa_lora_tools import config_docs
from ffa_lora_tools.config_docs import render, undocumented

REPO = Path(__file__).resolve().parents[3]


def test_docs_config_md_is_current() -> None:
    current = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert current == render(), (
        "docs/config.md is out of date with services/common/config.py: run `make config-docs` "
        "(or `ffa-lora config-docs`) and commit the result"
    )


def test_every_field_and_section_is_described() -> None:
    assert undocumented() == [], (
        "add Field(description=...) / a docstring in services/common/config.py"
    )


class _Inner(BaseModel):
    """Inner section."""

    ratio: float = Field(default=0.25, gt=0, le=1, description="A share.")


class _Root(BaseModel):
    """Root of a toy file."""

    service: Literal["alpha", "beta_role"] = Field(description="Which one.")
    shared: list[str] = Field(default_factory=lambda: ["x"], min_length=1, description="Names.")
    alpha: _Inner | None = None
    beta_role: _Inner | None = None
    plain: int = 3


def test_render_follows_the_models() -> None:
    text = render(_Root)
    assert "## Alpha (`service: alpha`)" in text and "## Beta role (`service: beta_role`)" in text
    assert "| `ratio` | number | `0.25` | > 0, ≤ 1 | A share. |" in text
    assert '| `service` | `"alpha"` \\| `"beta_role"` | required |  | Which one. |' in text
    assert '| `shared` | list of string | `["x"]` | at least 1 item | Names. |' in text
    assert "### `beta_role`" in text and "[`alpha`](#alpha) or `null`" in text
    assert undocumented(_Root) == ["plain"]


def test_check_mode_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "config.md"
    assert config_docs.main(["--out", str(out), "--check"]) == 1
    assert config_docs.main(["--out", str(out)]) == 0
    assert config_docs.main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "edited by hand\n")
    assert config_docs.main(["--out", str(out), "--check"]) == 1
    assert "run `ffa-lora config-docs`" in capsys.readouterr().err
