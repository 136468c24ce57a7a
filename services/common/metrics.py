"""Prometheus metrics shared by the three services.

Every series carries the label ``service`` (coordinator | edge | client). Label values are
limited to service names, client and edge ids, rejection reasons, phases, entity types and the
class names of the federation's config (``labels:``): no plaintext, no key material, no personal
data ever becomes a label.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

ROUND_PHASES = ("waiting", "training", "aggregating", "decrypting", "committed", "finished")


@dataclass
class Metrics:
    """The metric families one service exports (a fresh registry per instance, so tests and
    several in-process services do not collide)."""

    service: str
    registry: CollectorRegistry
    round: Gauge
    round_phase: Gauge
    round_duration: Histogram
    connected_clients: Gauge
    roster_clients: Gauge
    updates_accepted: Counter
    updates_rejected: Counter
    bytes_received: Counter
    bytes_sent: Counter
    encrypt_seconds: Histogram
    decrypt_seconds: Histogram
    epsilon_spent: Gauge
    global_loss: Gauge
    global_accuracy: Gauge
    global_roc_auc: Gauge
    global_class_roc_auc: Gauge
    client_val_roc_auc: Gauge
    client_rank: Gauge
    client_dpsgd_epsilon: Gauge
    values_uploaded: Counter
    buffer_size: Gauge
    deid_entities: Counter
    rounds_discarded: Counter
    discarded_round_edges: Counter
    shares_served: Counter
    shares_refused: Counter
    share_seconds: Histogram
    holder_failures: Counter
    holders_connected: Gauge

    def set_phase(self, phase: str) -> None:
        for p in ROUND_PHASES:
            self.round_phase.labels(self.service, p).set(1.0 if p == phase else 0.0)

    def reject(self, reason: str) -> None:
        self.updates_rejected.labels(self.service, reason).inc()


def create_metrics(service: str) -> Metrics:
    reg = CollectorRegistry()
    s = ["service"]
    secs = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
    m = Metrics(
        service=service,
        registry=reg,
        round=Gauge("ffalora_round", "Current round number.", s, registry=reg),
        round_phase=Gauge("ffalora_round_phase", "1 for the current phase of the round.", s + ["phase"], registry=reg),
        round_duration=Histogram("ffalora_round_duration_seconds", "Wall time of completed rounds.", s, buckets=secs, registry=reg),
        connected_clients=Gauge("ffalora_connected_clients", "Client sessions connected to this edge.", s, registry=reg),
        roster_clients=Gauge("ffalora_roster_clients", "Clients on this edge's roster: connected, or check-in clients away but due back.", s, registry=reg),
        updates_accepted=Counter("ffalora_updates_accepted", "Encrypted updates accepted.", s, registry=reg),
        updates_rejected=Counter("ffalora_updates_rejected", "Updates rejected, by reason.", s + ["reason"], registry=reg),
        bytes_received=Counter("ffalora_bytes_received", "Payload bytes received.", s, registry=reg),
        bytes_sent=Counter("ffalora_bytes_sent", "Payload bytes sent.", s, registry=reg),
        encrypt_seconds=Histogram("ffalora_encrypt_seconds", "Client quantize+pack+encrypt time per update.", s, buckets=secs, registry=reg),
        decrypt_seconds=Histogram("ffalora_decrypt_seconds", "Coordinator decrypt+unpack time per round.", s, buckets=secs, registry=reg),
        epsilon_spent=Gauge("ffalora_privacy_epsilon_spent", "Differential-privacy epsilon spent so far.", s, registry=reg),
        global_loss=Gauge("ffalora_global_loss", "Median of the clients' training losses in the last round.", s, registry=reg),
        global_accuracy=Gauge("ffalora_global_accuracy", "Accuracy of the global adapter (held-out or federated validation).", s, registry=reg),
        global_roc_auc=Gauge("ffalora_global_roc_auc",
                             "Macro one-vs-rest ROC-AUC of the global adapter on the held-out evaluation set.",
                             s, registry=reg),
        global_class_roc_auc=Gauge("ffalora_global_class_roc_auc",
                                   "One-vs-rest ROC-AUC of each class (the config's class names) on the "
                                   "held-out evaluation set.", s + ["class"], registry=reg),
        client_val_roc_auc=Gauge("ffalora_client_val_roc_auc",
                                 "Personalized heads: ROC-AUC each client reports on its validation split, with "
                                 "the global head and with its own (head=global|personal).",
                                 s + ["client", "head"], registry=reg),
        client_rank=Gauge("ffalora_client_rank", "LoRA rank assigned to each client.", s + ["client"], registry=reg),
        client_dpsgd_epsilon=Gauge("ffalora_client_dpsgd_epsilon",
                                   "Sample-level DP-SGD epsilon each client reports as spent so far.",
                                   s + ["client"], registry=reg),
        values_uploaded=Counter("ffalora_values_uploaded", "Adapter values uploaded (before packing).", s, registry=reg),
        buffer_size=Gauge("ffalora_buffer_size", "Updates held in the edge's current buffer.", s, registry=reg),
        deid_entities=Counter("ffalora_deid_entities", "Entities removed by de-identification, by type.", s + ["entity_type"], registry=reg),
        rounds_discarded=Counter("ffalora_rounds_discarded", "Rounds discarded after decryption and retried, by reason.",
                                 s + ["reason"], registry=reg),
        discarded_round_edges=Counter("ffalora_discarded_round_edges",
                                      "Discarded rounds each edge had sent a partial sum to.", s + ["edge"], registry=reg),
        shares_served=Counter("ffalora_decryption_shares_served", "Threshold decryption shares this key holder computed.",
                              s, registry=reg),
        shares_refused=Counter("ffalora_decryption_shares_refused",
                               "Decrypt requests this key holder refused, by the check that failed.",
                               s + ["reason"], registry=reg),
        share_seconds=Histogram("ffalora_decryption_share_seconds",
                                "Time to compute (and prove) one decryption share of a round sum.",
                                s, buckets=secs, registry=reg),
        holder_failures=Counter("ffalora_key_holder_failures",
                                "Coordinator: key holders that refused, sent a share failing its proof, or "
                                "did not answer in time, by holder and kind.", s + ["holder", "kind"], registry=reg),
        holders_connected=Gauge("ffalora_key_holders_connected", "Coordinator: key holders connected now.",
                                s, registry=reg),
    )
    # Make the unlabeled-by-client series visible from the start (a scrape shows zeros).
    unlabeled: tuple[Gauge | Counter, ...] = (
        m.round, m.connected_clients, m.roster_clients, m.epsilon_spent, m.global_loss, m.global_accuracy,
        m.global_roc_auc, m.buffer_size, m.updates_accepted, m.bytes_received, m.bytes_sent,
        m.values_uploaded, m.shares_served, m.holders_connected)
    for metric in unlabeled:
        metric.labels(service)
    m.set_phase("waiting")
    return m


def serve_metrics(metrics: Metrics, *, host: str, port: int) -> int:
    """Start the /metrics HTTP endpoint in a daemon thread; return the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return int(server.server_address[1])
