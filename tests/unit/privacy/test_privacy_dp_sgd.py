"""DP-SGD primitives: per-group clipping, noise once per logical batch, physical batching that
changes nothing, Poisson sampling, and the calibration of σ to a federation's steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from torch import nn

from ffa_lora.errors import ConfigError, StateError
from ffa_lora.privacy.dp_sgd import (
    ClipGroup,
    PrivateGradient,
    calibrate_noise_multiplier,
    dp_sgd_noise_multiplier,
    epsilon_after_steps,
    load_accountant,
    physical_batches,
    plan_dp_sgd,
    poisson_sample,
    step_event,
    steps_per_round,
    trainable_parameter_names,
)
from ffa_lora.privacy.rng import SeededNoiseSource

DELTA = 1e-5

# Opacus' hooks fire on frozen inputs; the warning is harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


class Tiny(nn.Module):
    """A frozen 'base' layer, a frozen 'A', a trainable 'B' and a trainable head."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(8, 8)
        self.lora_a = nn.Linear(8, 2, bias=False)
        self.lora_b = nn.Linear(2, 8, bias=False)
        self.head = nn.Linear(8, 3)
        for p in (*self.base.parameters(), *self.lora_a.parameters()):
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x) + self.lora_b(self.lora_a(x))
        return self.head(torch.relu(h))


def _tiny(seed: int = 0):  # type: ignore[no-untyped-def]
    from opacus import GradSampleModule

    torch.manual_seed(seed)
    model = Tiny()
    nn.init.normal_(model.lora_b.weight)  # B = 0 would give it no gradient at all
    return model, GradSampleModule(model, loss_reduction="sum")


def _data(n: int = 40):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    return 3 * torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _groups(model: Tiny, head: float = 0.5, adapter: float = 0.2) -> list[ClipGroup]:
    return [ClipGroup("head", (model.head.weight, model.head.bias), head),
            ClipGroup("adapter", (model.lora_b.weight,), adapter)]


def _released(pieces: list[np.ndarray], *, noise: float = 1.3, seed: int = 5) -> list[torch.Tensor]:
    model, gsm = _tiny()
    x, y = _data()
    private = PrivateGradient(_groups(model), noise_multiplier=noise, source=SeededNoiseSource(seed))
    for idx in pieces:
        nn.functional.cross_entropy(gsm(x[idx]), y[idx], reduction="sum").backward()
        private.accumulate()
    private.release(expected_batch_size=20.0)
    return [p.grad.clone() for p in (model.head.weight, model.head.bias, model.lora_b.weight)]


def test_trainable_parameter_names() -> None:
    assert trainable_parameter_names(Tiny()) == ["lora_b.weight", "head.weight", "head.bias"]


def test_physical_batches_give_the_big_batch_sum_and_noise() -> None:
    idx = np.arange(40)
    whole = _released([idx])
    pieces = _released(physical_batches(idx, np.random.default_rng(1).integers(1, 30, 40), 7))
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    other_noise = _released([idx], seed=6)
    assert not torch.allclose(whole[0], other_noise[0])


def test_each_group_is_clipped_to_its_own_bound() -> None:
    model, gsm = _tiny()
    x, y = _data()
    groups = _groups(model, head=0.5, adapter=0.2)
    for i in range(8):  # one record at a time, no noise: the released sum is its clipped gradient
        private = PrivateGradient(groups, noise_multiplier=0.0, source=SeededNoiseSource(0))
        nn.functional.cross_entropy(gsm(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        raw_head = torch.cat([model.head.weight.grad_sample.flatten(),
                              model.head.bias.grad_sample.flatten()])
        raw_b = model.lora_b.weight.grad_sample.flatten().clone()
        private.accumulate()
        private.release(expected_batch_size=1.0)
        head = torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad.flatten()])
        b = model.lora_b.weight.grad.flatten()
        assert float(head.norm()) <= 0.5 + 1e-5 and float(b.norm()) <= 0.2 + 1e-5
        # clipping scales, never turns: same direction, and nothing changes below the bound
        torch.testing.assert_close(head / head.norm(), raw_head / raw_head.norm())
        if raw_b.norm() <= 0.2:
            torch.testing.assert_close(b, raw_b)
        model.zero_grad()
    assert private.sensitivity == pytest.approx(math.hypot(0.5, 0.2))


