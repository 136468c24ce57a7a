"""Start the cloud coordinator: config -> keys and store -> coordinator -> servicer -> server."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora.crypto import load_fernet_key
from ffa_lora.crypto.signing import KeyAnnouncement
from ffa_lora.crypto.threshold import KeyShare, ThresholdParams, load_key_share
from ffa_lora.errors import ConfigError, CryptoError, KeyFileError, StateError
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.decryption import ThresholdDecryption
from services.cloud_coordinator.handlers import Coordinator, RoundSummary
from services.cloud_coordinator.policies import make_privacy_engine, make_rank_policy
from services.cloud_coordinator.servicer import CoordinatorOutboxImpl, CoordinatorServicer
from services.cloud_coordinator.store import SQLiteStore
from services.common.config import FederationConfig, ServiceConfig, ThresholdConfig
from services.common.domain import FederationInfo
from services.common.evidence import Signer
from services.common.metrics import Metrics
from services.common.session import start_metrics, start_server, stop_event_on_signals, tls_files
from services.key_holder.handlers import HolderPolicy, KeyHolder
from services.key_holder.store import SQLiteHolderStore

log = logging.getLogger("ffa_lora.coordinator")


def fernet_key_from_config(cfg: ServiceConfig) -> bytes:
    c = cfg.coordinator
    assert c is not None
    env_value = os.environ.get(c.fernet_key_env) if c.fernet_key_env else None
    if c.fernet_key_file is None and not env_value:
        raise ConfigError(
            f"coordinator: no Fernet key for the key share at rest; set fernet_key_file or the "
            f"environment variable {c.fernet_key_env or 'named by fernet_key_env'}"
        )
    return load_fernet_key(file=str(c.fernet_key_file) if c.fernet_key_file else None, env_value=env_value)


def load_threshold_params(path: Path) -> ThresholdParams:
    """The public threshold parameters the ceremony wrote; :class:`ConfigError` if unusable."""
    try:
        return ThresholdParams.from_bytes(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"coordinator.threshold.params_file {path} cannot be read ({exc.strerror}); "
                          "run `ffa-lora keys ceremony` and point params_file at its threshold.params") from None
    except CryptoError as exc:
        raise ConfigError(f"coordinator.threshold.params_file {path} is not threshold parameters: {exc}") from None


def load_coordinator_share(th: ThresholdConfig, fed: FederationConfig, *, holder: str,
                           fernet_key: bytes) -> KeyShare:
    """The coordinator's own key share, checked against the parameters and the configuration."""
    params = load_threshold_params(th.params_file)
    if th.t is not None and params.threshold != th.t:
        raise ConfigError(f"coordinator.threshold.t is {th.t} but {th.params_file} needs {params.threshold} "
                          "shares; make them agree (or leave t unset)")
    if th.holders is not None and sorted(th.holders) != sorted(params.holders):
        raise ConfigError(f"coordinator.threshold.holders {sorted(th.holders)} differ from the holders in "
                          f"{th.params_file}: {sorted(params.holders)}")
    if params.public_key.bits != fed.secure_sum.key_bits:
        raise ConfigError(f"federation.secure_sum.key_bits is {fed.secure_sum.key_bits} but the threshold key "
                          f"in {th.params_file} has {params.public_key.bits} bits; make them agree")
    others = sum(h.startswith("keyholder/") for h in params.holders)
    if others < 2 and not fed.test_mode:
        raise ConfigError(f"{th.params_file} names {others} key holder(s) besides the coordinator: with fewer "
                          "than 2 the coordinator and one other party hold every share it needs. Rerun the "
                          "ceremony with at least two keyholder/<id> holders (federation.test_mode allows "
                          "fewer, for tests only)")
    if holder not in params.holders:
        raise ConfigError(f"this coordinator ({holder}) is not a holder of the key in {th.params_file} "
                          f"(holders: {', '.join(params.holders)}); rerun the ceremony with it")
    try:
        share = load_key_share(th.share_file, fernet_key=fernet_key, expected_holder=holder)
    except KeyFileError as exc:
        raise ConfigError(f"coordinator.threshold.share_file: {exc}") from None
    if share.params != params:
        raise ConfigError(f"coordinator.threshold.share_file {th.share_file} belongs to another key than "
                          f"{th.params_file}; use the files of one ceremony")
    return share


def threshold_decryption(cfg: ServiceConfig, signer: Signer, metrics: Metrics) -> ThresholdDecryption:
    """The coordinator's share as a key holder (checks and durable records in its state folder)."""
    c = cfg.coordinator
    assert c is not None
    fed = c.federation
    share = load_coordinator_share(c.threshold, fed, holder=str(signer.identity),
                                   fernet_key=fernet_key_from_config(cfg))
    own = KeyHolder(share=share, store=SQLiteHolderStore(c.state_dir), metrics=metrics,
                    policy=HolderPolicy(federation=fed.name, min_clients=fed.rounds.min_clients,
                                        min_per_partial=fed.rounds.min_per_partial,
                                        max_weight=fed.secure_sum.max_weight),
                    ca_certificate=signer.ca_certificate, trust_domain=signer.identities.trust_domain,
                    workers=c.decrypt_workers)
    return ThresholdDecryption(params=share.params, own=own, metrics=metrics,
                               timeout_s=c.threshold.decrypt_timeout_s, workers=c.decrypt_workers)


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
    loaded = tls_files(cfg.tls).load()
    signer = Signer(loaded)
    metrics = start_metrics("coordinator", cfg.metrics)
    decryption = threshold_decryption(cfg, signer, metrics)
    pub = decryption.params.public_key
    announcement = signer.sign(KeyAnnouncement(fed.name, pub, decryption.params).canonical_bytes())
    spec = lora_spec(fed)
    ops = LoraAdapterOps(spec, labels=fed.labels, evaluation=fed.evaluation)
    outbox = CoordinatorOutboxImpl(FederationInfo(fed.name, tuple(fed.labels), spec), announcement)
    coordinator = Coordinator(
        fed=fed, store=store, public_key=pub, decryption=decryption, adapter_ops=ops, outbox=outbox,
        metrics=metrics, privacy=make_privacy_engine(fed), rank_policy=make_rank_policy(fed, ops),
        export_dir=c.export_dir or Path(c.state_dir) / "adapter", on_round=on_round or _log_round,
    )
    servicer = CoordinatorServicer(coordinator, outbox, c.limits, decryption,
                                   federation=loaded.federation)
    server, port, health_servicer = await start_server(
        listen=c.listen, tls=cfg.tls, limits=c.limits,
        register=lambda s: pb_grpc.add_CoordinatorServiceServicer_to_server(servicer, s),
        service_names=["ffalora.v1.CoordinatorService"],
    )
    log.info("coordinator listening on port %d (federation %s, key %s…, threshold %d of %s)", port, fed.name,
             pub.fingerprint[:12], decryption.params.threshold, ", ".join(decryption.params.holders))
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
        servicer.shutdown_holders(coordinator.finish_reason)
        await asyncio.sleep(2.0)  # let shutdown messages reach the edges and Prometheus scrape the end
    finally:
        for t in (runner, stopper):
            t.cancel()
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=1.0)
        decryption.close()
        store.close()
    return coordinator


def _log_round(s: RoundSummary) -> None:
    acc = f"{s.accuracy:.4f}" if s.accuracy is not None else "n/a"
    log.info("round %d committed: clients=%d loss=%.4f acc=%s uploaded=%dB crypto=%.1fs train=%.1fs eps=%.3f",
             s.round, s.clients, s.loss, acc, s.bytes_uploaded, s.crypto_seconds, s.train_seconds, s.epsilon)
