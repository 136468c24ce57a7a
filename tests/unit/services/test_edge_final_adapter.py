"""When the federation finishes, the edge hands every client the final global adapter before it
says so (the client's last model, and what its personalized head is fitted on), also to a
check-in client that comes back after the end; a client that holds it already gets nothing."""

from __future__ import annotations

from ffa_lora_tools.harness import fuzzing as fz
from services.common.config import LimitsConfig
from services.common.metrics import create_metrics
from services.edge_aggregator.handlers import EdgeAggregator


class Outbox(fz.RecordingOutbox):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, int]] = []  # (client, "adapter" | "shutdown", version)

    def adapter(self, client_id: str, version: int, blob: bytes) -> None:
        self.sent.append((client_id, "adapter", version))

    def shutdown(self, client_id: str, reason: str, finished: bool) -> None:
        self.sent.append((client_id, "shutdown", -1))


def test_final_adapter_goes_out_before_the_end_of_the_federation() -> None:
    pub, _ = fz.fuzz_keys()
    outbox = Outbox()
    edge = EdgeAggregator(edge_id="e", region="r", limits=LimitsConfig(), metrics=create_metrics("edge"),
                          outbox=outbox, signer=fz.fuzz_signer("edge", "e"))
    edge.on_coordinator_welcome(pub, "sync", fz.federation_info())
    edge.on_adapter(3, b"v3")
    edge.client_connected("old", num_samples=10, device="cpu", adapter_version=None)
    edge.client_connected("away", num_samples=10, device="cpu", adapter_version=None, check_in_s=5.0)
    edge.client_disconnected("away")
    edge.on_adapter(4, b"v4")  # the last round's adapter, then the end
    edge.on_finished("reached max_rounds")
    assert outbox.sent == [("old", "adapter", 4), ("old", "shutdown", -1)]

    outbox.sent.clear()  # back after the end: the check-in client gets the final adapter first
    edge.client_connected("away", num_samples=10, device="cpu", adapter_version=None, check_in_s=5.0)
    assert outbox.sent == [("away", "adapter", 4), ("away", "shutdown", -1)]
    outbox.sent.clear()  # one that holds the final adapter (this edge sent it) gets nothing more
    edge.client_connected("old", num_samples=10, device="cpu", adapter_version=4)
    assert outbox.sent == [("old", "shutdown", -1)]
    outbox.sent.clear()
    edge.client_connected("stranger", num_samples=10, device="cpu", adapter_version=None)
    assert outbox.sent == [("stranger", "shutdown", -1)]


def test_a_claimed_version_the_edge_never_sent_gets_the_final_adapter() -> None:
    pub, _ = fz.fuzz_keys()
    outbox = Outbox()
    edge = EdgeAggregator(edge_id="e", region="r", limits=LimitsConfig(), metrics=create_metrics("edge"),
                          outbox=outbox, signer=fz.fuzz_signer("edge", "e"))
    edge.on_coordinator_welcome(pub, "sync", fz.federation_info())
    edge.client_connected("claims", num_samples=10, device="cpu", adapter_version=4)
    edge.on_adapter(4, b"v4")
    edge.on_finished("reached max_rounds")
    assert outbox.sent == [("claims", "adapter", 4), ("claims", "shutdown", -1)]
