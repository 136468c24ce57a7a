"""The coordinator's side of threshold decryption.

The coordinator holds one share of the key, like each key holder, and no more. To decrypt a
round's sum it (1) runs the key-holder checks on the round's evidence itself and records the
round (its own :class:`~services.key_holder.handlers.KeyHolder`), (2) sends the request to as
many connected key holders as it needs shares from (t - 1), (3) computes its own share while
they compute theirs, (4) checks every share's proof as it arrives — a holder that refuses, sends
a share that fails its proof or disconnects is named in a log line and a metric, and the next
connected holder is asked instead — and (5) combines t proven shares into the plaintexts.

No transport here: a connected holder is a :class:`HolderLink` the servicer implements; the
servicer calls :meth:`ThresholdDecryption.on_share` / :meth:`on_refusal` from its event loop
while :meth:`decrypt` waits in a worker thread.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.threshold import Combiner, DecryptionShare, ThresholdParams
from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.errors import ThresholdError
from services.common import domain as d
from services.common.metrics import Metrics
from services.key_holder.handlers import KeyHolder

__all__ = ["HolderLink", "ThresholdDecryption"]

log = logging.getLogger(__name__)


class HolderLink(Protocol):
    """A connected key holder as the coordinator's domain code sees it."""

    def send(self, request: d.DecryptRequest) -> None:
        """Queue ``request`` for the holder (thread-safe); the answer comes back through
        :meth:`ThresholdDecryption.on_share` or :meth:`ThresholdDecryption.on_refusal`."""


_CONNECTED = -1  # request id of the note that a holder connected


@dataclass(frozen=True)
class _Answer:
    holder: str
    request_id: int
    share: DecryptionShare | None = None
    reason: str = ""
    message: str = ""


