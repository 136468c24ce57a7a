"""Client weights from the coordinator's policy (``federation.weights``), never from a client.

A client's integer weight multiplies its encrypted update at the edge and divides out at the
coordinator, so it decides how far one client moves the global adapter. Taken from what a
client says about itself (its hello's sample count), one client claiming 2^64 - 1 samples would
take the largest weight and push everyone else to the smallest. Here the weight comes from the
size the federation's operators declared for that client, capped, and every client the
operators did not declare gets the same default size. The functions are pure, so anyone with
the federation config (the coordinator, a key holder checking a plan) computes the same
weights for the same round.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from services.common.config import WeightsConfig

__all__ = ["WeightPolicy"]


class WeightPolicy:
    """Sizes and integer weights of clients under ``federation.weights``.

    Args:
        config: the federation's ``weights`` block.
        max_weight: ``secure_sum.max_weight``, the largest integer weight (packing headroom).
    """

    def __init__(self, config: WeightsConfig, *, max_weight: int) -> None:
        if max_weight < 1:
            raise ValueError("max_weight must be >= 1")
        self.config, self.max_weight = config, max_weight
        declared = list(config.sizes.values())
        if config.default_size is not None:
            default = config.default_size
        elif declared:
            default = max(1, round(statistics.median(declared)))
        else:
            default = 1  # nothing declared: every client the same size
        self.default_size = default

    def size_of(self, client_id: str) -> int:
        """The size the policy gives ``client_id``: declared or default, at most ``max_size``."""
        size = self.config.sizes.get(client_id, self.default_size)
        if self.config.max_size is not None:
            size = min(size, self.config.max_size)
        return size

    def weights(self, client_ids: Iterable[str]) -> dict[str, int]:
        """Integer weights in ``[1, max_weight]`` for the clients of one round, proportional to
        their sizes (the largest size of the round gets ``max_weight``)."""
        sizes = {cid: self.size_of(cid) for cid in client_ids}
        if not sizes:
            return {}
        largest = max(sizes.values())
        mw = self.max_weight
        return {cid: max(1, min(mw, round(mw * n / largest))) for cid, n in sizes.items()}
