"""Start the cloud coordinator: config -> keys and store -> coordinator -> servicer -> server."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora.crypto import (
    generate_keypair,
    load_fernet_key,
    load_private_key,
    save_private_key,
)
from ffa_lora.crypto.keys import PrivateKey, PublicKey
from ffa_lora.errors import ConfigError, StateError
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.handlers import Coordinator, RoundSummary
from services.cloud_coordinator.policies import make_privacy_engine, make_rank_policy
from services.cloud_coordinator.servicer import CoordinatorOutboxImpl, CoordinatorServicer
from services.cloud_coordinator.store import SQLiteStore
from services.common.config import ServiceConfig
from services.common.domain import FederationInfo
from services.common.session import start_metrics, start_server, stop_event_on_signals, tls_files

log = logging.getLogger("ffa_lora.coordinator")

KEY_FILE = "paillier.key"


def fernet_key_from_config(cfg: ServiceConfig) -> bytes:
    c = cfg.coordinator
    assert c is not None
    env_value = os.environ.get(c.fernet_key_env) if c.fernet_key_env else None
    if c.fernet_key_file is None and not env_value:
        raise ConfigError(
            f"coordinator: no Fernet key for the private key at rest; set fernet_key_file or the "
            f"environment variable {c.fernet_key_env or 'named by fernet_key_env'}"
        )
    return load_fernet_key(file=str(c.fernet_key_file) if c.fernet_key_file else None, env_value=env_value)


def load_or_create_keys(state_dir: Path, *, key_bits: int, fernet_key: bytes,
                        test_mode: bool = False) -> tuple[PublicKey, PrivateKey]:
    """Load the encrypted private key from the state folder, or make one on first start.

    Keys below 2048 bits are made only with ``test_mode`` (``federation.test_mode``); the core's
    key generation refuses them otherwise."""
    path = state_dir / KEY_FILE
    if path.exists():
        priv = load_private_key(path, fernet_key=fernet_key)
        if priv.public_key.bits != key_bits:
            raise StateError(f"{path} holds a {priv.public_key.bits}-bit key but secure_sum.key_bits is {key_bits}")
        return priv.public_key, priv
    log.info("generating a %d-bit Paillier key pair (first start)", key_bits)
    pub, priv = generate_keypair(bits=key_bits, test_only=test_mode)
    state_dir.mkdir(parents=True, exist_ok=True)
    save_private_key(path, priv, fernet_key=fernet_key)
    return pub, priv


async def serve(cfg: ServiceConfig, *, on_round=None, ready=None) -> Coordinator:  # type: ignore[no-untyped-def]
    """Run the coordinator until the federation finishes (or SIGTERM)."""
    c = cfg.coordinator
    assert c is not None
    fed = c.federation
    store = SQLiteStore(c.state_dir)
    fp = store.get_meta("federation")
    if fp is not None and fp != fed.name:
        raise StateError(f"{c.state_dir} belongs to federation {fp!r}, config says {fed.name!r}")
    store.set_meta("federation", fed.name)
    if fed.test_mode:
        log.warning("federation.test_mode is on: small keys and min_clients=1 are allowed; never use it with real data")
    pub, priv = load_or_create_keys(Path(c.state_dir), key_bits=fed.secure_sum.key_bits,
                                    fernet_key=fernet_key_from_config(cfg), test_mode=fed.test_mode)
    metrics = start_metrics("coordinator", cfg.metrics)
    spec = lora_spec(fed)
    ops = LoraAdapterOps(spec, labels=fed.labels, evaluation=fed.evaluation)
    outbox = CoordinatorOutboxImpl(FederationInfo(fed.name, tuple(fed.labels), spec))
    coordinator = Coordinator(
        fed=fed, store=store, public_key=pub, private_key=priv, adapter_ops=ops, outbox=outbox, metrics=metrics,
        privacy=make_privacy_engine(fed), rank_policy=make_rank_policy(fed, ops),
        decrypt_workers=c.decrypt_workers, export_dir=c.export_dir or Path(c.state_dir) / "adapter",
        on_round=on_round or _log_round,
    )
    servicer = CoordinatorServicer(coordinator, outbox, c.limits, federation=tls_files(cfg.tls).load().federation)
    server, port, health_servicer = await start_server(
        listen=c.listen, tls=cfg.tls, limits=c.limits,
        register=lambda s: pb_grpc.add_CoordinatorServiceServicer_to_server(servicer, s),
        service_names=["ffalora.v1.CoordinatorService"],
    )
    log.info("coordinator listening on port %d (federation %s, key %s…)", port, fed.name, pub.fingerprint[:12])
    if ready is not None:
        ready(port, coordinator)
    stop = stop_event_on_signals()
    runner = asyncio.create_task(coordinator.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]
        if not runner.done():
            coordinator.finish("coordinator stopped by signal")
        await asyncio.sleep(2.0)  # let shutdown messages reach the edges and Prometheus scrape the end
    finally:
        for t in (runner, stopper):
            t.cancel()
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=1.0)
        store.close()
    return coordinator


def _log_round(s: RoundSummary) -> None:
    acc = f"{s.accuracy:.4f}" if s.accuracy is not None else "n/a"
    log.info("round %d committed: clients=%d loss=%.4f acc=%s uploaded=%dB crypto=%.1fs train=%.1fs eps=%.3f",
             s.round, s.clients, s.loss, acc, s.bytes_uploaded, s.crypto_seconds, s.train_seconds, s.epsilon)
