"""Partitioning a data set across sites: natural (by group), IID, Dirichlet(α) label skew, or
specialty skew (each class mostly at its home site).

All methods are deterministic given ``seed`` and return disjoint parts that together cover
the input exactly once. :func:`partition_with_test` also splits a held-out test set the same
way — each site's test part drawn from that site's own distribution — so that a site can be
scored on data like its own as well as on the global test set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import DataError

PartitionMethod = Literal["natural", "iid", "dirichlet", "specialty"]
PARTITION_METHODS: tuple[str, ...] = ("natural", "iid", "dirichlet", "specialty")


def natural_sites(dataset: Dataset) -> list[str]:
    """The data set's groups, largest first (ties by name)."""
    if dataset.groups is None:
        raise DataError(
            "partition method 'natural' needs a group per example (e.g. a group column); "
            "this data set has none, so use 'iid' or 'dirichlet'"
        )
    counts = Counter(dataset.groups)
    return sorted(counts, key=lambda g: (-counts[g], g))


def _site_names(n_sites: int, site_names: Sequence[str] | None) -> list[str]:
    if site_names is None:
        return [f"site-{i}" for i in range(n_sites)]
    names = [str(s) for s in site_names]
    if len(names) != n_sites or len(set(names)) != n_sites:
        raise DataError(f"site_names must be {n_sites} distinct names, got {len(names)}")
    return names


def partition(
    dataset: Dataset,
    *,
    method: PartitionMethod,
    n_sites: int | None = None,
    alpha: float = 0.5,
    seed: int = 0,
    site_names: Sequence[str] | None = None,
    min_size: int = 1,
    home_sites: Sequence[int | None] | None = None,
    home_share: float = 0.8,
    concentration: float | None = None,
) -> dict[str, Dataset]:
    """Split ``dataset`` into disjoint per-site data sets.

    Args:
        method: ``natural`` — one site per group (``n_sites``, if given, must equal the number
            of groups); ``iid`` — label-stratified round-robin after a seeded shuffle, so
            every site gets the same class mix and sizes differ by at most one per class;
            ``dirichlet`` — per class, site shares drawn from Dirichlet(α·1): small α gives
            skewed label mixes, large α approaches IID; ``specialty`` — per class, its home
            site (``home_sites``) gets ``home_share`` of it and the other sites split the
            rest evenly (classes without a home are spread evenly); with ``concentration``
            the shares are drawn from a Dirichlet with that mean instead (see
            :func:`specialty_shares`).
        n_sites: number of sites (required for ``iid``, ``dirichlet`` and ``specialty``).
        alpha: Dirichlet concentration (> 0); only for ``dirichlet``.
        seed: seed of the shuffle / draw.
        site_names: names of the sites in order (default ``site-0``, ``site-1``, …); for
            ``natural`` the group names are used.
        min_size: each site must get at least this many examples; a Dirichlet draw that
            violates it is redrawn (up to 1000 times).
        home_sites: ``specialty`` only: per class index, its home site's index or ``None``.
        home_share: ``specialty`` only: the home site's mean share of each of its classes,
            in [1/n_sites, 1]; 1/n_sites is no skew.
        concentration: ``specialty`` only: Dirichlet concentration per site (> 0), or
            ``None`` for exactly the mean shares.

    Returns:
        ``{site name: Dataset}`` in site order; each part keeps the original example order.
    """
    return partition_with_test(
        dataset, None, method=method, n_sites=n_sites, alpha=alpha, seed=seed,
        site_names=site_names, min_size=min_size, home_sites=home_sites,
        home_share=home_share, concentration=concentration,
    )[0]


