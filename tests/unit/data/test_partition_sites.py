"""The specialty partition and per-site test splits (each site's test part drawn from its own
distribution)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.data import Dataset, partition, partition_with_test, stratified_split
from ffa_lora.data.partition import specialty_shares
from ffa_lora.errors import DataError

NAMES = tuple(f"c{i}" for i in range(6))
#: classes 0,1 → site 0; 2 → site 1; 3 → site 2; 4,5 have no home
HOME: list[int | None] = [0, 0, 1, 2, None, None]


def make(n: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(texts=[f"t{i}" for i in range(n)], labels=rng.integers(0, 6, size=n).tolist(),
                   label_names=NAMES, groups=[f"g{int(g)}" for g in rng.integers(0, 3, size=n)])


def _shares(parts: dict[str, Dataset], c: int) -> np.ndarray:
    counts = np.array([sum(1 for y in p.labels if y == c) for p in parts.values()], dtype=float)
    return counts / counts.sum()


def _covers(ds: Dataset, parts: dict[str, Dataset]) -> None:
    seen = [t for p in parts.values() for t in p.texts]
    assert sorted(seen) == sorted(ds.texts) and len(seen) == len(set(seen))


def test_specialty_shares_mean() -> None:
    m = specialty_shares(HOME, 3, home_share=0.8)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    np.testing.assert_allclose(m[0], [0.8, 0.1, 0.1])
    np.testing.assert_allclose(m[3], [0.1, 0.1, 0.8])
    np.testing.assert_allclose(m[4], [1 / 3] * 3)
    np.testing.assert_allclose(specialty_shares(HOME, 3, home_share=1 / 3), 1 / 3)


def test_specialty_partition_puts_each_class_mostly_at_home() -> None:
    ds = make(6000)
    parts = partition(ds, method="specialty", n_sites=3, seed=1, home_sites=HOME, home_share=0.8,
                      site_names=["onc", "card", "neuro"])
    _covers(ds, parts)
    assert list(parts) == ["onc", "card", "neuro"]
    for c, h in enumerate(HOME):
        expected = specialty_shares(HOME, 3, home_share=0.8)[c]
        np.testing.assert_allclose(_shares(parts, c), expected, atol=0.01)
        if h is not None:
            assert _shares(parts, c)[h] > 0.78
    again = partition(ds, method="specialty", n_sites=3, seed=1, home_sites=HOME, home_share=0.8)
    assert [p.texts for p in again.values()] == [p.texts for p in parts.values()]
    other = partition(ds, method="specialty", n_sites=3, seed=2, home_sites=HOME, home_share=0.8)
    assert [p.texts for p in other.values()] != [p.texts for p in parts.values()]


def test_home_share_controls_the_skew() -> None:
    ds = make(6000)

    def home_fraction(share: float, concentration: float | None = None) -> float:
        parts = partition(ds, method="specialty", n_sites=3, seed=0, home_sites=HOME,
                          home_share=share, concentration=concentration)
        return float(np.mean([_shares(parts, c)[h] for c, h in enumerate(HOME) if h is not None]))

    assert home_fraction(1.0) == 1.0
    assert home_fraction(1 / 3) == pytest.approx(1 / 3, abs=0.02)  # no skew
    assert home_fraction(0.6) == pytest.approx(0.6, abs=0.02)
    # a Dirichlet draw around the mean: random per class, close to it when concentrated
    drawn = [home_fraction(0.8, 0.3), home_fraction(0.8, 1000.0)]
    assert drawn[1] == pytest.approx(0.8, abs=0.02) and drawn[0] != pytest.approx(0.8, abs=0.005)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.34, 1.0),
       concentration=st.one_of(st.none(), st.floats(0.05, 100.0)))
def test_specialty_disjoint_cover(seed: int, share: float, concentration: float | None) -> None:
    ds = make(500, seed=seed % 5)
    train, test = stratified_split(ds, test_fraction=0.2, seed=seed)
    parts, tests = partition_with_test(train, test, method="specialty", n_sites=3, seed=seed,
                                       home_sites=HOME, home_share=share,
                                       concentration=concentration)
    _covers(train, parts)
    _covers(test, tests)


@pytest.mark.parametrize("method", ["natural", "iid", "dirichlet", "specialty"])
def test_site_tests_follow_the_sites(method: str) -> None:
    ds = make(9000, seed=3)
    train, test = stratified_split(ds, test_fraction=0.3, seed=0)
    kw = {"method": method, "seed": 4, "alpha": 0.3, "home_sites": HOME, "home_share": 0.8,
          "n_sites": None if method == "natural" else 3}
    parts, tests = partition_with_test(train, test, **kw)  # type: ignore[arg-type]
    assert list(tests) == list(parts)
    _covers(test, tests)
    alone = partition(train, **kw)  # type: ignore[arg-type]
    assert [p.texts for p in alone.values()] == [p.texts for p in parts.values()]
    for site in parts:
        train_mix = np.bincount(parts[site].labels, minlength=6) / len(parts[site])
        test_mix = np.bincount(tests[site].labels, minlength=6) / len(tests[site])
        np.testing.assert_allclose(test_mix, train_mix, atol=0.04)
        if method == "natural":
            assert set(tests[site].groups or []) == {site}
    if method in ("dirichlet", "specialty"):  # the sites differ from each other
        mixes = [np.bincount(p.labels, minlength=6) / len(p) for p in tests.values()]
        assert max(np.abs(mixes[0] - m).max() for m in mixes[1:]) > 0.1


def test_specialty_errors() -> None:
    ds = make(100)
    with pytest.raises(DataError, match="home_sites"):
        partition(ds, method="specialty", n_sites=3)
    with pytest.raises(DataError, match="entries"):
        partition(ds, method="specialty", n_sites=3, home_sites=[0, 1])
    with pytest.raises(DataError, match="site indices"):
        partition(ds, method="specialty", n_sites=3, home_sites=[0, 0, 1, 3, None, None])
    with pytest.raises(DataError, match="home_share"):
        partition(ds, method="specialty", n_sites=3, home_sites=HOME, home_share=0.2)
    with pytest.raises(DataError, match="concentration"):
        partition(ds, method="specialty", n_sites=3, home_sites=HOME, concentration=0.0)
    with pytest.raises(DataError, match="no groups"):
        partition_with_test(ds, Dataset(["x"], [0], NAMES), method="natural")
    with pytest.raises(DataError, match="label names"):
        partition_with_test(ds, Dataset(["x"], [0], ("a",)), method="iid", n_sites=2)
