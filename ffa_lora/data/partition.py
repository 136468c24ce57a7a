"""Partitioning a training set across sites: natural (by group), IID, or Dirichlet(α).

All methods are deterministic given ``seed`` and return disjoint parts that together cover
the input exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import DataError

PartitionMethod = Literal["natural", "iid", "dirichlet"]
PARTITION_METHODS: tuple[str, ...] = ("natural", "iid", "dirichlet")


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
) -> dict[str, Dataset]:
    """Split ``dataset`` into disjoint per-site data sets.

    Args:
        method: ``natural`` — one site per group (``n_sites``, if given, must equal the number
            of groups); ``iid`` — label-stratified round-robin after a seeded shuffle, so
            every site gets the same class mix and sizes differ by at most one per class;
            ``dirichlet`` — per class, site shares drawn from Dirichlet(α·1): small α gives
            skewed label mixes, large α approaches IID.
        n_sites: number of sites (required for ``iid`` and ``dirichlet``).
        alpha: Dirichlet concentration (> 0); only for ``dirichlet``.
        seed: seed of the shuffle / draw.
        site_names: names of the sites in order (default ``site-0``, ``site-1``, …); for
            ``natural`` the group names are used.
        min_size: each site must get at least this many examples; a Dirichlet draw that
            violates it is redrawn (up to 1000 times).

    Returns:
        ``{site name: Dataset}`` in site order; each part keeps the original example order.
    """
    if method not in PARTITION_METHODS:
        raise DataError(f"unknown partition method {method!r}; use one of {PARTITION_METHODS}")
    if method == "natural":
        sites = natural_sites(dataset)
        if n_sites is not None and n_sites != len(sites):
            raise DataError(
                f"natural partition gives {len(sites)} sites but n_sites={n_sites}; "
                "omit n_sites or use 'iid'/'dirichlet'"
            )
        assert dataset.groups is not None
        parts_idx = {s: [i for i, g in enumerate(dataset.groups) if g == s] for s in sites}
        return {s: dataset.subset(idx) for s, idx in parts_idx.items()}

    if n_sites is None or n_sites < 1:
        raise DataError(f"partition method {method!r} needs n_sites >= 1, got {n_sites}")
    if n_sites * min_size > len(dataset):
        raise DataError(
            f"{len(dataset)} examples cannot give {n_sites} sites {min_size} example(s) each"
        )
    names = _site_names(n_sites, site_names)
    labels = np.asarray(dataset.labels)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(dataset.num_labels)]

    assignment = np.full(len(dataset), -1, dtype=np.int64)
    if method == "iid":
        offset = 0
        for idx in by_class:
            perm = rng.permutation(idx)
            assignment[perm] = (np.arange(len(perm)) + offset) % n_sites
            offset += len(perm)
    else:
        if not alpha > 0:
            raise DataError(f"dirichlet alpha must be > 0, got {alpha}")
        for _ in range(1000):
            for idx in by_class:
                perm = rng.permutation(idx)
                shares = rng.dirichlet(np.full(n_sites, float(alpha)))
                cuts = (np.cumsum(shares)[:-1] * len(perm)).astype(np.int64)
                for site, chunk in enumerate(np.split(perm, cuts)):
                    assignment[chunk] = site
            sizes = np.bincount(assignment, minlength=n_sites)
            if sizes.min() >= min_size:
                break
        else:
            raise DataError(
                f"no Dirichlet(alpha={alpha}) draw in 1000 gave every one of {n_sites} sites "
                f"{min_size} example(s); raise alpha or lower n_sites/min_size"
            )
    if (np.bincount(assignment, minlength=n_sites) < min_size).any():
        raise DataError(f"a site got fewer than {min_size} examples; lower n_sites")
    return {
        name: dataset.subset(np.flatnonzero(assignment == site)) for site, name in enumerate(names)
    }
