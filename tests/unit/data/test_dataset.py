"""Dataset invariants, deduplication, the stratified split, partitioning."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.data import Dataset, deduplicate, partition, stratified_split
from ffa_lora.errors import DataError

NAMES = ("neg", "neu", "pos")


def make(n: int, seed: int = 0, groups: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.6, 0.25, 0.15]).tolist()
    return Dataset(
        texts=[f"text {i}" for i in range(n)],
        labels=labels,
        label_names=NAMES,
        groups=[f"g{int(g)}" for g in rng.integers(0, groups, size=n)],
    )


def test_validation() -> None:
    with pytest.raises(DataError):
        Dataset(texts=["a"], labels=[0, 1], label_names=NAMES)
    with pytest.raises(DataError):
        Dataset(texts=["a"], labels=[3], label_names=NAMES)
    with pytest.raises(DataError):
        Dataset(texts=["a"], labels=[0], label_names=NAMES, groups=["x", "y"])


def test_dedup_keeps_first_and_drops_conflicts() -> None:
    ds = Dataset(
        texts=["Hello  world", "hello world", "other", "clash", "CLASH", "unique"],
        labels=[0, 0, 1, 0, 2, 1],
        label_names=NAMES,
    )
    out, stats = deduplicate(ds)
    assert out.texts == ["Hello  world", "other", "unique"]
    assert stats.duplicates_removed == 1 and stats.conflicting_removed == 2 and stats.kept == 3
    kept, _ = deduplicate(ds, drop_conflicting=False)
    assert kept.texts == ["Hello  world", "other", "clash", "unique"]


def test_split_is_stratified_deterministic_and_disjoint() -> None:
    ds = make(2000)
    train, test = stratified_split(ds, test_fraction=0.2, seed=4)
    train2, test2 = stratified_split(ds, test_fraction=0.2, seed=4)
    assert test.texts == test2.texts and train.texts == train2.texts
    assert not set(train.texts) & set(test.texts)
    assert len(train) + len(test) == len(ds)
    assert abs(len(test) - 400) <= 9  # rounding per (label, group) stratum
    full, part = Counter(ds.labels), Counter(test.labels)
    for c in range(3):
        assert abs(part[c] / len(test) - full[c] / len(ds)) < 0.01
    _, other = stratified_split(ds, test_fraction=0.2, seed=5)
    assert other.texts != test.texts
    with pytest.raises(DataError):
        stratified_split(ds, test_fraction=1.0)


def _check_partition(ds: Dataset, parts: dict[str, Dataset]) -> None:
    seen = [t for p in parts.values() for t in p.texts]
    assert sorted(seen) == sorted(ds.texts)  # disjoint and covering
    assert len(seen) == len(set(seen))


def test_natural_partition() -> None:
    ds = make(300)
    parts = partition(ds, method="natural")
    _check_partition(ds, parts)
    assert set(parts) == {"g0", "g1", "g2"}
    for site, p in parts.items():
        assert set(p.groups or []) == {site}
    sizes = [len(p) for p in parts.values()]
    assert sizes == sorted(sizes, reverse=True)
    with pytest.raises(DataError):
        partition(ds, method="natural", n_sites=5)
    with pytest.raises(DataError, match="group"):
        partition(Dataset(["a"], [0], NAMES), method="natural")


def test_iid_partition_balances_labels() -> None:
    ds = make(1000)
    parts = partition(ds, method="iid", n_sites=4, seed=1, site_names=["a", "b", "c", "d"])
    _check_partition(ds, parts)
    assert list(parts) == ["a", "b", "c", "d"]
    sizes = [len(p) for p in parts.values()]
    assert max(sizes) - min(sizes) <= 1
    for p in parts.values():
        for c, n in Counter(p.labels).items():
            assert abs(n - Counter(ds.labels)[c] / 4) <= 1
    again = partition(ds, method="iid", n_sites=4, seed=1)
    assert [p.texts for p in again.values()] == [p.texts for p in parts.values()]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_sites=st.integers(1, 6),
       alpha=st.floats(0.05, 100.0))
def test_dirichlet_partition_disjoint_cover(seed: int, n_sites: int, alpha: float) -> None:
    ds = make(400, seed=seed % 7)
    parts = partition(ds, method="dirichlet", n_sites=n_sites, alpha=alpha, seed=seed)
    _check_partition(ds, parts)
    assert len(parts) == n_sites and all(len(p) >= 1 for p in parts.values())


def test_dirichlet_alpha_controls_skew() -> None:
    ds = make(3000)

    def skew(alpha: float) -> float:
        parts = partition(ds, method="dirichlet", n_sites=5, alpha=alpha, seed=0)
        shares = [np.bincount(p.labels, minlength=3) / len(p) for p in parts.values()]
        return float(np.std(shares, axis=0).mean())

    assert skew(0.1) > 3 * skew(100.0)


def test_partition_errors() -> None:
    ds = make(10)
    with pytest.raises(DataError):
        partition(ds, method="random", n_sites=2)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        partition(ds, method="iid")
    with pytest.raises(DataError):
        partition(ds, method="iid", n_sites=11)
    with pytest.raises(DataError):
        partition(ds, method="dirichlet", n_sites=2, alpha=0.0)
    with pytest.raises(DataError):
        partition(ds, method="iid", n_sites=2, site_names=["x", "x"])
