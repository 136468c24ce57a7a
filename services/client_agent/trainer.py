"""Client-side domain logic: local data (de-identified before tokenization), the model and one
round of local training; :mod:`services.client_agent.update` turns the update into ciphertexts.

Raw data and plaintext updates never leave this process: :meth:`LocalTrainer.run_task`
returns only a :class:`PreparedUpdate` holding ciphertexts and scalar metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ffa_lora.crypto import ObfuscatorPool, PackingLayout, PublicKey
from ffa_lora.data.dataset import Dataset, stratified_split
from ffa_lora.data.loaders import load_table
from ffa_lora.deid import DeidConfig, Deidentifier
from ffa_lora.errors import ConfigError, ProtocolError, StateError
from ffa_lora.files import atomic_write
from ffa_lora.lora import LoRASpec
from ffa_lora.lora.model import build_model, load_adapter_state
from ffa_lora.lora.personalize import HeadState, evaluate_heads, finetune_head
from ffa_lora.lora.spec import DPSGD_OPTIMIZERS
from ffa_lora.lora.train import (
    DataCursor,
    DPSGDOptions,
    RunOptions,
    TrainOptions,
    evaluate,
    train_local,
)
from services.client_agent.update import (
    PreparedUpdate,
    encrypt_update,
    reported_metadata,
    under_dp,
)
from services.common import domain as d
from services.common.config import ClientConfig, DeidSettings

log = logging.getLogger(__name__)


def load_site_secret(path: Path | None, state_dir: Path) -> bytes:
    """The per-site de-identification secret: read it, or create 32 random bytes (0600)."""
    p = path or state_dir / "deid.secret"
    if p.exists():
        data = p.read_bytes().strip()
        if len(data) < 32:
            raise ConfigError(f"deid secret {p} holds {len(data)} bytes; it needs at least 32 (256 bits)")
        return data
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    return p.read_bytes().strip()


def deidentify(data: Dataset, settings: DeidSettings, secret: bytes,
               on_counts: Callable[[Counter[str]], None] | None = None) -> Dataset:
    """Scrub every record before tokenization; returns a new Dataset (counts reported only)."""
    engine = Deidentifier(DeidConfig(operator=settings.operator, languages=tuple(settings.languages),
                                     use_lac=settings.use_lac, clinical=settings.clinical),
                           site_secret=secret)
    totals: Counter[str] = Counter()
    texts = []
    for t in data.texts:
        scrubbed, counts = engine.scrub_with_counts(t)
        texts.append(scrubbed)
        totals.update(counts)
    if on_counts is not None:
        on_counts(totals)
    log.info("de-identified %d records: %s", len(texts), dict(totals) or "no entities found")
    return Dataset(texts=texts, labels=list(data.labels), label_names=data.label_names, groups=data.groups)


class LocalTrainer:
    """Holds the site's data and model; trains and encrypts one round at a time."""

    def __init__(self, cfg: ClientConfig, *, client_id: str,
                 on_deid_counts: Callable[[Counter[str]], None] | None = None) -> None:
        self.cfg, self.client_id = cfg, client_id
        data = load_table(cfg.data.path, text_column=cfg.data.text_column, label_column=cfg.data.label_column,
                          label_names=cfg.data.labels)
        self.label_names = tuple(data.label_names)
        if cfg.deid.enabled:
            secret = load_site_secret(cfg.deid.secret_file, cfg.state_dir)
            data = deidentify(data, cfg.deid, secret, on_deid_counts)
        self.val: Dataset | None
        if cfg.data.validation_fraction > 0 and len(data) >= 20:
            self.train, self.val = stratified_split(data, test_fraction=cfg.data.validation_fraction, seed=cfg.seed)
        else:
            self.train, self.val = data, None
        self.num_samples = len(self.train)
        self.model: Any = None
        self.spec: LoRASpec | None = None
        self.version = 0
        self.state: dict[str, np.ndarray] | None = None
        # ffa_lora.lora.OptimizerState of the last round of each phase (alternating keeps two)
        self.optimizer_states: dict[str, Any] = {}
        # ffa_lora.lora.DataCursor: rounds continue one pass over the local data (every example
        # once per epoch across fractional-epoch rounds); a restarted client begins a new pass.
        self.data_cursor: Any = None
        # Personalized heads: this site's own task head and how it was last fitted. Both stay
        # here; the head is saved under state_dir, never uploaded.
        self.personal_head: HeadState | None = None
        self.personalization: d.HeadPersonalization | None = None
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)

    @property
    def device(self) -> str:
        if self.cfg.device != "auto":
            return self.cfg.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def set_spec(self, spec: LoRASpec, labels: tuple[str, ...]) -> None:
        if labels != self.label_names:
            raise ConfigError(
                f"the federation's labels are {list(labels)} but this site's data has {list(self.label_names)}; "
                "set client.data.labels (index order) to match"
            )
        if self.spec != spec:
            self.spec, self.model = spec, None

    def load_adapter(self, version: int, blob: bytes) -> None:
        self.state = dict(st_load(blob))
        self.version = version
        if self.model is not None:
            try:
                load_adapter_state(self.model, self.state)
            except StateError:
                # Another shape: the coordinator reduced the rank. The next task's spec
                # rebuilds the model from this state (A' comes from it, not from the seed).
                self.model = None

    def _ensure_model(self) -> Any:
        if self.model is None:
            if self.spec is None or self.state is None:
                raise ProtocolError("task before the adapter and spec arrived")
            self.model = build_model(self.spec, device=self.device, state=self.state)
        return self.model

    @property
    def dpsgd_state_path(self) -> Path:
        return self.cfg.state_dir / "dpsgd_accountant.json"

    def _dpsgd_options(self, p: d.PrivacyParams) -> Any:
        """DP-SGD settings of this round, with the accountant history of earlier rounds."""
        if p.dpsgd_noise_multiplier <= 0:
            return None
        if p.dpsgd_max_grad_norm <= 0 or not 0 < p.dpsgd_delta < 1 or p.dpsgd_optimizer not in ("", *DPSGD_OPTIMIZERS):
            raise ProtocolError(f"task asks for DP-SGD with max_grad_norm {p.dpsgd_max_grad_norm}, delta "
                                f"{p.dpsgd_delta} and optimizer {p.dpsgd_optimizer!r}; the first two must be positive "
                                "(delta < 1), the optimizer adamw or sgd")
        state = None
        path = self.dpsgd_state_path
        if path.exists():
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise StateError(f"DP-SGD accountant file {path} is unreadable ({exc}); it records the privacy "
                                 "this site has spent: restore it from a backup rather than deleting it") from exc
        try:
            return self._dpsgd_from(p, state)
        except ConfigError as exc:
            raise ProtocolError(f"task asks for DP-SGD settings this client cannot run: {exc}") from None

    @staticmethod
    def _dpsgd_from(p: d.PrivacyParams, state: dict[str, Any] | None) -> DPSGDOptions:
        return DPSGDOptions(noise_multiplier=p.dpsgd_noise_multiplier, max_grad_norm=p.dpsgd_max_grad_norm,
                            delta=p.dpsgd_delta, accountant_state=state, optimizer=p.dpsgd_optimizer or "adamw",
                            learning_rate=p.dpsgd_learning_rate or None,
                            head_learning_rate=p.dpsgd_head_learning_rate or None,
                            expected_batch_size=p.dpsgd_expected_batch_size or None,
                            physical_batch_size=p.dpsgd_physical_batch_size or None,
                            momentum=p.dpsgd_momentum,
                            head_max_grad_norm=p.dpsgd_head_max_grad_norm or None,
                            head_epochs=p.dpsgd_head_epochs, adapter_only=p.dpsgd_adapter_only)

    def _record_dpsgd(self, extra: dict[str, Any]) -> float:
        """Persist the accountant (write-then-rename) before the update can leave; return ε so far."""
        self.dpsgd_state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dpsgd_state_path, json.dumps(extra["dpsgd_accountant_state"]).encode())
        eps = float(extra["dpsgd_epsilon"])
        log.info("DP-SGD: epsilon %.3f spent by this site so far (noise multiplier %.3g, sample rate %.4f)",
                 eps, extra["dpsgd_noise_multiplier"], extra["dpsgd_sample_rate"])
        return eps

    def run_task(self, task: d.RoundTask, public_key: PublicKey) -> PreparedUpdate:
        """Train, clip, quantize, pack and encrypt (obfuscators precomputed during training)."""
        if task.adapter_version != self.version:
            raise ProtocolError(f"task wants adapter v{task.adapter_version}, client holds v{self.version}")
        layout = PackingLayout.from_bytes(task.secure_sum.layout)
        if task.secure_sum.key_fingerprint != public_key.fingerprint:
            raise ProtocolError("task names a different public key than the edge's welcome")
        a = task.assignment
        pool = ObfuscatorPool(public_key, workers=1)
        pool.fill(layout.num_ciphertexts(a.num_values))  # background processes, while we train
        try:
            model = self._ensure_model()
            before = evaluate(model, self.val, batch_size=64) if self.val is not None else None
            seed = int.from_bytes(hashlib.sha256(f"{task.training.seed}:{self.client_id}".encode()).digest()[:4], "little")
            site_evaluation = None
            if task.training.personalization is not None:
                site_evaluation = self.personalize(task.training.personalization, seed=seed, global_scores=before)
            t0 = time.perf_counter()
            dp_opts = self._dpsgd_options(task.privacy)
            if self.data_cursor is None:  # the first round seeds this site's data order
                self.data_cursor = DataCursor(seed=seed, n=len(self.train))
            opts = TrainOptions(epochs=task.training.local_epochs, lr=task.training.learning_rate,
                                batch_size=task.training.batch_size, phase=task.training.phase,  # type: ignore[arg-type]
                                rank=a.rank, seed=seed)
            res = train_local(model, self.train, opts, run=RunOptions(loss_samples=0), dp_sgd=dp_opts,
                              optimizer_state=(self.optimizer_states.get(task.training.phase)
                                               if task.training.keep_optimizer_state else None),
                              cursor=self.data_cursor)
            self.optimizer_states[task.training.phase] = res.optimizer_state
            self.data_cursor = res.cursor
            train_s = time.perf_counter() - t0
            after = evaluate(model, self.val, batch_size=64) if self.val is not None else None
            dpsgd_epsilon = self._record_dpsgd(res.extra) if dp_opts is not None else 0.0
            # The local model goes back to the global adapter: the next round starts from the
            # aggregate, never from this site's own update.
            assert self.state is not None
            load_adapter_state(model, self.state)
            delta = np.asarray(res.delta, dtype=np.float64)
            if len(delta) != a.num_values:
                raise ProtocolError(f"update has {len(delta)} values, assignment expects {a.num_values}")
            vec, crypto_s = encrypt_update(delta, task, public_key, layout, pool=pool)
        finally:
            pool.close()
        digest = hashlib.sha256(b"".join(int(c).to_bytes(layout.ciphertext_bytes, "big") for c in vec.values[:4]))
        quality = d.Quality(
            grad_snr=float(res.grad_snr), train_loss=float(res.train_loss),
            val_loss_before=float(before["loss"]) if before else 0.0,
            val_loss_after=float(after["loss"]) if after else 0.0,
            val_accuracy=float(before["accuracy"]) if before else 0.0,
            dpsgd_epsilon=dpsgd_epsilon,
            # Under DP the scores of the site's own records stay here (only noised values leave).
            site_evaluation=None if under_dp(task) else site_evaluation,
        )
        # Under DP nothing computed from the records leaves un-noised: see reported_metadata.
        num_samples, quality = reported_metadata(
            task, num_samples=self.num_samples, quality=quality)
        return PreparedUpdate(
            round=task.round, vec=vec, idempotency_key=f"{self.client_id}:{task.round}:{digest.hexdigest()[:16]}",
            num_samples=num_samples, rank=a.rank, quality=quality, base_version=self.version,
            train_seconds=train_s, crypto_seconds=crypto_s,
        )

    # -- personalized heads ------------------------------------------------------------------

    @property
    def personal_head_path(self) -> Path:
        return self.cfg.state_dir / "personal_head.safetensors"

    def personalize(self, p: d.HeadPersonalization, *, seed: int,
                    global_scores: dict[str, float] | None) -> d.SiteEvaluation | None:
        """Fit this site's own task head on its training split with the received global adapter
        frozen, keep it (in memory and under state_dir) and score it on the validation split.

        The model keeps the global head: local training and the update are exactly those of a
        client without personalization. Returns the validation scores of the global and the
        personal head, or None without a validation split or where an AUC is undefined.
        """
        model = self._ensure_model()
        t0 = time.perf_counter()
        res = finetune_head(model, self.train, epochs=p.epochs, lr=p.learning_rate, prox=p.prox, seed=seed)
        self.personal_head, self.personalization = res.head, p
        self.personal_head_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.personal_head_path, st_save({k: np.ascontiguousarray(v) for k, v in res.head.items()}))
        if self.val is None or global_scores is None:
            log.info("personal head fitted on adapter v%d in %.1fs (no validation split to score it)",
                     self.version, time.perf_counter() - t0)
            return None
        mine = evaluate_heads(model, self.val, {"personal": res.head})["personal"]
        scores = d.SiteEvaluation(global_accuracy=float(global_scores["accuracy"]),
                                  global_roc_auc=float(global_scores["roc_auc"]),
                                  personal_accuracy=float(mine["accuracy"]), personal_roc_auc=float(mine["roc_auc"]))
        log.info("personal head fitted on adapter v%d in %.1fs: validation AUC %.4f (global head %.4f), "
                 "accuracy %.4f (%.4f)", self.version, time.perf_counter() - t0, scores.personal_roc_auc,
                 scores.global_roc_auc, scores.personal_accuracy, scores.global_accuracy)
        if not all(math.isfinite(v) for v in dataclasses.astuple(scores)):
            return None
        return scores

    def personalize_final(self) -> d.SiteEvaluation | None:
        """When the federation has finished: fit the personal head once more, on the last global
        adapter this site received (as the evaluation rounds did); None if personalization was
        never asked for."""
        if self.personalization is None or self.state is None or self.spec is None:
            return None
        model = self._ensure_model()
        load_adapter_state(model, self.state)
        before = evaluate(model, self.val, batch_size=64) if self.val is not None else None
        return self.personalize(self.personalization, seed=self.cfg.seed, global_scores=before)
