"""Data: user files (CSV/TSV/JSONL), the built-in demo data sets, deduplication, the fixed
held-out test split and partitioning across sites (natural, IID, Dirichlet, specialty), with
per-site test splits."""

from ffa_lora.data.builtin import (
    BUILTIN_NAMES,
    LABEL_NAMES,
    DemoData,
    hospital_of,
    load_airline_tweets,
    load_builtin,
    load_drug_reviews,
)
from ffa_lora.data.dataset import (
    Dataset,
    DedupStats,
    deduplicate,
    normalize_text,
    stratified_split,
)
from ffa_lora.data.loaders import load_table
from ffa_lora.data.partition import (
    PARTITION_METHODS,
    PartitionMethod,
    natural_sites,
    partition,
    partition_with_test,
)

__all__ = [
    "BUILTIN_NAMES",
    "LABEL_NAMES",
    "PARTITION_METHODS",
    "Dataset",
    "DedupStats",
    "DemoData",
    "PartitionMethod",
    "deduplicate",
    "hospital_of",
    "load_airline_tweets",
    "load_builtin",
    "load_drug_reviews",
    "load_table",
    "natural_sites",
    "normalize_text",
    "partition",
    "partition_with_test",
    "stratified_split",
]
