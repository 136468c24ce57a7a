"""What the coordinator makes of reports it cannot verify, and of rounds it had to drop.

:func:`median_finite` is how the clients' reported losses and accuracies become the round's
figures: a median, so one client reporting 0 or 10^4 cannot end the federation (the
convergence test reads these figures) or steer rank decisions, as long as the others are the
majority.

:class:`DiscardLog` records rounds whose decrypted sum failed the range check (or that could not
be decrypted). Such a round is dropped and retried under a fresh round number; it is counted in
``ffalora_rounds_discarded_total{reason}`` and, per edge that had sent a partial sum to it, in
``ffalora_discarded_round_edges_total{edge}``. When rounds keep failing, a log line names the
edges that took part in every one of them: the coordinator cannot decrypt one edge's partial
alone (that is the point), so the operators of those edges are the ones who can look for the
client. Only round numbers, reasons and edge ids are recorded: never values.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.metrics import Metrics

__all__ = ["REPEATED_FAILURES", "DiscardLog", "DiscardedRound", "median_finite"]

log = logging.getLogger(__name__)

REPEATED_FAILURES = 2
"""Consecutive discarded rounds after which the edges involved in all of them are named."""


def median_finite(values: Iterable[float]) -> float:
    """Median of the finite values (NaN when there are none)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


@dataclass(frozen=True)
class DiscardedRound:
    """A round dropped after decryption: its number, why, and the edges whose partial sums it held."""

    round: int
    reason: str
    edges: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"round": self.round, "reason": self.reason, "edges": list(self.edges)}


class DiscardLog:
    """Discarded rounds since the last commit, with their metrics and log lines."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.history: list[DiscardedRound] = []  # every discarded round of this process
        self._streak: list[DiscardedRound] = []  # since the last committed round

    def discard(self, round: int, reason: str, edges: list[str], error: BaseException) -> DiscardedRound:
        """Record one discarded round; returns it."""
        entry = DiscardedRound(round, reason, tuple(edges))
        self.history.append(entry)
        self._streak.append(entry)
        service = self.metrics.service
        self.metrics.rounds_discarded.labels(service, reason).inc()
        for edge in edges:
            self.metrics.discarded_round_edges.labels(service, edge).inc()
        log.warning("round %d discarded (%s: %s); partial sums came from edge(s) %s; retrying with a new round",
                    round, reason, error, ", ".join(edges) or "none")
        if len(self._streak) >= REPEATED_FAILURES:
            common = set.intersection(*(set(r.edges) for r in self._streak))
            log.error("%d rounds in a row discarded (%s); edge(s) in every one of them: %s. Ask their operators "
                      "to check their clients (ffalora_discarded_round_edges_total{edge})",
                      len(self._streak), ", ".join(str(r.round) for r in self._streak),
                      ", ".join(sorted(common)) or "none in common")
        return entry

    def suspects(self) -> list[str]:
        """Edges that sent a partial sum to every round discarded since the last commit."""
        if not self._streak:
            return []
        return sorted(set.intersection(*(set(r.edges) for r in self._streak)))

    def since_last_commit(self) -> list[dict[str, object]]:
        """The discarded rounds since the last commit, for the next round's summary."""
        return [r.as_dict() for r in self._streak]

    def committed(self) -> None:
        """A round was committed: the streak of failures ends."""
        self._streak = []
