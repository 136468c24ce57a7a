"""``ffa-lora bench load``: many lightweight clients over real mutual-TLS streams against a real
coordinator and several edge processes on loopback.

For each stage (default 100, 250, 500, 1000 clients) a fresh federation runs: the coordinator
and ``--edges`` edge aggregators as separate processes, and the clients in one or two generator
processes (:mod:`ffa_lora_tools.bench.load_clients`: real client agents with their own certificates,
one precomputed encrypted update reused under fresh round numbers). All clients connect first,
then the coordinator starts and runs ``--rounds`` synchronous rounds with min_clients = all of
them. Reported per stage: round latency percentiles (plan -> commit, from the coordinator's
store), per-update latency (task -> acknowledgement, at the clients), the resident memory of
every edge process (psutil; before clients, with all clients registered, peak during the
rounds), the most client sessions an edge held open at once, and rejected updates (client
acknowledgements and the edges' metrics).

``--session check_in`` (default) runs the clients as check-in clients (``client.session:
check_in``: they leave while idle and come back every ``--check-in-s`` seconds), so an edge
holds only the sessions of clients checking in at that moment -- the mode for federations of
hundreds of sites. ``--session persistent`` keeps one mutual-TLS stream per client open for the
whole run: lower round latency, but each open connection costs the edge ~100 KB of gRPC/TLS
state.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Self

import numpy as np

from ffa_lora.crypto import Encryptor, PackingLayout, generate_keypair, new_fernet_key
from ffa_lora.crypto.signing import ContributionClaim
from ffa_lora.lora import LoRASpec
from ffa_lora_tools.harness.cluster import Cluster, key_ceremony, make_pki
from ffa_lora_tools.harness.tiny_model import tiny_bert
from ffa_lora_tools.jsonsafe import dumps
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.common import domain as d
from services.common.certs import TLSFiles
from services.common.config import MIN_CLIENTS, MIN_KEY_BITS, LimitsConfig, parse_federation
from services.common.evidence import Signer
from services.common.metrics import create_metrics
from services.common.transfer import outgoing
from services.edge_aggregator.handlers import EdgeAggregator


def _say(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


def percentiles(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    a = np.asarray(xs, dtype=float)
    return {"n": len(xs), "p50": round(float(np.percentile(a, 50)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3)}


class RssSampler:
    """Samples the RSS of the edge processes every ``period`` seconds in a thread."""

    def __init__(self, cluster: Cluster, names: list[str], period: float = 0.25) -> None:
        self.cluster, self.names, self.period = cluster, names, period
        self.peak: dict[str, int] = {n: 0 for n in names}
        self.max_sessions: dict[str, int] = {n: 0 for n in names}
        self.metrics: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for n in self.names:
                self.peak[n] = max(self.peak[n], self.cluster.services[n].rss())
                if i % 2 == 0:  # the edges exit with the federation: keep their last counters
                    s = self.cluster.scrape(n)
                    if s:
                        self.metrics[n] = s
                        self.max_sessions[n] = max(self.max_sessions[n], int(s.get("ffalora_connected_clients", 0)))
            i += 1
            self._stop.wait(self.period)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _mb(x: int) -> float:
    return round(x / 2**20, 1)


def aggregation_heap(n: int, *, key_bits: int, bits: int, values: int, max_clients: int, certs: Path,
                     client_ids: list[str], edge_id: str) -> dict[str, float]:
    """Python heap of the real EdgeAggregator handler after ``n`` clients uploaded one round
    (no transport): the running sum is O(update size); what grows is per-contributor metadata
    (its scalars and its signed contribution claim, kept for the key holders)."""
    class _Null:
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None

    pub, _ = _KEYS.setdefault(key_bits, generate_keypair(bits=key_bits, test_only=key_bits < 2048))
    layout = PackingLayout.derive(key_bits=key_bits, bits=bits, max_clients=max(n, max_clients), max_weight=1)
    vec = Encryptor(pub, layout, workers=0).encrypt_codes(np.zeros(values, dtype=np.int64))
    out = outgoing(vec)
    ids = client_ids[:n]
    signers = {c: Signer(TLSFiles.for_identity(certs, role="client", id=c).load()) for c in ids}
    task = d.TrainingParams("ffa", "B", 1.0, 0.01, 8, 0)
    claims = {c: signers[c].sign(ContributionClaim.for_vector(
        vec, federation="x", client_id=c, round=1, phase="B", rank=4, weight=1).canonical_bytes()) for c in ids}
    edge_signer = Signer(TLSFiles.for_identity(certs, role="edge", id=edge_id).load())
    tracemalloc.start()
    edge = EdgeAggregator(edge_id=edge_id, region="r", limits=LimitsConfig(), metrics=create_metrics("edge"),
                          outbox=_Null(), signer=edge_signer)  # type: ignore[arg-type]
    edge.on_coordinator_welcome(pub, "sync", d.FederationInfo("x", ("a", "b"), LoRASpec(model="m", num_labels=2)))
    plan = d.RoundPlan(round=1, adapter_version=0, assignments=tuple(d.Assignment(c, 4, 1, values) for c in ids),
                       secure_sum=d.SecureSumParams(layout.to_bytes(), 0.05, bits, pub.fingerprint),
                       privacy=d.PrivacyParams(), training=task,
                       deadline_unix=time.time() + 3600, min_clients=1, mode="sync", num_values=values)
    base = tracemalloc.get_traced_memory()[0]
    for c in ids:
        edge.client_connected(c, num_samples=100, device="cpu", adapter_version=0)
    after_connect = tracemalloc.get_traced_memory()[0]
    edge.on_plan(plan)
    for c in ids:
        edge.begin_upload(c, round=1, header=out.header, num_ciphertexts=out.num_ciphertexts)
        for off, data in out.chunks:
            edge.upload_chunk(c, round=1, offset=off, data=data)
        edge.commit_upload(c, round=1, sha256=out.sha256, idempotency_key=f"{c}:1", num_samples=100, rank=4,
                           quality=d.Quality(), base_version=0, train_seconds=0.0, crypto_seconds=0.0,
                           contribution=claims[c])
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"clients": n, "connected_kb": round((after_connect - base) / 1024, 1),
            "after_round_kb": round((cur - base) / 1024, 1), "peak_kb": round((peak - base) / 1024, 1),
            "running_sum_kb": round(len(vec.values) * layout.ciphertext_bytes / 1024, 1)}


_KEYS: dict[int, Any] = {}


def prepare_key(work: Path, key_bits: int) -> tuple[Path, Path, float]:
    """The threshold key (coordinator + two key holders) dealt once for all stages; the
    coordinator's share sealed with one Fernet key."""
    fernet = work / "fernet.key"
    fernet.write_bytes(new_fernet_key())
    t0 = time.perf_counter()
    keys = key_ceremony(work / "keys", coordinator_fernet=fernet, bits=key_bits, workers=None)
    return keys, fernet, time.perf_counter() - t0


