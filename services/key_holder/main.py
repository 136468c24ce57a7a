"""Start a key holder: config -> its key share and durable records -> link to the coordinator."""

from __future__ import annotations

import logging
import os

from ffa_lora.crypto import load_fernet_key
from ffa_lora.crypto.threshold import load_key_share
from ffa_lora.errors import ConfigError, KeyFileError
from services.common.config import ServiceConfig
from services.common.evidence import Signer
from services.common.session import start_metrics, stop_event_on_signals, tls_files
from services.key_holder.handlers import HolderPolicy, KeyHolder
from services.key_holder.link import run_link
from services.key_holder.store import SQLiteHolderStore

log = logging.getLogger("ffa_lora.keyholder")


def build_holder(cfg: ServiceConfig, *, metrics_service: str = "keyholder") -> KeyHolder:
    """The key holder of a ``service: keyholder`` config (its share loaded and checked)."""
    k = cfg.keyholder
    assert k is not None
    loaded = tls_files(cfg.tls).load()
    signer = Signer(loaded)
    holder_id = str(loaded.identity)
    env_value = os.environ.get(k.fernet_key_env) if k.fernet_key_env and not k.fernet_key_file else None
    if k.fernet_key_file is None and not env_value:
        raise ConfigError(f"keyholder: no Fernet key for the key share; set keyholder.fernet_key_file or the "
                          f"environment variable {k.fernet_key_env or 'named by keyholder.fernet_key_env'}")
    fernet = load_fernet_key(file=str(k.fernet_key_file) if k.fernet_key_file else None, env_value=env_value)
    try:
        share = load_key_share(k.share_file, fernet_key=fernet, expected_holder=holder_id)
    except KeyFileError as exc:
        raise ConfigError(f"keyholder.share_file: {exc}") from None
    metrics = start_metrics(metrics_service, cfg.metrics)
    policy = HolderPolicy(federation=k.federation, min_clients=k.min_clients, min_per_partial=k.min_per_partial,
                          max_weight=k.weights.max_weight, weights=k.weights.declared)
    return KeyHolder(share=share, policy=policy, store=SQLiteHolderStore(k.state_dir), metrics=metrics,
                     ca_certificate=signer.ca_certificate, trust_domain=signer.identities.trust_domain,
                     workers=k.workers)


async def serve(cfg: ServiceConfig) -> KeyHolder:
    """Hold the share until the federation finishes (or SIGTERM)."""
    k = cfg.keyholder
    assert k is not None
    holder = build_holder(cfg)
    p = holder.params
    log.info("key holder %s: share %d of a %d-of-%d key (%s…), federation %s, coordinator %s", holder.holder,
             holder.share.index, p.threshold, len(p.holders), p.public_key.fingerprint[:12], k.federation,
             k.coordinator_address)
    stop = stop_event_on_signals()
    try:
        await run_link(holder, k, tls_files(cfg.tls), stop)
    finally:
        holder.close()
    log.info("key holder %s stopping", holder.holder)
    return holder
