"""The spec ``ffa-lora init`` reads: a short YAML file that names a federation's sites.

``docs/init-spec.yaml`` is the documented example. Every field is checked here, before anything
is written; an error names the field (``edges[1].address``) and says how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ffa_lora.errors import ConfigError
from services.common.config import BUILTIN_MODEL, FederationConfig, parse_federation

__all__ = [
    "ClientSpec",
    "CoordinatorSpec",
    "EdgeSpec",
    "InitSpec",
    "KeyHolderSpec",
    "load_spec",
    "parse_spec",
    "split_address",
]

# Ids and regions also name Kubernetes objects (the chart's limits: ids 40 characters, regions 30).
_ID = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
_REGION = r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$"
_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_ADDRESS = r"^[^:\s]+:\d{1,5}$"
#: federation fields init sets itself; the spec gives them at its top level instead
_OWNED = {"name": "federation", "labels": "labels"}


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port)."""
    host, port = address.rsplit(":", 1)
    return host, int(port)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Reachable(_Spec):
    """A server: where others dial it, where it listens, extra certificate names."""

    address: str = Field(
        pattern=_ADDRESS, description="host:port the peers dial; the host goes in the certificate."
    )
    listen: str | None = Field(
        default=None,
        pattern=_ADDRESS,
        description="host:port to listen on (default 0.0.0.0:<port of address>).",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Extra DNS names or IPs for the certificate (load balancers, aliases).",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus metrics port (default: off)."
    )

    @field_validator("address")
    @classmethod
    def _dialable(cls, value: str) -> str:
        host, port = split_address(value)
        if host in ("0.0.0.0", "::", "*"):
            raise ValueError(
                f"{host} is a listening address, not one peers can dial: give the host name or IP "
                "others reach this service at (and set listen: to bind to all interfaces)"
            )
        if not 0 < port < 65536:
            raise ValueError(f"port {port} must be between 1 and 65535")
        return value

    def listen_address(self) -> str:
        """Where the server binds."""
        return self.listen or f"0.0.0.0:{split_address(self.address)[1]}"


class CoordinatorSpec(_Reachable):
    """The coordinator (one per federation)."""

    id: str = Field(
        default="coordinator", pattern=_ID, description="Certificate id of the coordinator."
    )
    evaluation: str | None = Field(
        default=None, description="Optional held-out CSV the coordinator scores every adapter on."
    )


class EdgeSpec(_Reachable):
    """One regional edge aggregator."""

    id: str = Field(pattern=_ID, description="Edge id; replica N's certificate id is <id>-N.")
    region: str = Field(pattern=_REGION, description="Region served (a DNS label, e.g. eu-west).")
    replicas: int = Field(
        default=1, ge=1, le=64, description="Edge replicas under Helm (one certificate each)."
    )


class ClientSpec(_Spec):
    """One client site (institution)."""

    id: str = Field(pattern=_ID, description="Site id, e.g. hospital-a.")
    edge: str | list[str] = Field(
        description="Id of its edge, or a list: the first, then fallbacks."
    )
    data: str = Field(
        min_length=1, description="Path of the site's training CSV/JSONL on its own host."
    )
    text_column: str = Field(default="text", description="Column holding the text.")
    label_column: str = Field(default="label", description="Column holding the label.")
    deid: bool = Field(default=True, description="De-identify the texts before training.")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus metrics port (default: off)."
    )

    def edge_ids(self) -> list[str]:
        """The client's edges in the order it tries them."""
        return [self.edge] if isinstance(self.edge, str) else list(self.edge)


class KeyHolderSpec(_Spec):
    """One key holder: a site that keeps one share of the federation's threshold key."""

    id: str = Field(pattern=_ID, description="Key holder id (certificate keyholder/<id>).")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus metrics port (default: off)."
    )


def _default_keyholders() -> list[KeyHolderSpec]:
    return [KeyHolderSpec(id="keyholder-1"), KeyHolderSpec(id="keyholder-2")]


