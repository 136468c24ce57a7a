"""A tiny random BERT classifier (hidden 32, 2 layers) with a tiny WordPiece tokenizer: a real
model layout with a small adapter, for tests and for benchmarks of the protocol rather than of
training."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

__all__ = ["TINY_WORDS", "tiny_bert"]

#: The tiny tokenizer's words: enough for toy sentiment texts (see tests/unit/lora/conftest.py).
TINY_WORDS = ["the", "a", "is", "was", "very", "not", "flight", "service", "bank", "staff", "good", "great", "love",
               "happy", "thanks", "bad", "awful", "hate", "late", "delay", "ok", "fine", "today", "time", "my",
               "bag", "seat", "crew", "card", "fee"]


def tiny_bert(path: Path, *, num_labels: int = 3) -> Path:
    """Save a tiny random BERT classifier (hidden 32, 2 layers) and its WordPiece tokenizer to
    ``path`` (once): a real model layout with a small adapter, for benchmarks of the protocol
    rather than of training."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(97, 123)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters] + TINY_WORDS
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
                        initializer_range=0.2)  # type: ignore[call-arg]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        BertForSequenceClassification(config).save_pretrained(path)
    return path
