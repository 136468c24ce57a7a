"""The services as separate OS processes over mutual TLS on loopback: two rounds on a tiny
model decrypted by threshold (the coordinator and a key holder), the exported adapter reloaded
with peft, no whole private key anywhere, and no planted identifier anywhere outside the site's
own data file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ffa_lora.deid.checksums import gb11643_check_char, luhn_check_digit
from ffa_lora_tools.demo import DemoSettings, prepare, run_demo
from ffa_lora_tools.harness.tiny_model import tiny_bert

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def planted_identifiers() -> dict[str, str]:
    rid17 = "11010519491231002"
    card15 = "622202123456789"
    return {
        "email": "zhang.wei.planted@example.com",
        "phone": "13812345678",
        "resident_id": rid17 + gb11643_check_char(rid17),
        "card": card15 + luhn_check_digit(card15),
    }


def test_processes_two_rounds_peft_reload_and_no_leaks(tmp_path: Path) -> None:
    model_dir = tiny_bert(tmp_path / "tiny-bert")
    settings = DemoSettings(name="e2e", out_dir=tmp_path / "runs", model=str(model_dir), rounds=2, local_epochs=1.0,
                            key_bits=512, bits=16, clip=0.5, max_train_per_site=30, max_test=30, deid=True,
                            quiet=True, patience=5, timeout_s=600)
    layout = prepare(settings)
    secrets_ = planted_identifiers()
    site_file: Path = next(iter(layout["site_files"].values()))
    with open(site_file, "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([f"@united call me at {secrets_['phone']} or mail {secrets_['email']}", "negative"])
        w.writerow([f"患者身份证号{secrets_['resident_id']}，银行卡{secrets_['card']}", "neutral"])
    summary = run_demo(settings, layout=layout)

    assert summary["rounds"] == 2
    run: Path = layout["run"]
    # The exported adapter is standard PEFT: reload it on the base model and predict.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ffa_lora.lora import read_peft_adapter

    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    model = PeftModel.from_pretrained(base, run / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(**tok(["the flight was great", "bad delay"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    exported = read_peft_adapter(run / "adapter")
    b_keys = [k for k in exported if "lora_B" in k]
    assert b_keys and any(np.abs(exported[k]).max() > 0 for k in b_keys), "B must have moved from zero"

    # De-identification ran before tokenization and no raw identifier left the site.
    client_logs = "".join((run / "logs" / f"{c}.log").read_text(errors="replace") for c in layout["clients"])
    assert "EMAIL_ADDRESS" in client_logs and "PHONE_NUMBER" in client_logs
    scanned = list((run / "logs").glob("*.log")) + list((run / "state" / "coordinator").rglob("*")) + [
        run / "summary.json"] + list((run / "adapter").glob("*"))
    for path in scanned:
        if path.is_file():
            blob = path.read_bytes()
            for kind, value in secrets_.items():
                assert value.encode() not in blob, f"{kind} found in {path}"
    rounds = json.loads((run / "summary.json").read_text())["per_round"]
    assert [r["clients"] for r in rounds] == [3, 3]

    # Threshold decryption: each round's sum took the coordinator's share and one key holder's;
    # no file of the run holds a whole private key (only sealed shares and public parameters).
    assert summary["threshold"]["t"] == 2 and summary["threshold"]["holders"] == [
        "coordinator", "keyholder-1", "keyholder-2"]
    served = sum((run / "logs" / f"{k}.log").read_text().count("decryption share of") for k in layout["keyholders"])
    assert served == 2, served  # one key holder per round, t - 1 = 1
    assert not [p for p in run.rglob("*") if p.suffix == ".key" and "paillier" in p.name]
    assert sorted(p.name for p in (run / "keys").glob("*.share")) == [
        "coordinator-coordinator.share", "keyholder-keyholder-1.share", "keyholder-keyholder-2.share"]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_sigterm_to_the_demo_stops_the_services_it_started(tmp_path: Path) -> None:
    """``kill <demo pid>`` (SIGTERM) must not leave the coordinator, key holders, edges and clients
    running."""
    import subprocess
    import sys
    import time

    model_dir = tiny_bert(tmp_path / "tiny-bert")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ffa_lora_tools.cli", "demo", "--name", "sig", "--out-dir", str(tmp_path / "runs"),
         "--model", str(model_dir), "--key-bits", "512", "--rounds", "50", "--max-train-per-site", "30",
         "--max-test", "30", "--no-deid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if b"started coordinator" in line:
                break
        else:
            pytest.fail(f"the demo exited ({proc.wait()}) before starting its services")
        # the services (the key ceremony's multiprocessing may leave its resource tracker too)
        children = [c for c in _children(proc.pid) if b"serve" in _cmdline(c)]
        assert len(children) == 8  # coordinator, 2 key holders, 2 edges, 3 clients
        proc.terminate()
        assert proc.wait(timeout=60) == 143
        deadline = time.monotonic() + 15
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [c for c in children if _alive(c)]
    finally:
        if proc.poll() is None:
            proc.kill()