class InitSpec(_Spec):
    """A federation to scaffold."""

    federation: str = Field(
        pattern=_DNS_LABEL, description="Federation name: the trust domain of every certificate."
    )
    labels: list[str] = Field(min_length=2, description="Class names in the task head's order.")
    model: str = Field(
        default=BUILTIN_MODEL,
        min_length=1,
        description="Base model: Hugging Face id, local path or 'demo'.",
    )
    coordinator: CoordinatorSpec
    edges: list[EdgeSpec] = Field(min_length=1, description="The regional edges.")
    clients: list[ClientSpec] = Field(
        min_length=2,
        description="The client sites (two at least: the secure "
        "sum of one client would be its update).",
    )
    keyholders: list[KeyHolderSpec] = Field(
        default_factory=_default_keyholders,
        min_length=1,
        description="Key holders beside the coordinator, each with one share of the threshold key "
        "(default: keyholder-1 and keyholder-2); the coordinator holds one share too.",
    )
    threshold: int = Field(
        default=2,
        ge=2,
        description="Shares needed to decrypt a round (t >= 2: no party decrypts alone).",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Any field of the coordinator's federation block (docs/config.md).",
    )
    certificate_days: int = Field(
        default=365, ge=1, le=1825, description="Lifetime of the role certificates."
    )

    @model_validator(mode="after")
    def _consistent(self) -> InitSpec:
        """Unique names and addresses; every client's edges exist."""
        _unique("labels", self.labels)
        _unique(
            "ids (coordinator.id, edges[].id, clients[].id, keyholders[].id)",
            [self.coordinator.id]
            + [e.id for e in self.edges]
            + [c.id for c in self.clients]
            + [k.id for k in self.keyholders],
        )
        if self.threshold > len(self.keyholders) + 1:
            raise ValueError(
                f"threshold {self.threshold} exceeds the {len(self.keyholders) + 1} share holders "
                "(the coordinator and keyholders[]): add key holders or lower threshold"
            )
        _unique("edges[].region", [e.region for e in self.edges])
        _unique(
            "addresses (coordinator.address, edges[].address)",
            [self.coordinator.address] + [e.address for e in self.edges],
        )
        known = {e.id for e in self.edges}
        for i, c in enumerate(self.clients):
            ids = c.edge_ids()
            missing = [e for e in ids if e not in known]
            if not ids or missing:
                raise ValueError(
                    f"clients[{i}] ({c.id}).edge names {missing or 'no edge'}; "
                    "use ids from edges[]: "
                    f"{', '.join(sorted(known))}"
                )
        owned = [(f"settings.{k}", top) for k, top in _OWNED.items() if k in self.settings]
        model = self.settings.get("model")
        if isinstance(model, dict):
            owned += [
                (f"settings.model.{k}", top)
                for k, top in (("name_or_path", "model"), ("num_labels", "labels"))
                if k in model
            ]
        for field, top in owned:
            raise ValueError(
                f"{field} is set by init from the spec's {top}: field; remove it from settings"
            )
        return self

    def federation_block(self) -> FederationConfig:
        """The coordinator's federation block: the settings plus what the spec decides."""
        fed: dict[str, Any] = {k: v for k, v in self.settings.items()}
        fed["name"], fed["labels"] = self.federation, list(self.labels)
        fed["model"] = {
            **_section(fed, "model"),
            "name_or_path": self.model,
            "num_labels": len(self.labels),
        }
        fed["rounds"] = {"min_clients": len(self.clients), **_section(fed, "rounds")}
        if self.coordinator.evaluation:
            fed["evaluation"] = {**_section(fed, "evaluation"), "path": self.coordinator.evaluation}
        return parse_federation(fed, source="the spec's settings (federation block)")


def _section(settings: dict[str, Any], key: str) -> dict[str, Any]:
    value = settings.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"settings.{key} must be a mapping of its fields (docs/config.md, "
            f"coordinator.federation.{key}), got {type(value).__name__}"
        )
    return value


def _unique(what: str, values: list[str]) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(repeated)}")


_PATTERN_HELP = {
    "id": "use 1-40 characters of a-z 0-9 and '-', not at either end (e.g. hospital-a)",
    "region": "use 1-30 characters of a-z 0-9 and '-', not at either end (e.g. eu-west)",
    "federation": "use 1-63 characters of a-z 0-9 and '-', not at either end (e.g. hospitals-eu)",
    "address": "write host:port (e.g. edge-eu.example.org:50052)",
    "listen": "write host:port (e.g. 0.0.0.0:50052)",
}


def _message(error: Any) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        return "unknown field; check the spelling (docs/init-spec.yaml lists them)"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch" and loc and loc[-1] in _PATTERN_HELP:
        return f"{error['input']!r} is not valid: {_PATTERN_HELP[loc[-1]]}"
    return str(error["msg"]).removeprefix("Value error, ")


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_spec(data: Any, *, source: str = "<spec>") -> InitSpec:
    """Validate a parsed spec; raise ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a YAML mapping (federation:, labels:, coordinator:, edges:, "
            f"clients:), got {type(data).__name__}; see docs/init-spec.yaml"
        )
    try:
        spec = InitSpec.model_validate(data)
    except ValidationError as err:
        lines = [f"invalid spec {source}:"]
        for e in err.errors():
            lines.append(f"  - {_location(tuple(e['loc']))}: {_message(e)}")
        raise ConfigError("\n".join(lines)) from None
    spec.federation_block()  # the settings are checked before anything is written
    return spec


def load_spec(path: Path) -> InitSpec:
    """Read and validate a spec file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"spec {path} does not exist; start from docs/init-spec.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read spec {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"spec {path} is not valid YAML: {exc}") from None
    return parse_spec(data, source=str(path))
