"""Sample-level DP-SGD at the client with Opacus (the FFA-LoRA paper's setting).

Only parameters with ``requires_grad=True`` are made private — for FFA-LoRA the B factors and
the task head; the frozen base model and the frozen A factors get no per-sample gradients and
no noise (they never change, so they leak nothing about the client's data). Opacus' hook mode
works on a peft-wrapped BERT (tested on a 2-layer toy BERT).

Randomness: Opacus' ``secure_mode`` needs ``torchcsprng``, which is unmaintained and does not
build for torch 2.x. Instead the noise and the Poisson-sampling generators are
``torch.Generator`` objects seeded from ``os.urandom`` for every session (unpredictable, but
Mersenne Twister is not a CSPRNG), and the optimizer uses Opacus' floating-point-robust noise
(sum of several Gaussians, Holohan et al. 2021). Pass ``seed`` only in tests.

Across federation rounds the client keeps one accountant: pass the previous session's
:meth:`DPSGDSession.accountant_state` as ``accountant_state`` so ε accumulates.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from ffa_lora.errors import ConfigError, StateError
from ffa_lora.privacy.accountant import check_delta, check_epsilon

OPACUS_ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp", "gdp")


def _generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return g


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters DP-SGD will clip and noise (``requires_grad=True``)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def dp_sgd_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    epochs: int | None = None,
    steps: int | None = None,
    accountant: str = "prv",
) -> float:
    """Noise multiplier reaching ``(target_epsilon, delta)`` after ``epochs`` (or ``steps``).

    For a federation compute it once with ``epochs = rounds × local epochs`` and pass it to
    every round's :func:`make_dp_sgd`.
    """
    check_epsilon(target_epsilon, name="target_epsilon")
    check_delta(delta)
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if (epochs is None) == (steps is None):
        raise ConfigError("give exactly one of epochs or steps")
    if accountant not in OPACUS_ACCOUNTANTS:
        raise ConfigError(f"accountant must be one of {OPACUS_ACCOUNTANTS}, got {accountant!r}")
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            epochs=epochs,
            steps=steps,
            accountant=accountant,
        )
    )


@dataclass
class DPSGDSession:
    """The private training objects of one local-training session.

    Attributes:
        model: the Opacus-wrapped model (call it like the original).
        optimizer: the DP optimizer (per-sample clipping + noise on ``step()``).
        data_loader: the Poisson-sampling loader.
        noise_multiplier: σ / max_grad_norm used by the optimizer.
        max_grad_norm: the per-sample L2 clip bound.
        sample_rate: the per-step sampling probability of one record.
        engine: the Opacus PrivacyEngine (its accountant counts the steps taken).
    """

    model: nn.Module
    optimizer: Any
    data_loader: DataLoader
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    engine: PrivacyEngine

    def epsilon(self, *, delta: float) -> float:
        """ε spent at δ by all steps so far (including earlier rounds' loaded history)."""
        if len(self.engine.accountant) == 0:
            return 0.0
        return float(self.engine.get_epsilon(check_delta(delta)))

    def accountant_state(self) -> dict[str, Any]:
        """JSON-serializable accountant state: ``{"accountant", "history": [[z, q, steps]]}``."""
        return {
            "accountant": self.engine.accountant.mechanism(),
            "history": [[float(z), float(q), int(n)] for z, q, n in self.engine.accountant.history],
        }


def _load_history(engine: PrivacyEngine, state: dict[str, Any]) -> None:
    if state.get("accountant") != engine.accountant.mechanism():
        raise StateError(
            f"DP-SGD accountant state is for {state.get('accountant')!r} but this session uses "
            f"{engine.accountant.mechanism()!r}; keep the same accountant across rounds"
        )
    try:
        history = [(float(z), float(q), int(n)) for z, q, n in state["history"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError("DP-SGD accountant state is corrupt") from exc
    engine.accountant.history = history


def make_dp_sgd(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    *,
    max_grad_norm: float,
    delta: float,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    epochs: int | None = None,
    accountant: str = "prv",
    accountant_state: dict[str, Any] | None = None,
    grad_sample_mode: str = "hooks",
    robust_noise: bool = True,
    seed: int | None = None,
) -> DPSGDSession:
    """Make local training differentially private per sample (Opacus DP-SGD).

    Args:
        model: the local model; only its trainable parameters are privatized.
        optimizer: an optimizer over exactly the trainable parameters.
        data_loader: the local training loader (replaced by a Poisson-sampling one).
        max_grad_norm: per-sample L2 clipping bound.
        delta: δ for ε reports and for ``target_epsilon`` calibration.
        noise_multiplier: σ/max_grad_norm; give this or ``target_epsilon``.
        target_epsilon: calibrate the noise to reach this ε after ``epochs`` epochs.
        epochs: required with ``target_epsilon``.
        accountant: Opacus accountant, ``"prv"`` (default, tight), ``"rdp"`` or ``"gdp"``.
        accountant_state: previous rounds' :meth:`DPSGDSession.accountant_state`.
        grad_sample_mode: Opacus per-sample gradient mode (``"hooks"`` works for peft BERT;
            ``"functorch"`` is the fallback for layers without hooks).
        robust_noise: use Opacus' floating-point-robust noise sampling.
        seed: TESTS ONLY — fixes noise and sampling; ``None`` seeds from ``os.urandom``.

    Raises:
        ConfigError: bad arguments, no trainable parameter, frozen parameters in the
            optimizer, or layers Opacus cannot privatize.
    """
    check_delta(delta)
    if not (
        isinstance(max_grad_norm, (int, float))
        and math.isfinite(max_grad_norm)
        and max_grad_norm > 0
    ):
        raise ConfigError(f"max_grad_norm must be a positive finite number, got {max_grad_norm!r}")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ConfigError("give exactly one of noise_multiplier or target_epsilon")
    if noise_multiplier is not None and not (
        math.isfinite(noise_multiplier) and noise_multiplier > 0
    ):
        raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    if target_epsilon is not None:
        check_epsilon(target_epsilon, name="target_epsilon")
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError("target_epsilon needs epochs (an integer >= 1)")
        if accountant_state and accountant_state.get("history"):
            raise ConfigError(
                "target_epsilon cannot account for earlier rounds; compute the multiplier once "
                "with dp_sgd_noise_multiplier(epochs=rounds*local_epochs) and pass "
                "noise_multiplier"
            )
    if accountant not in OPACUS_ACCOUNTANTS:
        raise ConfigError(f"accountant must be one of {OPACUS_ACCOUNTANTS}, got {accountant!r}")

    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if not trainable:
        raise ConfigError("the model has no trainable parameter; nothing to train privately")
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    if any(id(p) not in trainable for p in opt_params):
        raise ConfigError(
            "the optimizer holds frozen parameters; build it over the trainable ones only "
            "(e.g. [p for p in model.parameters() if p.requires_grad])"
        )
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        kinds = sorted({type(e).__name__ for e in errors})
        raise ConfigError(
            f"Opacus cannot privatize this model ({', '.join(kinds)}); replace BatchNorm by "
            "GroupNorm/LayerNorm (opacus ModuleValidator.fix) or try grad_sample_mode='functorch'"
        )

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=accountant, secure_mode=False)
    if accountant_state:
        _load_history(engine, accountant_state)

    common: dict[str, Any] = {
        "module": model,
        "optimizer": optimizer,
        "data_loader": data_loader,
        "max_grad_norm": float(max_grad_norm),
        "noise_generator": _generator(seed),
        "grad_sample_mode": grad_sample_mode,
        "poisson_sampling": True,
    }
    if target_epsilon is not None:
        priv_model, priv_opt, priv_loader = engine.make_private_with_epsilon(
            target_epsilon=target_epsilon, target_delta=delta, epochs=epochs, **common
        )
    else:
        assert noise_multiplier is not None  # checked above: exactly one of the two is given
        priv_model, priv_opt, priv_loader = engine.make_private(
            noise_multiplier=float(noise_multiplier), **common
        )
    sampler = getattr(priv_loader, "batch_sampler", None)
    if sampler is not None and hasattr(sampler, "generator"):
        sampler.generator = _generator(None if seed is None else seed + 1)
    priv_opt.secure_mode = bool(robust_noise)
    sample_rate = float(getattr(priv_loader, "sample_rate", 1.0 / len(priv_loader)))
    return DPSGDSession(
        model=priv_model,
        optimizer=priv_opt,
        data_loader=priv_loader,
        noise_multiplier=float(priv_opt.noise_multiplier),
        max_grad_norm=float(max_grad_norm),
        sample_rate=sample_rate,
        engine=engine,
    )