class ThresholdDecryption:
    """Collects t proven decryption shares for a round sum: the coordinator's own and those of
    connected key holders.

    Args:
        params: the threshold key's public parameters.
        own: the coordinator's key holder (its share, its checks, its durable records).
        timeout_s: how long one decryption waits for enough shares.
        workers: processes for checking proofs and combining (None: all cores; 0: inline).
    """

    def __init__(self, *, params: ThresholdParams, own: KeyHolder, metrics: Metrics,
                 timeout_s: float = 300.0, workers: int | None = None) -> None:
        if own.params != params:
            raise ThresholdError("the coordinator's key share belongs to other threshold parameters")
        self.params, self.own, self.metrics = params, own, metrics
        self.timeout_s, self.workers = timeout_s, workers
        self._links: dict[str, HolderLink] = {}
        self._lock = threading.Lock()
        self._answers: queue.Queue[_Answer] = queue.Queue()
        self._ids = itertools.count(1)

    # -- holders, called by the servicer --------------------------------------------------------

    def connect(self, holder: str, link: HolderLink) -> None:
        """A key holder connected (its id as in the threshold parameters)."""
        self.params.index_of(holder)  # CryptoError if it is not a holder of this key
        with self._lock:
            self._links[holder] = link
            self.metrics.holders_connected.labels(self.metrics.service).set(len(self._links))
        self._answers.put(_Answer(holder, _CONNECTED))  # a decryption waiting for holders asks it
        log.info("key holder %s connected", holder)

    def disconnect(self, holder: str, link: HolderLink) -> None:
        with self._lock:
            if self._links.get(holder) is link:
                del self._links[holder]
            self.metrics.holders_connected.labels(self.metrics.service).set(len(self._links))
        self._answers.put(_Answer(holder, 0, reason="disconnected"))

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(self._links)

    def on_share(self, holder: str, request_id: int, blob: bytes) -> None:
        """A holder's serialized decryption share arrived."""
        try:
            share = DecryptionShare.from_bytes(blob, self.params)
        except ThresholdError as exc:
            self._answers.put(_Answer(holder, request_id, reason="malformed", message=str(exc)))
            return
        if share.holder != holder:
            self._answers.put(_Answer(holder, request_id, reason="malformed",
                                      message=f"share claims to be of holder {share.holder}"))
            return
        self._answers.put(_Answer(holder, request_id, share=share))

    def on_refusal(self, holder: str, request_id: int, reason: str, message: str) -> None:
        """A holder refused a request (``reason`` names its failed check)."""
        self._answers.put(_Answer(holder, request_id, reason=reason or "refused", message=message))

    # -- one decryption, in a worker thread ----------------------------------------------------

    def decrypt_code_sums(self, request: d.DecryptRequest, layout: PackingLayout) -> np.ndarray:
        """The integer slot sums of the round sum ``request`` carries.

        Raises:
            Rejection: the coordinator's own checks refuse the request (nothing is sent).
            ThresholdError: fewer than t proven shares arrived in time (names who failed).
        """
        approved = self.own.approve(request)  # every check, before anyone else is asked
        needed = self.params.threshold - 1
        asked: list[str] = []
        failures: dict[str, str] = {}
        with Combiner(self.params, layout, workers=self.workers) as combiner:
            self._ask_more(request, needed, asked, failures)
            own_share = self.own.decryption_share(approved)
            shares = self._collect(request, approved.total, approved.context, combiner,
                                   needed, asked, failures)
            return combiner.decrypt_code_sums(approved.total, [own_share, *shares],
                                              context=approved.context, verify=False)

    def next_request_id(self) -> int:
        return next(self._ids)

    def _ask_more(self, request: d.DecryptRequest, count: int, asked: list[str],
                  failures: dict[str, str]) -> None:
        with self._lock:
            fresh = [(h, link) for h, link in sorted(self._links.items())
                     if h not in asked and h not in failures and h != self.own.holder]
        for holder, link in fresh[:count]:
            asked.append(holder)
            link.send(request)

    def _collect(self, request: d.DecryptRequest, total: CiphertextVector, context: bytes,
                 combiner: Combiner, needed: int, asked: list[str],
                 failures: dict[str, str]) -> list[DecryptionShare]:
        good: list[DecryptionShare] = []
        deadline = time.monotonic() + self.timeout_s
        while len(good) < needed:
            pending = [h for h in asked if h not in failures and h not in {s.holder for s in good}]
            if len(pending) < needed - len(good):
                self._ask_more(request, needed - len(good) - len(pending), asked, failures)
                pending = [h for h in asked if h not in failures
                           and h not in {s.holder for s in good}]
            try:  # an answer, or (when too few holders are connected) a holder connecting
                answer = self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                for h in pending:
                    self._fail(h, "timeout", f"no answer within {self.timeout_s:.0f}s", failures)
                why = "time ran out" if pending else "too few key holders connected in time"
                raise self._short(request, len(good), failures, why) from None
            if answer.request_id == _CONNECTED:
                continue  # ask it at the top of the loop
            if answer.holder not in pending or answer.request_id not in (request.request_id, 0):
                continue  # an answer to an earlier request, or from a holder not asked
            if answer.share is None:
                self._fail(answer.holder, answer.reason, answer.message, failures)
            elif not combiner.proof_holds(total, answer.share, context=context):
                self._fail(answer.holder, "bad_proof",
                           "its decryption share failed the proof of correctness", failures)
            else:
                good.append(answer.share)
        return good

    def _fail(self, holder: str, kind: str, message: str, failures: dict[str, str]) -> None:
        failures[holder] = f"{kind}: {message}" if message else kind
        self.metrics.holder_failures.labels(self.metrics.service, holder, kind).inc()
        log.warning("key holder %s gave no usable share (%s)%s", holder, kind,
                    f": {message}" if message else "")

    def _short(self, request: d.DecryptRequest, have: int, failures: dict[str, str],
               why: str) -> ThresholdError:
        named = "; ".join(f"{h} ({f})" for h, f in sorted(failures.items())) or "none failed"
        return ThresholdError(
            f"round {request.round}: {have + 1} of the {self.params.threshold} decryption shares "
            f"needed ({why}); key holders that failed: {named}")

    def close(self) -> None:
        self.own.close()