def partition_with_test(
    train: Dataset,
    test: Dataset | None,
    *,
    method: PartitionMethod,
    n_sites: int | None = None,
    alpha: float = 0.5,
    seed: int = 0,
    site_names: Sequence[str] | None = None,
    min_size: int = 1,
    home_sites: Sequence[int | None] | None = None,
    home_share: float = 0.8,
    concentration: float | None = None,
) -> tuple[dict[str, Dataset], dict[str, Dataset]]:
    """:func:`partition` of ``train`` (same arguments, same result), plus ``test`` split
    across the same sites so that each site's test part follows its training distribution.

    ``natural``: the test examples of each group (``test`` needs groups). ``iid``: the same
    label-stratified round robin. ``dirichlet`` and ``specialty``: each class of ``test`` is
    cut by the *same* site shares as that class of ``train``. The test parts are disjoint
    and cover ``test``; a site's test part may lack classes the site rarely sees. The test
    draw uses its own seeded generator, so ``train``'s parts do not depend on ``test``.

    Returns:
        ``(train parts, test parts)``, both keyed by site name in site order; the test parts
        are empty when ``test`` is ``None``.
    """
    if method not in PARTITION_METHODS:
        raise DataError(f"unknown partition method {method!r}; use one of {PARTITION_METHODS}")
    if test is not None and test.label_names != train.label_names:
        raise DataError("train and test have different label names; split one data set")
    if method == "natural":
        sites = natural_sites(train)
        if n_sites is not None and n_sites != len(sites):
            raise DataError(
                f"natural partition gives {len(sites)} sites but n_sites={n_sites}; "
                "omit n_sites or use 'iid'/'dirichlet'"
            )
        train_parts = _by_group(train, sites)
        if test is None:
            return train_parts, {}
        if test.groups is None:
            raise DataError("the test set has no groups, so it cannot follow a natural partition")
        return train_parts, _by_group(test, sites)

    if n_sites is None or n_sites < 1:
        raise DataError(f"partition method {method!r} needs n_sites >= 1, got {n_sites}")
    if n_sites * min_size > len(train):
        raise DataError(
            f"{len(train)} examples cannot give {n_sites} sites {min_size} example(s) each"
        )
    names = _site_names(n_sites, site_names)
    labels = np.asarray(train.labels)
    rng = np.random.default_rng(seed)
    test_rng = np.random.default_rng([seed, 1])
    by_class = [np.flatnonzero(labels == c) for c in range(train.num_labels)]

    shares: np.ndarray | None = None
    if method == "iid":
        assignment = _round_robin(by_class, len(train), n_sites, rng)
    elif method == "dirichlet":
        if not alpha > 0:
            raise DataError(f"dirichlet alpha must be > 0, got {alpha}")
        assignment, shares = _draw_until_min_size(
            by_class, len(train), n_sites, min_size, rng,
            lambda c: rng.dirichlet(np.full(n_sites, float(alpha))),
            f"no Dirichlet(alpha={alpha}) draw",
        )
    else:
        mean = _specialty_mean(train.num_labels, n_sites, home_sites, home_share)
        if concentration is not None and not concentration > 0:
            raise DataError(f"concentration must be > 0 (or None for no draw), got {concentration}")
        kappa = concentration

        def draw(c: int) -> np.ndarray:
            if kappa is None:
                return mean[c]
            return rng.dirichlet(np.maximum(kappa * n_sites * mean[c], 1e-3))

        assignment, shares = _draw_until_min_size(
            by_class, len(train), n_sites, min_size, rng, draw,
            f"no specialty draw (home_share={home_share}, concentration={concentration})",
            tries=1 if kappa is None else 1000,
        )
    if (np.bincount(assignment, minlength=n_sites) < min_size).any():
        raise DataError(f"a site got fewer than {min_size} examples; lower n_sites")
    train_parts = _parts(train, assignment, names)
    if test is None:
        return train_parts, {}
    test_labels = np.asarray(test.labels)
    test_by_class = [np.flatnonzero(test_labels == c) for c in range(test.num_labels)]
    if shares is None:
        test_assignment = _round_robin(test_by_class, len(test), n_sites, test_rng)
    else:
        test_assignment = _cut_by_shares(test_by_class, len(test), shares, test_rng)
    return train_parts, _parts(test, test_assignment, names)


