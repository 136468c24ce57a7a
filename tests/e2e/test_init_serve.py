"""``ffa-lora init`` output starts a federation as it is: each service (the two key holders
included) runs ``ffa-lora serve`` from its own folder, with nothing edited, over mutual TLS on loopback (tiny model, a 512-bit
test-only key set through the spec's settings)."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ffa_lora_tools.demo import _rounds, free_port
from ffa_lora_tools.harness.tiny_model import tiny_bert

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
WORDS = {
    "negative": ["awful", "hate", "bad", "late"],
    "positive": ["great", "love", "happy", "good"],
}


def write_site(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "stars"])
        for i in range(n):
            label = "positive" if i % 2 else "negative"
            w.writerow([" ".join(rng.sample(WORDS[label], 2) + ["the", "service"]), label])
    return path


def spec_for(tmp_path: Path, model: Path) -> dict[str, object]:
    coord, e1, e2 = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    data.mkdir()
    return {
        "federation": "loopback-test",
        "labels": ["negative", "positive"],
        "model": str(model),
        "coordinator": {
            "address": f"127.0.0.1:{coord}",
            "listen": f"127.0.0.1:{coord}",
            "evaluation": str(write_site(data / "public.csv", 20, seed=9)),
        },
        "edges": [
            {
                "id": "edge-a",
                "region": "region-a",
                "address": f"127.0.0.1:{e1}",
                "listen": f"127.0.0.1:{e1}",
            },
            {
                "id": "edge-b",
                "region": "region-b",
                "address": f"127.0.0.1:{e2}",
                "listen": f"127.0.0.1:{e2}",
            },
        ],
        "clients": [
            {
                "id": f"site-{i}",
                "edge": ["edge-a", "edge-b"] if i % 2 else "edge-b",
                "data": str(write_site(data / f"site-{i}.csv", 24, seed=i)),
                "text_column": "review",
                "label_column": "stars",
                "deid": False,
            }
            for i in range(3)
        ],
        "settings": {
            "secure_sum": {"key_bits": 512, "bits": 16},  # test-only key size
            "test_mode": True,  # which the services refuse without this switch
            "rounds": {"max_rounds": 2, "wait_for_clients_s": 120, "patience": 5},
            "training": {"local_epochs": 1.0},
            "evaluation": {"text_column": "review", "label_column": "stars"},
        },
    }


def wait_for_log(path: Path, lines: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if all(line in text for line in lines):
            return
        time.sleep(0.2)
    raise AssertionError(f"not in {path.name} after {timeout:.0f} s: {lines}\n{text[-3000:]}")


def test_init_output_serves_a_federation_unedited(tmp_path: Path) -> None:
    model = tiny_bert(tmp_path / "tiny-bert", num_labels=2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_for(tmp_path, model)))
    out = tmp_path / "federation"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(REPO), str(REPO / "protos"), os.environ.get("PYTHONPATH", "")]
        ),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    cli = [sys.executable, "-m", "ffa_lora_tools.cli"]
    made = subprocess.run(
        [*cli, "init", str(spec), "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert "move it to offline storage" in made.stderr

    services = (
        [("coordinator", out / "coordinator")]
        + [("keyholder", p) for p in sorted((out / "keyholders").iterdir())]
        + [("edge", p) for p in sorted((out / "edges").iterdir())]
        + [("client", p) for p in sorted((out / "clients").iterdir())]
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(role: str, folder: Path) -> None:  # each from its own folder, as README.md says
        log = (tmp_path / f"{folder.name}.log").open("wb")
        procs[folder.name] = subprocess.Popen(
            [*cli, "serve", role, "--config", "config.yaml"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    try:
        # The key holders join before the rounds start. The threshold needs only one of them, so
        # a holder still in its reconnect backoff could otherwise miss a two-round federation
        # entirely, never hear that it finished and keep retrying until it is stopped.
        holders = [folder.name for role, folder in services if role == "keyholder"]
        for role, folder in services:
            if role in ("coordinator", "keyholder"):
                start(role, folder)
        wait_for_log(tmp_path / "coordinator.log",
                     [f"key holder keyholder/{name} connected" for name in holders], timeout=180)
        for role, folder in services:
            if role in ("edge", "client"):
                start(role, folder)
        assert procs["coordinator"].wait(timeout=700) == 0, (
            tmp_path / "coordinator.log"
        ).read_text()[-3000:]
        for name in ("site-0", "site-1", "site-2", "keyholder-1", "keyholder-2"):
            assert procs[name].wait(timeout=60) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 15
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    rounds = _rounds(out / "coordinator" / "state" / "coordinator.db")
    assert [r["clients"] for r in rounds] == [3, 3]
    assert rounds[-1].get("accuracy") is not None  # scored on the spec's evaluation file
    assert (out / "coordinator" / "state" / "adapter" / "adapter_config.json").is_file()
    assert not list(out.rglob("paillier.key"))  # no file anywhere holds the whole private key
    assert (out / "keyholders" / "keyholder-1" / "state" / "keyholder.db").is_file()  # it decrypted
