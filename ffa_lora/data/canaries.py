"""Canaries for the membership-inference audit: random strings with random labels.

A canary set holds *planted* canaries, inserted ``copies`` times each into one site's training
data, and *unseen* canaries of the same form that are never trained on. A model that memorises
its training records fits the planted ones better than the unseen ones; how much better is
their exposure (:func:`ffa_lora.privacy.audit.exposure`). Natural records rarely show this
(most are like many others); random strings with random labels can only be fitted by
memorising them, so they are what differential privacy must hide.

The set is a function of its seed and sizes; it is saved as JSON next to the training run so
the audit knows which canaries were planted (the strings are synthetic: no personal data).
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffa_lora.data.dataset import Dataset, normalize_text
from ffa_lora.errors import ConfigError, DataError

CANARY_FORMAT = "ffa-lora-canaries/1"


@dataclass(frozen=True)
class CanarySet:
    """Planted and unseen canaries.

    Attributes:
        planted: the canaries inserted into training data (one row per canary).
        unseen: canaries of the same form that no model trains on.
        copies: how many times each planted canary is inserted.
        seed: the seed the set was drawn with.
    """

    planted: Dataset
    unseen: Dataset
    copies: int
    seed: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (texts, label names, copies, seed)."""
        return {
            "format": CANARY_FORMAT,
            "label_names": list(self.planted.label_names),
            "copies": self.copies,
            "seed": self.seed,
            "planted": [{"text": t, "label": self.planted.label_names[y]}
                        for t, y in zip(self.planted.texts, self.planted.labels)],
            "unseen": [{"text": t, "label": self.unseen.label_names[y]}
                       for t, y in zip(self.unseen.texts, self.unseen.labels)],
        }


def make_canaries(
    *,
    n_planted: int,
    n_unseen: int,
    label_names: Sequence[str],
    copies: int,
    seed: int,
    words: int = 6,
    word_length: tuple[int, int] = (3, 8),
) -> CanarySet:
    """Draw ``n_planted + n_unseen`` distinct canaries; which are planted is random too.

    Each canary is ``words`` words of random lowercase letters (lengths uniform in
    ``word_length``) with a random label from ``label_names``; every class labels the same
    number of planted canaries (and of unseen ones), up to one.
    """
    for name, value, least in (("n_planted", n_planted, 1), ("n_unseen", n_unseen, 1),
                               ("copies", copies, 1), ("words", words, 1)):
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"{name}: must be an integer >= {least}, got {value!r}")
    lo, hi = word_length
    if not 1 <= lo <= hi:
        raise ConfigError(f"word_length: need 1 <= min <= max, got {word_length!r}")
    names = tuple(label_names)
    if len(names) < 2:
        raise ConfigError("label_names: canaries need at least two classes to draw labels from")
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    total = n_planted + n_unseen
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < total:
        lengths = rng.integers(lo, hi + 1, size=words)
        text = " ".join("".join(rng.choice(letters, size=int(n))) for n in lengths)
        if normalize_text(text) not in seen:
            seen.add(normalize_text(text))
            texts.append(text)
    order = rng.permutation(total)
    planted, unseen = order[:n_planted], order[n_planted:]

    def balanced_labels(n: int) -> list[int]:
        # Each class equally often (up to one), in random order: planted and unseen canaries
        # then share the label mix, so the model's class prior does not shift their ranks.
        return [int(y) for y in rng.permutation(np.arange(n) % len(names))]

    return CanarySet(
        planted=Dataset(texts=[texts[i] for i in planted], labels=balanced_labels(n_planted),
                        label_names=names),
        unseen=Dataset(texts=[texts[i] for i in unseen], labels=balanced_labels(n_unseen),
                       label_names=names),
        copies=copies,
        seed=seed,
    )


def plant_canaries(data: Dataset, canaries: CanarySet, *, seed: int = 0) -> Dataset:
    """``data`` with ``canaries.copies`` copies of every planted canary at random positions.

    The original records keep their relative order; the canaries take the group of the
    first record when ``data`` has groups (they belong to the site they are planted in).
    """
    if canaries.planted.label_names != data.label_names:
        raise DataError(
            f"canaries have classes {canaries.planted.label_names}, the data "
            f"{data.label_names}; draw the canaries with the data's label names"
        )
    reps = canaries.copies
    texts = list(data.texts) + [t for t in canaries.planted.texts for _ in range(reps)]
    labels = list(data.labels) + [y for y in canaries.planted.labels for _ in range(reps)]
    # Random positions for the inserted copies, original records in their order.
    rng = np.random.default_rng(seed)
    n_new = len(texts) - len(data)
    slots = np.sort(rng.choice(len(texts), size=n_new, replace=False))
    is_canary = np.zeros(len(texts), dtype=bool)
    is_canary[slots] = True
    order = np.empty(len(texts), dtype=np.int64)
    order[~is_canary] = np.arange(len(data))
    order[is_canary] = len(data) + rng.permutation(n_new)
    groups = None
    if data.groups is not None:
        site = data.groups[0] if data.groups else ""
        all_groups = list(data.groups) + [site] * n_new
        groups = [all_groups[i] for i in order]
    return Dataset(texts=[texts[i] for i in order], labels=[labels[i] for i in order],
                   label_names=data.label_names, groups=groups)


def save_canaries(canaries: CanarySet, path: str | Path) -> Path:
    """Write the set as JSON (what :func:`load_canaries` reads)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(canaries.to_dict(), indent=1), encoding="utf-8")
    return p


def load_canaries(path: str | Path) -> CanarySet:
    """Read a set written by :func:`save_canaries`."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: canary file not found; write one with save_canaries") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable canary JSON file ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != CANARY_FORMAT:
        raise DataError(f"{p}: not a canary file (expected format {CANARY_FORMAT!r})")
    try:
        names = tuple(str(n) for n in raw["label_names"])
        index = {n: i for i, n in enumerate(names)}

        def part(rows: list[dict[str, str]]) -> Dataset:
            return Dataset(texts=[str(r["text"]) for r in rows],
                           labels=[index[str(r["label"])] for r in rows], label_names=names)

        planted, unseen = part(raw["planted"]), part(raw["unseen"])
        copies, seed = int(raw["copies"]), int(raw["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{p}: malformed canary file (missing or bad {exc})") from None
    if len(planted) == 0 or len(unseen) == 0 or copies < 1:
        raise DataError(f"{p}: a canary file needs planted and unseen canaries and copies >= 1")
    return CanarySet(planted=planted, unseen=unseen, copies=copies, seed=seed)
