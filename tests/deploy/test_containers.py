"""``ffa-lora demo --containers buildah``: the launcher's command lines and its clear refusals.

Running the federation from the images is ``make images-demo`` (it needs the images, minutes of
build); these tests check what runs without them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ffa_lora.errors import FFALoraError
from ffa_lora_tools import containers
from ffa_lora_tools.containers import BuildahLauncher
from ffa_lora_tools.demo import DemoSettings, parse_args


def test_demo_flag_reaches_the_settings() -> None:
    s = parse_args(["--containers", "buildah", "--image-tag", "9.9"])
    assert (s.containers, s.image_tag) == ("buildah", "9.9")
    assert DemoSettings().containers is None


def test_missing_buildah_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers.shutil, "which", lambda _name: None)
    with pytest.raises(FFALoraError, match="buildah is not installed"):
        BuildahLauncher()


@pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah not installed")
def test_unbuilt_images_are_named_with_the_fix() -> None:
    with pytest.raises(FFALoraError, match=r"localhost/ffa-lora/cloud-coordinator:no-such-tag.*make images"):
        BuildahLauncher(tag="no-such-tag")


def test_command_runs_the_entrypoint_as_the_image_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []

    class Done:
        returncode, stderr = 0, ""

    def fake_run(argv: list[str], **_kw: object) -> Done:
        calls.append(argv)
        return Done()

    monkeypatch.setattr(containers.shutil, "which", lambda _name: "/usr/bin/buildah")
    monkeypatch.setattr(containers.subprocess, "run", fake_run)
    launcher = BuildahLauncher(tag="t1")
    run = tmp_path / "demo-run"
    argv = launcher.command("edge-1", "edge", run / "config" / "edge-1.yaml", run,
                            {"OMP_NUM_THREADS": "1", "SECRET": "x"})
    assert ["buildah", "from", "--name", "ffa-lora-demo-run-edge-1", "--pull-never",
            "localhost/ffa-lora/edge-aggregator:t1"] in calls
    assert argv[:2] == ["buildah", "run"]
    assert argv[argv.index("--user") + 1] == "10001:10001"
    assert argv[argv.index("--volume") + 1] == f"{run}:{run}"
    assert argv[-5:] == ["ffa-lora", "serve", "edge", "--config", str(run / "config" / "edge-1.yaml")]
    assert "OMP_NUM_THREADS=1" in argv and not any("SECRET" in a for a in argv)
    launcher.close()
    assert calls[-1] == ["buildah", "rm", "ffa-lora-demo-run-edge-1"]