def test_noise_std_is_sigma_times_the_joint_sensitivity() -> None:
    big = nn.Parameter(torch.zeros(20000))
    small = nn.Parameter(torch.zeros(20000))
    private = PrivateGradient([ClipGroup("a", (big,), 3.0), ClipGroup("b", (small,), 4.0)],
                              noise_multiplier=2.0, source=SeededNoiseSource(3))
    private.release(expected_batch_size=10.0)  # an empty logical batch: noise only
    for p in (big, small):
        assert float(p.grad.std()) == pytest.approx(2.0 * 5.0 / 10.0, rel=0.03)


def test_masked_entries_get_neither_gradient_nor_noise() -> None:
    model, gsm = _tiny()
    x, y = _data()
    mask = torch.zeros_like(model.lora_b.weight)
    mask[:, 0] = 1
    private = PrivateGradient(_groups(model), noise_multiplier=1.0, source=SeededNoiseSource(1),
                              masks={model.lora_b.weight: mask})
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    private.accumulate()
    private.release(expected_batch_size=40.0)
    assert torch.all(model.lora_b.weight.grad[:, 1:] == 0)
    assert torch.all(model.lora_b.weight.grad[:, 0] != 0)


def test_private_gradient_refuses_bad_groups() -> None:
    model = Tiny()
    with pytest.raises(ConfigError, match="more than one clip group"):
        PrivateGradient([ClipGroup("a", (model.head.weight,), 1.0),
                         ClipGroup("b", (model.head.weight,), 1.0)],
                        noise_multiplier=1.0, source=SeededNoiseSource(0))
    with pytest.raises(ConfigError, match="max_grad_norm"):
        ClipGroup("a", (model.head.weight,), 0.0)
    private = PrivateGradient(_groups(model), noise_multiplier=1.0, source=SeededNoiseSource(0))
    with pytest.raises(StateError, match="GradSampleModule"):
        private.accumulate()  # no per-sample gradients were computed


def test_poisson_sample_and_physical_batches() -> None:
    src = SeededNoiseSource(0)
    sizes = [len(poisson_sample(1000, 0.1, src)) for _ in range(200)]
    assert np.mean(sizes) == pytest.approx(100, rel=0.05)
    assert 0 < np.std(sizes) < 20  # the batch size varies: it is not a fixed-size sample
    np.testing.assert_array_equal(poisson_sample(7, 1.0, src), np.arange(7))
    lengths = np.array([5, 1, 9, 3, 7, 2, 8])
    pieces = physical_batches(np.array([0, 2, 4, 6, 1]), lengths, 2)
    assert [len(p) for p in pieces] == [2, 2, 1]
    assert sorted(int(i) for p in pieces for i in p) == [0, 1, 2, 4, 6]
    flat = [int(lengths[i]) for p in pieces for i in p]
    assert flat == sorted(flat)
    assert physical_batches(np.array([], dtype=np.int64), lengths, 4) == []
    with pytest.raises(ConfigError):
        physical_batches(np.arange(3), lengths, 0)


def test_calibration_reaches_the_budget_within_tolerance() -> None:
    z = calibrate_noise_multiplier(epsilon=4.0, delta=DELTA, sample_rate=0.2, steps=60)
    eps = epsilon_after_steps(noise_multiplier=z, sample_rate=0.2, steps=60, delta=DELTA)
    assert 4.0 * 0.99 <= eps <= 4.0
    assert epsilon_after_steps(noise_multiplier=z * 0.98, sample_rate=0.2, steps=60,
                               delta=DELTA) > 4.0
    with pytest.raises(ConfigError, match="out of reach"):
        calibrate_noise_multiplier(epsilon=1e-6, delta=DELTA, sample_rate=1.0, steps=10**6)