def run_stage(n: int, *, work: Path, certs: Path, model: Path, key: Path, fernet: Path, args: argparse.Namespace,
              client_ids: list[str], edge_ids: list[str]) -> dict[str, Any]:
    root = work / f"stage-{n}"
    fed = {
        "name": "load", "seed": 7,
        "rounds": {"max_rounds": args.rounds, "min_clients": n, "deadline_s": args.deadline,
                   "wait_for_clients_s": 600, "patience": 1000},
        "secure_sum": {"key_bits": args.key_bits, "bits": args.bits, "clip": 0.05,
                       "max_clients": max(n, args.max_clients), "max_weight": 1},
        "test_mode": args.key_bits < MIN_KEY_BITS or n < MIN_CLIENTS,  # a benchmark, not a federation
    }
    limits: dict[str, Any] = {"max_messages_per_s": 500.0}
    if args.max_sessions:
        limits["max_client_sessions"] = args.max_sessions
    cluster = Cluster(root, model=str(model), certs=certs, federation=fed, edge_limits=limits, metrics=True,
                      log_level="WARNING")
    cluster.share_fernet(fernet)
    cluster.install_keys(key)
    gens: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {"clients": n}
    try:
        for e in edge_ids:
            cluster.start_edge(e)
        time.sleep(1.0)
        out["edge_rss_mb_idle"] = [_mb(cluster.services[e].rss()) for e in edge_ids]
        addrs = ",".join(f"127.0.0.1:{cluster.services[e].port}" for e in edge_ids)
        ids = client_ids[:n]
        g = max(1, min(args.generators, n // 50 or 1))
        t_connect = time.time()
        for i in range(g):
            part = ids[i::g]
            f = root / f"ids-{i}.txt"
            f.write_text("\n".join(part))
            with open(root / "logs" / f"generator-{i}.log", "wb") as log:
                gens.append(subprocess.Popen(
                    [sys.executable, "-m", "ffa_lora_tools.bench.load_clients", "--certs", str(certs), "--ids-file", str(f),
                     "--edges", addrs, "--out", str(root / f"gen-{i}.json"), "--timeout", str(args.timeout),
                     "--session", args.session, "--check-in-s", str(args.check_in_s), "--model", str(model),
                     # check-in clients come online spread over one check-in interval
                     *(["--connect-rate", f"{max(1.0, len(part) / args.check_in_s):.1f}"]
                       if args.session == "check_in" else [])],
                    stdout=log, stderr=subprocess.STDOUT, cwd=str(root), env=cluster.env))
        deadline = time.time() + 300
        while True:
            # on the roster: connected, or (check-in clients) away but due back
            registered = sum(cluster.scrape(e).get("ffalora_roster_clients", 0) for e in edge_ids)
            if registered >= n:
                break
            if time.time() > deadline or any(p.poll() not in (None, 0) for p in gens):
                raise RuntimeError(f"only {registered:.0f}/{n} clients registered")
            time.sleep(0.25)
        out["connect_seconds"] = round(time.time() - t_connect, 2)
        time.sleep(1.0)
        out["edge_rss_mb_connected"] = [_mb(cluster.services[e].rss()) for e in edge_ids]
        per_edge = n / len(edge_ids)
        out["edge_rss_kb_per_client"] = round(1024 * (sum(out["edge_rss_mb_connected"]) - sum(out["edge_rss_mb_idle"]))
                                              / len(edge_ids) / per_edge, 1)
        _say(f"{n} clients registered in {out['connect_seconds']}s; starting the coordinator")
        t_start = time.time()
        with RssSampler(cluster, edge_ids) as sampler:
            cluster.start_coordinator(timeout=180)
            rc = cluster.wait_exit("coordinator", args.timeout)
            for p in gens:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        out["federation_seconds"] = round(time.time() - t_start, 2)
        out["coordinator_exit"] = rc
        out["edge_rss_mb_peak"] = [_mb(sampler.peak[e]) for e in edge_ids]
        out["edge_max_open_sessions"] = [sampler.max_sessions[e] for e in edge_ids]
        scraped = [cluster.scrape(e) or sampler.metrics.get(e, {}) for e in edge_ids]
        rounds = cluster.rounds()
        out["rounds_completed"] = len(rounds)
        out["round_seconds"] = percentiles([r["metrics"]["round_seconds"] for r in rounds])
        out["clients_per_round"] = [r["metrics"]["clients"] for r in rounds]
        lat: list[float] = []
        rejected: dict[str, int] = {}
        accepted = 0
        welcome: list[float] = []
        gen_errors: list[str] = []
        check_ins = busy = 0
        for i in range(len(gens)):
            f = root / f"gen-{i}.json"
            if not f.exists():
                gen_errors.append(f"generator {i} wrote no record")
                continue
            rec = json.loads(f.read_text())
            gen_errors += rec["errors"]
            for c in rec["clients"].values():
                check_ins += c.get("check_ins", 0)
                busy += c.get("busy_refusals", 0)
                if c["welcomed"]:
                    welcome.append(c["welcomed"] - t_start)
                for ev in c["events"].values():
                    if "ack" in ev and "task" in ev:
                        lat.append(ev["ack"] - ev["task"])
                    if ev.get("code") == 0:
                        accepted += 1
                    elif "code" in ev:
                        rejected[ev.get("reason") or "unknown"] = rejected.get(ev.get("reason") or "unknown", 0) + 1
        out["update_latency_seconds"] = percentiles(lat)
        out["updates_accepted"] = accepted
        out["rejected_updates"] = sum(rejected.values())
        out["rejected_by_reason"] = rejected
        if args.session == "check_in":
            out["check_ins"], out["sessions_refused_edge_busy"] = check_ins, busy
        # the edges' own counters, from their last /metrics scrape (they exit with the federation,
        # so the final round may be missing here; the client-side counts above are complete)
        out["edge_metrics_last_scrape"] = {
            "accepted": sum(v for s in scraped for k, v in s.items() if k.startswith("ffalora_updates_accepted_total")),
            "rejected": sum(v for s in scraped for k, v in s.items() if k.startswith("ffalora_updates_rejected_total")),
            "rejected_by_reason": {k.split('reason="')[1].split('"')[0]: v for s in scraped for k, v in s.items()
                                   if k.startswith("ffalora_updates_rejected_total") and v},
        }
        out["generator_errors"] = gen_errors[:5]
        out["crashes"] = len(cluster.unexpected_exits())
    finally:
        for p in gens:
            if p.poll() is None:
                p.kill()
        cluster.stop()
    if not args.keep:
        shutil.rmtree(root / "state", ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffa-lora bench load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=1000, help="largest number of simulated clients")
    p.add_argument("--edges", type=int, default=4, help="edge aggregator processes")
    p.add_argument("--stages", default="100,250,500,1000", help="client counts to run (capped at --clients)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per stage")
    p.add_argument("--key-bits", type=int, default=2048, choices=[512, 1024, 2048, 3072])
    p.add_argument("--bits", type=int, default=8, choices=[8, 16])
    p.add_argument("--max-clients", type=int, default=1024, help="layout headroom (secure_sum.max_clients)")
    p.add_argument("--generators", type=int, default=2, help="client generator processes")
    p.add_argument("--session", choices=["persistent", "check_in"], default="check_in",
                   help="client sessions: check-in clients that leave while idle, or held open")
    p.add_argument("--check-in-s", type=float, default=5.0, help="check-in interval of --session check_in clients")
    p.add_argument("--max-sessions", type=int, default=0,
                   help="the edges' limits.max_client_sessions (0: the default, no practical cap)")
    p.add_argument("--deadline", type=float, default=120.0, help="round deadline (s)")
    p.add_argument("--timeout", type=float, default=600.0, help="per stage (s)")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs, state)")
    args = p.parse_args(argv)
    stages = sorted({min(int(s), args.clients) for s in args.stages.split(",") if s.strip()} | {args.clients})
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ffa-load-"))
    work.mkdir(parents=True, exist_ok=True)
    edge_ids = [f"edge-{i + 1}" for i in range(args.edges)]
    client_ids = [f"load-{i:05d}" for i in range(args.clients)]
    t0 = time.perf_counter()
    _say(f"work folder {work}; issuing {len(client_ids)} client certificates")
    certs = make_pki(work / "certs", edges=edge_ids, clients=client_ids, workers=2)
    cert_s = time.perf_counter() - t0
    model = tiny_bert(work / "tiny-bert")
    _say(f"certificates in {cert_s:.1f}s; generating a {args.key_bits}-bit Paillier key")
    key, fernet, keygen_s = prepare_key(work, args.key_bits)
    result: dict[str, Any] = {
        "clients": args.clients, "edges": args.edges, "key_bits": args.key_bits, "bits": args.bits,
        "rounds_per_stage": args.rounds, "generators": args.generators, "session": args.session,
        **({"check_in_s": args.check_in_s} if args.session == "check_in" else {}),
        **({"max_client_sessions_per_edge": args.max_sessions} if args.max_sessions else {}),
        "cert_issue_seconds": round(cert_s, 2), "cert_issue_ms_per_client": round(1000 * cert_s / max(1, len(client_ids)), 2),
        "keygen_seconds": round(keygen_s, 2), "stages": [],
    }
    try:
        fed = parse_federation({"name": "load", "seed": 7, "model": {"name_or_path": str(model), "rank": 4, "alpha": 8.0,
                                                                     "max_length": 16}})
        values = LoraAdapterOps(lora_spec(fed), labels=fed.labels).num_values("B", 4)
        lay = PackingLayout.derive(key_bits=args.key_bits, bits=args.bits, max_clients=max(stages + [args.max_clients]),
                                   max_weight=1)
        result.update(values_per_update=values, ciphertexts_per_update=lay.num_ciphertexts(values),
                      update_bytes=lay.num_ciphertexts(values) * lay.ciphertext_bytes,
                      slots_per_ciphertext=lay.slots_per_ciphertext)
    except Exception as exc:  # noqa: BLE001 - informational only
        result["layout_error"] = repr(exc)
    if "values_per_update" in result:
        # what the edge's aggregation itself holds, per edge (clients / edges), without transport
        result["edge_handler_heap"] = [
            aggregation_heap(-(-n // args.edges), key_bits=args.key_bits, bits=args.bits,
                             values=result["values_per_update"], max_clients=args.max_clients, certs=certs,
                             client_ids=client_ids, edge_id=edge_ids[0]) for n in stages]
    for n in stages:
        _say(f"stage: {n} clients over {args.edges} edges")
        try:
            st = run_stage(n, work=work, certs=certs, model=model, key=key, fernet=fernet, args=args,
                           client_ids=client_ids, edge_ids=edge_ids)
        except Exception as exc:  # noqa: BLE001 - a failed stage is reported, the others still run
            st = {"clients": n, "error": f"{type(exc).__name__}: {exc}"}
        _say(json.dumps(st))
        result["stages"].append(st)
    ok = [s for s in result["stages"] if "error" not in s]
    first, last = (ok[0], ok[-1]) if ok else ({}, {})
    if first and last:
        peak0, peak1 = max(first["edge_rss_mb_peak"]), max(last["edge_rss_mb_peak"])
        mean0 = sum(first["edge_rss_mb_peak"]) / len(first["edge_rss_mb_peak"])
        mean1 = sum(last["edge_rss_mb_peak"]) / len(last["edge_rss_mb_peak"])
        result["edge_memory"] = {
            "from_clients": first["clients"], "to_clients": last["clients"],
            "peak_mb": [peak0, peak1], "ratio_of_max_peak": round(peak1 / peak0, 3),
            "ratio_of_mean_peak": round(mean1 / mean0, 3),
            "flat_within_20pct": peak1 <= 1.2 * peak0,
        }
    result["all_rounds_completed"] = bool(ok) and len(ok) == len(stages) and all(
        s["rounds_completed"] == args.rounds for s in ok)
    result["rejected_updates"] = sum(s.get("rejected_updates", 0) for s in ok)
    if args.keep or args.work_dir is not None:
        result["work_dir"] = str(work)
    print(dumps(result, indent=2))
    if not args.keep and args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result["all_rounds_completed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
