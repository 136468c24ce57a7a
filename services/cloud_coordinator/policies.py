"""Build the coordinator's pluggable policies (privacy engine, rank policy) from config."""

from __future__ import annotations

from typing import Any

from services.cloud_coordinator.handlers import PrivacyEngine
from services.cloud_coordinator.privacy import AggregatePrivacy
from services.cloud_coordinator.rank import RankPolicy, ScheduledRank
from services.common.config import FederationConfig


def make_privacy_engine(fed: FederationConfig) -> PrivacyEngine | None:
    """The aggregate DP engine of ``fed.privacy``, or None when privacy is off."""
    if fed.privacy.mode == "off":
        return None
    return AggregatePrivacy(fed)


def make_rank_policy(fed: FederationConfig, ops: Any) -> RankPolicy:
    """The rank policy over the scheduler ``fed.rank.scheduler`` names."""
    return ScheduledRank(fed, ops)
