"""The in-memory text-classification data set and the operations on it that do not depend on
where the data came from: deduplication and the fixed, stratified held-out test split.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ffa_lora.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Texts with integer labels.

    Attributes:
        texts: one string per example.
        labels: class index per example, in ``range(len(label_names))``.
        label_names: the class names; ``labels[i]`` indexes this tuple.
        groups: optional natural site of each example (the company a tweet addresses, the
            condition group of a review); used by ``partition(method="natural")`` and to
            stratify the test split. ``None`` when the source has no natural grouping.
    """

    texts: list[str]
    labels: list[int]
    label_names: tuple[str, ...]
    groups: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(
                f"texts and labels differ in length ({len(self.texts)} vs {len(self.labels)})"
            )
        if self.groups is not None and len(self.groups) != len(self.texts):
            raise DataError(
                f"groups has {len(self.groups)} entries for {len(self.texts)} texts"
            )
        n = len(self.label_names)
        if n < 1:
            raise DataError("label_names is empty: a data set needs at least one class")
        bad = [y for y in self.labels if not 0 <= y < n]
        if bad:
            raise DataError(
                f"{len(bad)} labels are outside 0..{n - 1} (the {n} label names); "
                "map labels to class indices first"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes (length of ``label_names``)."""
        return len(self.label_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The examples at ``indices`` (in that order), keeping label names."""
        idx = [int(i) for i in indices]
        return Dataset(
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            label_names=self.label_names,
            groups=None if self.groups is None else [self.groups[i] for i in idx],
        )

    def label_counts(self) -> dict[str, int]:
        """Examples per class name (every class listed, zeros included)."""
        counts = Counter(self.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}

    def group_counts(self) -> dict[str, int]:
        """Examples per natural group; empty when the data set has no groups."""
        return dict(Counter(self.groups)) if self.groups is not None else {}

    @staticmethod
    def concat(parts: Sequence[Dataset]) -> Dataset:
        """Concatenate data sets that share label names (groups kept only if all have them)."""
        if not parts:
            raise DataError("cannot concatenate zero data sets")
        names = parts[0].label_names
        if any(p.label_names != names for p in parts):
            raise DataError("cannot concatenate data sets with different label names")
        keep_groups = all(p.groups is not None for p in parts)
        return Dataset(
            texts=[t for p in parts for t in p.texts],
            labels=[y for p in parts for y in p.labels],
            label_names=names,
            groups=[g for p in parts for g in p.groups] if keep_groups else None,  # type: ignore[union-attr]
        )


def normalize_text(text: str) -> str:
    """The key two texts are compared by when deduplicating: case-folded, whitespace collapsed."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class DedupStats:
    """What :func:`deduplicate` removed."""

    kept: int
    duplicates_removed: int
    conflicting_removed: int


def deduplicate(dataset: Dataset, *, drop_conflicting: bool = True) -> tuple[Dataset, DedupStats]:
    """Remove repeated texts (compared after :func:`normalize_text`), keeping the first copy.

    With ``drop_conflicting`` (default), a text that occurs with different labels is dropped
    entirely: its label is noise, and keeping one copy would let it straddle train and test.
    """
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(dataset.texts):
        by_key[normalize_text(t)].append(i)
    keep: list[int] = []
    conflicting = 0
    for idx in by_key.values():
        if drop_conflicting and len({dataset.labels[i] for i in idx}) > 1:
            conflicting += len(idx)
            continue
        keep.append(idx[0])
    keep.sort()
    dups = len(dataset) - len(keep) - conflicting
    return dataset.subset(keep), DedupStats(len(keep), dups, conflicting)


def stratified_split(
    dataset: Dataset, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Split into (train, test), stratified by label (and by group when the data has groups).

    Each stratum is shuffled with ``numpy.random.default_rng(seed)`` and ``round(fraction·n)``
    of its examples go to the test split, so the split depends only on the data and the seed,
    never on how the training part is later partitioned across sites. Both parts keep the
    original example order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    strata: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, y in enumerate(dataset.labels):
        g = dataset.groups[i] if dataset.groups is not None else ""
        strata[(y, g)].append(i)
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for key in sorted(strata):
        idx = np.array(strata[key])
        rng.shuffle(idx)
        n_test = round(test_fraction * len(idx))
        test_idx.extend(idx[:n_test].tolist())
    test_set = set(test_idx)
    train_idx = [i for i in range(len(dataset)) if i not in test_set]
    return dataset.subset(train_idx), dataset.subset(sorted(test_idx))
