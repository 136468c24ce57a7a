"""``ffa-lora demo --data DIR`` on a folder of CSV files the project has never seen: columns
with unusual names found from their content, a semicolon-delimited site, numeric-looking noise
columns; the whole federation runs as OS processes on the tiny model."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ffa_lora_tools.harness.tiny_model import tiny_bert

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

WORDS = {
    "praise": ["great", "love", "happy", "good", "thanks"],
    "complaint": ["awful", "hate", "bad", "late", "delay"],
    "question": ["time", "seat", "card", "fee", "today"],
}


def make_folder(root: Path) -> dict[str, int]:
    """Three sites with skewed classes and a test file; returns the rows per file."""
    rng = random.Random(7)
    sizes = {"north-clinic": 40, "south_clinic": 30, "East.Clinic": 36, "test": 30}
    for name, n in sizes.items():
        skew = {"north-clinic": "praise", "south_clinic": "complaint"}.get(name)
        records = []
        for i in range(n):
            kind = skew if skew and i % 3 else list(WORDS)[(i // 3) % 3]
            words = rng.sample(WORDS[kind], 2) + rng.sample(
                ["the", "my", "was", "very", "service"], 2
            )
            records.append(
                {
                    "ref": f"R-{name[:2]}-{i}",
                    "visit_score": f"{rng.uniform(0, 10):.3f}",
                    "what they wrote": " ".join(rng.sample(words, 4)),
                    "kind": kind,
                }
            )
        delimiter = ";" if name == "south_clinic" else ","
        with (root / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(records[0]), delimiter=delimiter)
            w.writeheader()
            w.writerows(records)
    return sizes


def test_demo_runs_on_a_folder_of_own_csv_files(tmp_path: Path) -> None:
    data = tmp_path / "feedback"
    data.mkdir()
    sizes = make_folder(data)
    model = tiny_bert(tmp_path / "tiny-bert")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffa_lora_tools.cli",
            "demo",
            "--data",
            str(data),
            "--out-dir",
            str(tmp_path / "runs"),
            "--model",
            str(model),
            "--key-bits",
            "512",
            "--bits",
            "16",
            "--rounds",
            "2",
            "--local-epochs",
            "1",
            "--no-deid",
            "--timeout",
            "600",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        timeout=850,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "text column 'what they wrote' (the only column of free text)" in proc.stderr
    assert "label column 'kind' (the only other column with a few repeated values)" in proc.stderr

    run = tmp_path / "runs" / "feedback-demo"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["clients"] == 3
    assert [r["clients"] for r in summary["per_round"]] == [3, 3]
    assert summary["final_accuracy"] is not None
    info = summary["data"]
    assert info["label_names"] == ["complaint", "praise", "question"]
    assert info["sites"] == {k: v for k, v in sizes.items() if k != "test"} and info["test"] == 30
    coordinator = yaml.safe_load((run / "config" / "coordinator.yaml").read_text())
    assert coordinator["coordinator"]["federation"]["labels"] == ["complaint", "praise", "question"]
    client = yaml.safe_load((run / "config" / "site-south_clinic.yaml").read_text())
    with open(client["client"]["data"]["path"], encoding="utf-8") as fh:
        copied = list(csv.DictReader(fh))
    with (data / "south_clinic.csv").open(encoding="utf-8") as fh:
        original = list(csv.DictReader(fh, delimiter=";"))
    assert [(r["text"], r["label"]) for r in copied] == [
        (r["what they wrote"], r["kind"]) for r in original
    ]
