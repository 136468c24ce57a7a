"""Client DP-SGD with Opacus: only trainable parameters are privatized, training steps run,
ε > 0 is reported and accumulates across rounds."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ffa_lora.errors import ConfigError, StateError
from ffa_lora.privacy.dp_sgd import (
    dp_sgd_noise_multiplier,
    make_dp_sgd,
    trainable_parameter_names,
)

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


def _data(n: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _train(session, epochs: int = 1) -> None:  # type: ignore[no-untyped-def]
    for _ in range(epochs):
        for x, y in session.data_loader:
            session.optimizer.zero_grad()
            loss = nn.functional.cross_entropy(session.model(x), y)
            loss.backward()
            session.optimizer.step()


def _opt(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)


def test_tiny_model_trains_privately_and_reports_epsilon() -> None:
    torch.manual_seed(0)
    model = Tiny()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    b_before = model.lora_b.weight.detach().clone()
    assert trainable_parameter_names(model) == ["lora_b.weight", "head.weight", "head.bias"]
    s = make_dp_sgd(
        model, _opt(model), _data(), noise_multiplier=1.0, max_grad_norm=1.0, delta=DELTA, seed=1
    )
    assert s.epsilon(delta=DELTA) == 0.0
    _train(s)
    eps1 = s.epsilon(delta=DELTA)
    assert eps1 > 0
    assert not torch.equal(model.lora_b.weight, b_before)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n  # frozen base and A untouched
    # next round: fresh optimizer, same accountant → ε accumulates
    state = json.loads(json.dumps(s.accountant_state()))
    model2 = Tiny()
    s2 = make_dp_sgd(
        model2,
        _opt(model2),
        _data(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        delta=DELTA,
        accountant_state=state,
        seed=2,
    )
    assert s2.epsilon(delta=DELTA) == pytest.approx(eps1)
    _train(s2)
    assert s2.epsilon(delta=DELTA) > eps1


def test_target_epsilon_mode() -> None:
    model = Tiny()
    s = make_dp_sgd(
        model,
        _opt(model),
        _data(),
        target_epsilon=3.0,
        epochs=2,
        max_grad_norm=1.0,
        delta=DELTA,
        accountant="rdp",
        seed=3,
    )
    assert s.noise_multiplier > 0
    _train(s, epochs=2)
    assert 0 < s.epsilon(delta=DELTA) <= 3.0 * 1.05
    z = dp_sgd_noise_multiplier(
        target_epsilon=3.0, delta=DELTA, sample_rate=s.sample_rate, epochs=2, accountant="rdp"
    )
    assert z == pytest.approx(s.noise_multiplier, rel=1e-6)


def test_validation() -> None:
    model = Tiny()
    with pytest.raises(ConfigError, match="exactly one"):
        make_dp_sgd(model, _opt(model), _data(), max_grad_norm=1.0, delta=DELTA)
    with pytest.raises(ConfigError, match="frozen parameters"):
        make_dp_sgd(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            _data(),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            delta=DELTA,
        )
    with pytest.raises(ConfigError, match="earlier rounds"):
        make_dp_sgd(
            model,
            _opt(model),
            _data(),
            target_epsilon=1.0,
            epochs=1,
            max_grad_norm=1.0,
            delta=DELTA,
            accountant_state={"accountant": "prv", "history": [[1.0, 0.1, 5]]},
        )
    with pytest.raises(StateError, match="same accountant"):
        make_dp_sgd(
            model,
            _opt(model),
            _data(),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            delta=DELTA,
            accountant_state={"accountant": "rdp", "history": [[1.0, 0.1, 5]]},
        )
    bn = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="BatchNorm"):
        make_dp_sgd(bn, _opt(bn), _data(), noise_multiplier=1.0, max_grad_norm=1.0, delta=DELTA)


@pytest.mark.slow  # builds a (tiny) transformers BERT: a few seconds
def test_peft_bert_ffa_lora_trains_privately() -> None:
    """A 2-layer toy BERT wrapped by peft, A frozen (FFA-LoRA): Opacus hooks mode works."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    model = peft.get_peft_model(
        transformers.BertForSequenceClassification(cfg),
        peft.LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"]),
    )
    for n, p in model.named_parameters():
        if "lora_A" in n:
            p.requires_grad_(False)
    names = trainable_parameter_names(model)
    assert names and all("lora_B" in n or "classifier" in n for n in names)
    a_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}
    ids = torch.randint(0, 100, (32, 12), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(ids, y), batch_size=8)
    s = make_dp_sgd(
        model, _opt(model), loader, noise_multiplier=1.0, max_grad_norm=1.0, delta=DELTA, seed=4
    )
    for x, yy in s.data_loader:
        s.optimizer.zero_grad()
        out = s.model(input_ids=x).logits
        nn.functional.cross_entropy(out, yy).backward()
        s.optimizer.step()
    assert s.epsilon(delta=DELTA) > 0
    for n, p in model.named_parameters():
        if n in a_before:
            assert torch.equal(p, a_before[n])
