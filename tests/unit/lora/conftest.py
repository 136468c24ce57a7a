"""A tiny random BERT (hidden 32, 2 layers; :func:`ffa_lora_tools.harness.cluster.tiny_bert`)
saved once per test session, and toy texts from its vocabulary, so LoRA tests run in seconds
without the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffa_lora_tools.harness.tiny_model import tiny_bert

POSITIVE = ["good", "great", "love", "happy", "thanks"]
NEGATIVE = ["bad", "awful", "hate", "late", "delay"]
NEUTRAL = ["ok", "fine", "today", "time", "seat"]


def make_tiny_dataset(n: int = 96, seed: int = 0):  # type: ignore[no-untyped-def]
    """Three-class toy sentiment texts built from the tiny vocabulary."""
    import random

    from ffa_lora.data import Dataset

    rng = random.Random(seed)
    fillers = ["the", "flight", "service", "was", "very", "my", "bag", "crew", "staff"]
    texts, labels = [], []
    for i in range(n):
        y = i % 3
        words = [NEGATIVE, NEUTRAL, POSITIVE][y]
        t = [rng.choice(fillers) for _ in range(rng.randint(2, 6))] + [rng.choice(words)]
        rng.shuffle(t)
        texts.append(" ".join(t))
        labels.append(y)
    return Dataset(texts=texts, labels=labels, label_names=("negative", "neutral", "positive"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny_spec(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from ffa_lora.lora import LoRASpec

    return LoRASpec(model=str(tiny_model_dir), num_labels=3, r_max=4, alpha=8.0,
                    dropout=0.0, max_length=16, seed=7)


@pytest.fixture()
def tiny_data():  # type: ignore[no-untyped-def]
    return make_tiny_dataset()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    # The CI machine has 2 shared cores; torch's intra-op threads spin under contention and
    # make tiny-model steps ~50x slower than with one thread.
    import torch

    torch.set_num_threads(1)
