"""JSON output without bare ``NaN``: undefined numbers become ``null``.

Python's :mod:`json` writes NaN and infinities as the bare words ``NaN`` and ``Infinity``,
which are not JSON: ``jq``, JavaScript and most parsers reject the whole document. Metrics
have undefined values (a ROC-AUC on data with one class, a fraction of zero seconds), so every
JSON document the tools write — benchmark output, ``summary.json`` — goes through
:func:`dumps`, which replaces each non-finite float by ``None`` and refuses to write one
(``allow_nan=False``) should any remain.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (also inside dicts, lists and tuples, and
    numpy scalars) replaced by ``None``; numpy scalars and arrays become Python values."""
    if isinstance(obj, np.ndarray):
        return finite_or_none(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` of :func:`finite_or_none` (``obj``); never writes ``NaN``."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)
