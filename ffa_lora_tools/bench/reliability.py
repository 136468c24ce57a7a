"""``ffa-lora bench reliability``: inject faults into a real federation and report, as JSON,
the faults injected by kind, rounds completed, updates lost, updates double-counted, crashes
and fuzz cases run (lost, double-counted and crashes must all be 0).

The scenarios and fuzzers live in :mod:`ffa_lora_tools.harness` and are shared with the
reliability tests: the coordinator and edges run as OS processes over mutual TLS on loopback;
clients are real agents uploading known synthetic updates; each scenario ends with an audit of
the coordinator's stored adapters that recovers how many times each client's update is in each
committed round. Faults: a client vanishing mid-upload, a late update, the coordinator
SIGKILLed at several points of a round and restarted, an edge SIGKILLed mid-round (clients move
to a replica and resend), latency / dropped connections / partitions through a TCP fault proxy,
a malicious client's garbage ciphertexts, and hypothesis fuzzing of the edge and coordinator
handlers and of the edge servicer with random bytes over gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from ffalora.v1 import federation_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffa_lora_tools.harness import fuzzing, scenarios
from ffa_lora_tools.harness.cluster import make_pki
from ffa_lora_tools.jsonsafe import dumps
from services.common.certs import TLSFiles, role_dns_name
from services.common.tls import channel_credentials, pinned_name_option


def _say(msg: str) -> None:
    print(f"[reliability] {msg}", file=sys.stderr, flush=True)


QUICK = [("dropout_mid_upload", ()), ("late_update", ()), ("coordinator_sigkill", ("training",)),
         ("coordinator_sigkill", ("ledger",)), ("edge_sigkill", ()), ("network_faults", ("drops",)),
         ("network_faults", ("partition",)), ("garbage_ciphertext", ())]
FULL = QUICK[:2] + [("coordinator_sigkill", (p,)) for p in ("waiting", "training", "aggregating", "ledger", "committed")] + [
    ("edge_sigkill", ()), ("edge_sigkill_other", ()), ("network_faults", ("latency",)), ("network_faults", ("drops",)),
    ("network_faults", ("partition",)), ("garbage_ciphertext", ())]


def run_fuzz(*, examples: int, work: Path) -> dict[str, Any]:
    """The hypothesis properties of the reliability tests' fuzzing, outside pytest."""
    out: dict[str, Any] = {"crashes": 0, "invariant_violations": 0, "failures": []}
    cfg = settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    def attempt(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError as exc:
            out["invariant_violations"] += 1
            out["failures"].append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a handler raised something other than a Rejection
            out["crashes"] += 1
            out["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)

    @cfg
    @given(st.lists(fuzzing.edge_op_strategy(), max_size=25))
    def edge_prop(ops: list[Any]) -> None:
        fuzzing.run_edge_ops(ops)

    @cfg
    @given(st.lists(fuzzing.coordinator_op_strategy(), max_size=8))
    def coord_prop(ops: list[Any]) -> None:
        fuzzing.run_coordinator_ops(ops)

    attempt("edge_handlers", edge_prop)
    attempt("coordinator_partials", coord_prop)

    certs = make_pki(work / "fuzz-pki", edges=["edge-fuzz"], clients=["mallory", "good"])

    def channel(srv: Any, cid: str) -> grpc.Channel:
        files = TLSFiles(ca=certs / "ca.crt", cert=certs / f"client-{cid}.crt", key=certs / f"client-{cid}.key")
        return grpc.secure_channel(srv.address, channel_credentials(files),
                                   options=[pinned_name_option(role_dns_name("edge", federation="ffa-lora"))])

    with fuzzing.EdgeServerThread(certs, limits={"max_messages_per_s": 1e6}) as srv:
        hello = pb.ClientSessionRequest(hello=pb.ClientHello(num_samples=10)).SerializeToString()

        @settings(max_examples=max(20, examples // 3), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.booleans())
        def raw_prop(msgs: list[bytes], hello_first: bool) -> None:
            fuzzing.FUZZ_CASES["grpc_raw_bytes"] += 1
            before = srv.snapshot()
            with channel(srv, "mallory") as ch:
                code, _ = fuzzing.raw_session(ch, ([hello] if hello_first else []) + msgs)
            assert code in fuzzing.RAW_ALLOWED, f"stream ended with {code}"
            assert srv.snapshot() == before, "random bytes changed the edge's round state"

        attempt("grpc_raw_bytes", raw_prop)

        def still_serves() -> None:
            srv.new_round(fuzzing.ROUND + 1)
            time.sleep(0.2)
            u = fuzzing.make_upload(srv.pub, srv.layout, seed=99, key="good:1")
            with channel(srv, "good") as ch:
                acks = fuzzing.good_session(ch, u, round=fuzzing.ROUND + 1, contribution=fuzzing.sign_upload(
                    u, "good", round=fuzzing.ROUND + 1, weight=1, base_version=0, certs=certs))
            assert acks and acks[0].status.code == 0, "the edge refused a good client after the fuzz"
            assert srv.snapshot()[2] == ("good",)

        attempt("good_client_after_fuzz", still_serves)
    out["cases"] = dict(fuzzing.FUZZ_CASES)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffa-lora bench reliability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="every kill point and fault kind (about twice as long)")
    p.add_argument("--fuzz-examples", type=int, default=300, help="hypothesis examples per handler property")
    p.add_argument("--only", default=None, help="comma-separated scenario names (e.g. fuzz,late_update)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep logs, configs and state here")
    args = p.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ffa-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    t0 = time.monotonic()
    faults: Counter[str] = Counter()
    results: list[dict[str, Any]] = []
    crashes = lost = double = rounds = 0
    fuzz: dict[str, Any] = {"cases": {}}
    if only is None or "fuzz" in only:
        _say(f"fuzzing ({args.fuzz_examples} examples per handler property)")
        fuzz = run_fuzz(examples=args.fuzz_examples, work=work)
        crashes += fuzz["crashes"]
        faults["fuzz_case"] += sum(fuzz["cases"].values())
    plan = FULL if args.full else QUICK
    for i, (name, params) in enumerate(plan):
        label = "_".join([name, *params])
        if only is not None and name not in only and label not in only:
            continue
        _say(f"scenario {label}")
        root = work / f"{i:02d}-{label}"
        try:
            if name == "edge_sigkill_other":
                coro = scenarios.edge_sigkill(root, failover="other_edge")
            else:
                coro = getattr(scenarios, name)(root, *params)
            res = asyncio.run(coro).to_dict()
        except Exception as exc:  # noqa: BLE001 - a scenario that cannot finish is a failure to report
            traceback.print_exc(file=sys.stderr)
            res = {"name": label, "error": f"{type(exc).__name__}: {exc}", "faults": {}, "rounds_committed": 0,
                   "lost": 0, "double_counted": 0, "crashes": 1}
        results.append(res)
        faults.update(res["faults"])
        rounds += res["rounds_committed"]
        lost += res["lost"]
        double += res["double_counted"]
        crashes += res["crashes"]
        _say(f"  -> rounds {res['rounds_committed']}, lost {res['lost']}, double-counted {res['double_counted']}, "
             f"crashes {res['crashes']}{', ' + res['error'] if 'error' in res else ''}")
    report = {
        "faults_injected": dict(sorted(faults.items())),
        "rounds_completed": rounds,
        "updates_lost": lost,
        "updates_double_counted": double,
        "crashes": crashes,
        "fuzz_cases_run": sum(fuzz.get("cases", {}).values()),
        "fuzz": fuzz,
        "scenario_errors": [r["name"] for r in results if "error" in r or r.get("details")],
        "scenarios": results,
        "seconds": round(time.monotonic() - t0, 1),
        "work_dir": str(work),
    }
    report["passed"] = (lost == 0 and double == 0 and crashes == 0 and not fuzz.get("invariant_violations")
                        and not any("error" in r for r in results))
    if args.work_dir is None and report["passed"]:
        shutil.rmtree(work, ignore_errors=True)  # kept (and named in the report) when something failed
        del report["work_dir"]
    print(dumps(report, indent=2, default=str))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