def test_federation_plan_calibrates_every_site_over_all_rounds() -> None:
    sites = {"big": 2735, "small": 1852}
    plan = plan_dp_sgd(sites, epsilon=8.0, delta=DELTA, expected_batch_size=512,
                       local_epochs=3.0, rounds=6)
    big, small = plan.site("big"), plan.site("small")
    assert big.steps_per_round == round(3 * 2735 / 512) == 16 and big.steps == 96
    assert small.steps == 6 * round(3 * 1852 / 512) == 66
    assert small.sample_rate == pytest.approx(512 / 1852)
    for s in plan.sites:
        assert 8.0 * 0.99 <= s.epsilon <= 8.0
    assert small.noise_multiplier > big.noise_multiplier  # larger sampling rate, more noise
    strict = plan_dp_sgd(sites, epsilon=1.0, delta=DELTA, expected_batch_size=512,
                         local_epochs=3.0, rounds=6)
    assert strict.site("big").noise_multiplier > 3 * big.noise_multiplier
    assert plan.to_dict()["sites"][0]["site"] == "big"
    with pytest.raises(ConfigError, match="no site"):
        plan.site("other")
    assert steps_per_round(100, expected_batch_size=512, local_epochs=2.5) == 2  # q = 1


def test_plan_counts_head_steps_and_probe_rounds() -> None:
    plan = plan_dp_sgd({"s": 2048}, epsilon=8.0, delta=DELTA, expected_batch_size=512,
                       local_epochs=1.0, rounds=6, head_epochs=1.0, probe_rounds=2,
                       probe_head_epochs=3.0)
    site = plan.site("s")
    assert site.head_steps_per_round == 4 and site.steps_per_round == 8
    assert site.steps == 2 * 12 + 4 * 8  # probe rounds: head steps only
    assert 7.92 <= site.epsilon <= 8.0
    with pytest.raises(ConfigError, match="probe_rounds"):
        plan_dp_sgd({"s": 2048}, epsilon=8.0, delta=DELTA, expected_batch_size=512,
                    local_epochs=1.0, rounds=6, probe_rounds=2)  # no head steps to take


def test_accountant_state_round_trips_and_reads_the_opacus_record() -> None:
    acc = load_accountant(None)
    acc.add_event(step_event(noise_multiplier=1.5, sample_rate=0.2, steps=30))
    again = load_accountant(acc.state_dict())
    assert again.get_epsilon(delta=DELTA) == pytest.approx(acc.get_epsilon(delta=DELTA))
    legacy = load_accountant({"accountant": "prv", "history": [[1.5, 0.2, 10], [1.5, 0.2, 20]]})
    assert legacy.get_epsilon(delta=DELTA) == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-6)
    with pytest.raises(StateError, match="corrupt"):
        load_accountant({"accountant": "rdp", "history": [["x"]]})


def test_dp_sgd_noise_multiplier_by_epochs_or_steps() -> None:
    by_steps = dp_sgd_noise_multiplier(target_epsilon=3.0, delta=DELTA, sample_rate=0.25, steps=8)
    by_epochs = dp_sgd_noise_multiplier(target_epsilon=3.0, delta=DELTA, sample_rate=0.25, epochs=2)
    assert by_steps == pytest.approx(by_epochs)
    with pytest.raises(ConfigError, match="exactly one"):
        dp_sgd_noise_multiplier(target_epsilon=3.0, delta=DELTA, sample_rate=0.25)


def test_round_noise_std_bounds_what_noisy_momentum_sgd_moves_a_parameter() -> None:
    """Pure-noise gradients through torch's SGD with momentum: the parameters' change after a
    round stays within the bound, and the bound is not loose by more than the momentum's tail."""
    from ffa_lora.privacy.dp_sgd import round_noise_std

    sigma, clip, batch, lr, steps, momentum = 4.0, 1.0, 256, 8.0, 12, 0.5
    gen = torch.Generator().manual_seed(0)
    w = torch.zeros(20_000, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum)
    for _ in range(steps):
        w.grad = torch.randn(w.shape, generator=gen) * sigma * clip / batch  # noise on the mean gradient
        opt.step()
    measured = float(w.detach().std())
    bound = round_noise_std(learning_rate=lr, steps=steps, noise_multiplier=sigma, max_grad_norm=clip,
                            expected_batch_size=batch, momentum=momentum)
    assert 0.85 * bound < measured <= 1.02 * bound
    with pytest.raises(ConfigError, match="momentum"):
        round_noise_std(learning_rate=lr, steps=steps, noise_multiplier=sigma, max_grad_norm=clip,
                        expected_batch_size=batch, momentum=1.0)
