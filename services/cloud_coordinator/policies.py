"""Build the coordinator's pluggable policies (privacy engine, rank policy) from config."""

from __future__ import annotations

from typing import Any

from services.cloud_coordinator.handlers import FixedRank, PrivacyEngine, RankPolicy
from services.common.config import FederationConfig


def make_privacy_engine(fed: FederationConfig) -> PrivacyEngine | None:
    if fed.privacy.mode == "off":
        return None
    from services.cloud_coordinator.privacy import AggregatePrivacy

    return AggregatePrivacy(fed)


def make_rank_policy(fed: FederationConfig, ops: Any) -> RankPolicy:
    if fed.rank.scheduler == "fixed":
        return FixedRank(int(fed.rank.options.get("rank", fed.model.rank)))
    from services.cloud_coordinator.rank import ScheduledRank

    return ScheduledRank(fed, ops)