def specialty_shares(
    home_sites: Sequence[int | None], n_sites: int, *, home_share: float
) -> np.ndarray:
    """The mean site shares of the ``specialty`` partition, one row per class.

    A class with home site ``h`` gives ``home_share`` to ``h`` and ``(1 − home_share) /
    (n_sites − 1)`` to each other site; a class without a home gives ``1 / n_sites`` to
    each. ``home_share = 1 / n_sites`` is no skew (every row uniform), 1 puts every class
    at its home only. With a concentration κ the partition draws each row from
    Dirichlet(κ · n_sites · mean row) instead: the same mean, and for a uniform row exactly
    the ``dirichlet`` method's Dirichlet(κ·1); large κ approaches the mean.
    """
    return _specialty_mean(len(home_sites), n_sites, home_sites, home_share)


def _specialty_mean(
    num_labels: int, n_sites: int, home_sites: Sequence[int | None] | None, home_share: float
) -> np.ndarray:
    if home_sites is None:
        raise DataError("partition method 'specialty' needs home_sites (a home site per class)")
    if len(home_sites) != num_labels:
        raise DataError(f"home_sites has {len(home_sites)} entries for {num_labels} classes")
    bad = [h for h in home_sites if h is not None and not 0 <= h < n_sites]
    if bad:
        raise DataError(f"home_sites must be site indices in 0..{n_sites - 1} or None, got {bad}")
    if n_sites < 2 or not 1.0 / n_sites <= home_share <= 1.0:
        raise DataError(
            f"home_share must be in [1/n_sites, 1] = [{1.0 / max(n_sites, 1):.3g}, 1] with "
            f"n_sites >= 2, got {home_share} with n_sites={n_sites}"
        )
    mean = np.full((num_labels, n_sites), 1.0 / n_sites)
    for c, h in enumerate(home_sites):
        if h is not None:
            mean[c] = (1.0 - home_share) / (n_sites - 1)
            mean[c, h] = home_share
    return mean


def _by_group(dataset: Dataset, sites: list[str]) -> dict[str, Dataset]:
    assert dataset.groups is not None
    groups = dataset.groups
    return {s: dataset.subset([i for i, g in enumerate(groups) if g == s]) for s in sites}


def _parts(dataset: Dataset, assignment: np.ndarray, names: list[str]) -> dict[str, Dataset]:
    return {name: dataset.subset(np.flatnonzero(assignment == s)) for s, name in enumerate(names)}


def _round_robin(
    by_class: list[np.ndarray], n: int, n_sites: int, rng: np.random.Generator
) -> np.ndarray:
    assignment = np.full(n, -1, dtype=np.int64)
    offset = 0
    for idx in by_class:
        perm = rng.permutation(idx)
        assignment[perm] = (np.arange(len(perm)) + offset) % n_sites
        offset += len(perm)
    return assignment


def _cut_by_shares(
    by_class: list[np.ndarray], n: int, shares: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Assign each class's shuffled examples to sites in contiguous runs of its shares."""
    assignment = np.full(n, -1, dtype=np.int64)
    for c, idx in enumerate(by_class):
        perm = rng.permutation(idx)
        cuts = (np.cumsum(shares[c])[:-1] * len(perm)).astype(np.int64)
        for site, chunk in enumerate(np.split(perm, cuts)):
            assignment[chunk] = site
    return assignment


def _draw_until_min_size(
    by_class: list[np.ndarray],
    n: int,
    n_sites: int,
    min_size: int,
    rng: np.random.Generator,
    draw: Callable[[int], np.ndarray],
    what: str,
    tries: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Per class: shuffle, draw its site shares, cut; redraw all until every site has
    ``min_size`` examples. Returns the assignment and the shares (one row per class)."""
    assignment = np.full(n, -1, dtype=np.int64)
    shares = np.zeros((len(by_class), n_sites))
    for _ in range(tries):
        for c, idx in enumerate(by_class):
            perm = rng.permutation(idx)
            shares[c] = draw(c)
            cuts = (np.cumsum(shares[c])[:-1] * len(perm)).astype(np.int64)
            for site, chunk in enumerate(np.split(perm, cuts)):
                assignment[chunk] = site
        if np.bincount(assignment, minlength=n_sites).min() >= min_size:
            return assignment, shares
    raise DataError(
        f"{what} in {tries} gave every one of {n_sites} sites {min_size} example(s); "
        "raise alpha / concentration or lower n_sites / min_size"
    )
