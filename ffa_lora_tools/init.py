"""``ffa-lora init SPEC -o DIR``: a federation folder for a real deployment, from a short spec.

The folder (``DIR/README.md`` says the same to its reader)::

    ca/                    the federation CA: ca.key is the root of trust; keep it offline
    coordinator/           config.yaml, tls/, secrets/fernet.key, keys/ (its key share and the
                           threshold key's public parameters), helm-values.yaml, k8s-secrets.sh
    keyholders/<id>/       config.yaml, tls/, secrets/fernet.key, keys/ (its key share), ...
    edges/<id>/            config.yaml, tls/ (a certificate per Helm replica), helm-values.yaml...
    clients/<id>/          config.yaml (with the key's pinned fingerprint), tls/, helm-values...

The threshold key is dealt here (``ffa-lora keys ceremony``): each share goes, sealed with its
holder's own Fernet key, into that holder's folder only; no file holds the whole key.

Each service folder is what one host needs: ``cd`` into it and run
``ffa-lora serve ROLE --config config.yaml`` (paths in the file are relative to the folder), or
install the chart with ``-f helm-values.yaml`` after ``k8s-secrets.sh`` made its secrets. No
service folder holds the CA key. The spec is checked completely before anything is written; the
folder is built beside DIR and moved into place at the end, so a failure leaves nothing behind,
and an existing DIR is replaced only with ``--force`` and only when ``init`` made it.

A role is added with one function that returns its :class:`Service` entries (see
:func:`plan_services`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ffa_lora.crypto import new_fernet_key
from ffa_lora.errors import ConfigError
from ffa_lora_tools.init_spec import InitSpec, load_spec, split_address
from ffa_lora_tools.keys import PARAMS_NAME, run_ceremony
from services.common.certs import CA_CERT_NAME, certificate_paths, init_ca, issue_certificate
from services.common.config import FederationConfig, parse_config

__all__ = ["MARKER", "RELEASE", "Service", "main", "plan_services", "scaffold"]

#: the file that marks a folder as init's output (``--force`` replaces only such folders)
MARKER = ".ffa-lora-init"
#: the Helm release name the values and the certificates' Service names assume
RELEASE = "ffa-lora"
FERNET_FILE = "secrets/fernet.key"
PARAMS_FILE = f"keys/{PARAMS_NAME}"
SHARE_FILE = "keys/share"
CA_WARNING = (
    "ca/ca.key signs every certificate of the federation: move it to offline storage "
    "(an encrypted drive kept apart) and delete it here; no service needs it."
)


@dataclass
class Service:
    """One service of the federation and everything its folder holds.

    ``cert_ids``: certificate ids to issue (the first is the one ``config.yaml`` uses; an edge
    has one per Helm replica). ``hosts``: names in a server certificate (None for clients).
    ``block``: the role block of ``config.yaml``. ``helm``: the chart values for its site.
    ``secrets``: Kubernetes secret name -> {key in the secret: file in the folder}.
    """

    role: str
    id: str
    folder: str
    where: str  # the spec entry, for error messages
    cert_ids: list[str]
    hosts: list[str] | None
    block: dict[str, Any]
    helm: dict[str, Any]
    metrics_port: int | None = None
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    holder: str | None = None  # "role/id" when it holds a share of the threshold key

    def cert_files(self, cert_id: str) -> tuple[str, str]:
        """``tls/<role>-<id>.crt`` and ``.key``, relative to the folder."""
        crt, key = certificate_paths(Path("tls"), role=self.role, id=cert_id)
        return str(crt), str(key)

    def config(self) -> dict[str, Any]:
        """The service's ``config.yaml``."""
        crt, key = self.cert_files(self.cert_ids[0])
        doc: dict[str, Any] = {
            "service": self.role,
            "tls": {"ca": f"tls/{CA_CERT_NAME}", "cert": crt, "key": key},
        }
        if self.metrics_port is not None:
            doc["metrics"] = {"host": "0.0.0.0", "port": self.metrics_port}
        doc[self.role] = self.block
        return doc


def _tls_secret(svc: Service, name: str, cert_id: str) -> None:
    crt, key = svc.cert_files(cert_id)
    svc.secrets[name] = {"ca.crt": f"tls/{CA_CERT_NAME}", "tls.crt": crt, "tls.key": key}


def _hosts(address: str, listen: str, extra: Iterable[str], service_name: str) -> list[str]:
    names = [
        split_address(address)[0],
        *extra,
        split_address(listen)[0],
        service_name,
        "localhost",
        "127.0.0.1",
    ]
    return list(dict.fromkeys(h for h in names if h not in ("0.0.0.0", "::")))


def _holders(spec: InitSpec) -> list[str]:
    return [f"coordinator/{spec.coordinator.id}", *(f"keyholder/{k.id}" for k in spec.keyholders)]


def _site_values(spec: InitSpec, site: str, component: str) -> dict[str, Any]:
    off = {"cloudCoordinator", "edgeAggregator", "clientAgent", "keyHolder"} - {component}
    return {
        "federation": {"name": spec.federation, "site": site},
        **{k: {"enabled": False} for k in sorted(off)},
    }


def _coordinator(spec: InitSpec, fed: FederationConfig) -> list[Service]:
    c = spec.coordinator
    federation = fed.model_dump(mode="json", exclude_unset=True)
    threshold = {"holders": _holders(spec), "t": spec.threshold}
    block = {
        "listen": c.listen_address(),
        "state_dir": "state",
        "fernet_key_file": FERNET_FILE,
        "federation": federation,
        "threshold": {"params_file": PARAMS_FILE, "share_file": SHARE_FILE, **threshold},
    }
    secret = f"{spec.federation}-{c.id}"
    helm = _site_values(spec, c.id, "cloudCoordinator")
    helm["cloudCoordinator"] = {
        "enabled": True,
        "identity": {"id": c.id},
        "tls": {"existingSecret": f"{secret}-tls"},
        "fernetKey": {"existingSecret": f"{secret}-fernet"},
        "threshold": {"existingSecret": f"{secret}-threshold", **threshold},
        "service": {"ports": {"grpc": split_address(c.address)[1]}},
        "config": {"federation": federation},
    }
    svc = Service(
        role="coordinator",
        id=c.id,
        folder="coordinator",
        where="coordinator",
        cert_ids=[c.id],
        hosts=_hosts(c.address, c.listen_address(), c.hosts, f"{RELEASE}-coordinator"),
        block=block,
        helm=helm,
        metrics_port=c.metrics_port,
        holder=f"coordinator/{c.id}",
    )
    _tls_secret(svc, f"{secret}-tls", c.id)
    svc.secrets[f"{secret}-fernet"] = {"fernet.key": FERNET_FILE}
    svc.secrets[f"{secret}-threshold"] = {"threshold.params": PARAMS_FILE, "share": SHARE_FILE}
    return [svc]


def _keyholders(spec: InitSpec, fed: FederationConfig) -> list[Service]:
    out = []
    for i, k in enumerate(spec.keyholders):
        block = {
            "federation": spec.federation,
            "coordinator_address": spec.coordinator.address,
            "share_file": SHARE_FILE,
            "fernet_key_file": FERNET_FILE,
            "state_dir": "state",
            "min_clients": fed.rounds.min_clients,
            "weights": {"max_weight": fed.secure_sum.max_weight},
        }
        secret = f"{spec.federation}-{k.id}"
        helm = _site_values(spec, k.id, "keyHolder")
        helm["keyHolder"] = {
            "enabled": True,
            "identity": {"id": k.id},
            "tls": {"existingSecret": f"{secret}-tls"},
            "share": {"existingSecret": f"{secret}-share"},
            "fernetKey": {"existingSecret": f"{secret}-fernet"},
            "config": {key: block[key] for key in ("federation", "coordinator_address", "min_clients", "weights")},
        }
        svc = Service(
            role="keyholder",
            id=k.id,
            folder=f"keyholders/{k.id}",
            where=f"keyholders[{i}] ({k.id})",
            cert_ids=[k.id],
            hosts=None,
            block=block,
            helm=helm,
            metrics_port=k.metrics_port,
            holder=f"keyholder/{k.id}",
        )
        _tls_secret(svc, f"{secret}-tls", k.id)
        svc.secrets[f"{secret}-share"] = {"share": SHARE_FILE}
        svc.secrets[f"{secret}-fernet"] = {"fernet.key": FERNET_FILE}
        out.append(svc)
    return out


def _edges(spec: InitSpec, fed: FederationConfig) -> list[Service]:
    out = []
    for i, e in enumerate(spec.edges):
        ids = [f"{e.id}-{n}" for n in range(e.replicas)]
        block = {
            "listen": e.listen_address(),
            "region": e.region,
            "coordinator_address": spec.coordinator.address,
        }
        prefix = f"{spec.federation}-{e.id}-tls"
        helm = _site_values(spec, e.id, "edgeAggregator")
        helm["edgeAggregator"] = {
            "enabled": True,
            "region": e.region,
            "identity": {"id": e.id},
            "replicaCount": e.replicas,
            "tls": {"existingSecret": prefix},
            "service": {"ports": {"grpc": split_address(e.address)[1]}},
            "config": {"coordinator_address": spec.coordinator.address},
        }
        svc = Service(
            role="edge",
            id=e.id,
            folder=f"edges/{e.id}",
            where=f"edges[{i}] ({e.id})",
            cert_ids=ids,
            hosts=_hosts(e.address, e.listen_address(), e.hosts, f"{RELEASE}-edge-{e.region}"),
            block=block,
            helm=helm,
            metrics_port=e.metrics_port,
        )
        for n, cert_id in enumerate(ids):
            _tls_secret(svc, f"{prefix}-{n}", cert_id)
        out.append(svc)
    return out


def _clients(spec: InitSpec, fed: FederationConfig) -> list[Service]:
    address = {e.id: e.address for e in spec.edges}
    out = []
    for i, c in enumerate(spec.clients):
        edges = [address[e] for e in c.edge_ids()]
        data = {
            "path": c.data,
            "text_column": c.text_column,
            "label_column": c.label_column,
            "labels": list(spec.labels),
        }
        # the client agrees to load exactly the federation's base model (it refuses any other)
        block = {"edges": edges, "data": data, "model": spec.model, "deid": {"enabled": c.deid},
                 "state_dir": "state"}
        secret = f"{spec.federation}-{c.id}-tls"
        helm = _site_values(spec, c.id, "clientAgent")
        helm["clientAgent"] = {
            "enabled": True,
            "identity": {"id": c.id},
            "tls": {"existingSecret": secret},
            "persistence": {"existingClaim": f"{c.id}-training-data"},
            "config": {
                "edges": edges,
                "data": {**data, "path": f"/data/{Path(c.data).name}"},
                "model": spec.model,
                "deid": {"enabled": c.deid},
            },
        }
        svc = Service(
            role="client",
            id=c.id,
            folder=f"clients/{c.id}",
            where=f"clients[{i}] ({c.id})",
            cert_ids=[c.id],
            hosts=None,
            block=block,
            helm=helm,
            metrics_port=c.metrics_port,
        )
        _tls_secret(svc, secret, c.id)
        out.append(svc)
    return out


def plan_services(spec: InitSpec) -> list[Service]:
    """Every service of the federation, each with its config, certificates and Helm values.

    Each role contributes one function; a new role adds one here.
    """
    fed = spec.federation_block()
    services = [s for role in (_coordinator, _keyholders, _edges, _clients) for s in role(spec, fed)]
    for svc in services:  # what the services themselves will accept, checked before writing
        try:
            parse_config(svc.config(), source=f"the config of {svc.where}")
        except ConfigError as exc:
            raise ConfigError(f"{svc.where}: {exc}") from None
    return services


# ---------------------------------------------------------------------------------------------
# writing


def _write(path: Path, text: str, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)


def _yaml(doc: dict[str, Any], header: str) -> str:
    return header + yaml.safe_dump(doc, sort_keys=False)


def _secrets_script(svc: Service) -> str:
    lines = [
        "#!/bin/sh",
        f"# The Kubernetes secrets helm-values.yaml of {svc.where} refers to. Run it where",
        "# kubectl reaches the site's cluster: NAMESPACE=ffa-lora sh k8s-secrets.sh",
        "set -eu",
        'cd "$(dirname "$0")"',
        'NS="${NAMESPACE:-ffa-lora}"',
    ]
    for name, files in svc.secrets.items():
        args = " ".join(f"--from-file={k}={v}" for k, v in files.items())
        lines.append(f'kubectl -n "$NS" create secret generic {name} {args}')
    return "\n".join(lines) + "\n"


def _write_service(svc: Service, root: Path, ca_dir: Path, days: int) -> None:
    folder = root / svc.folder
    (folder / "tls").mkdir(parents=True)
    shutil.copyfile(ca_dir / CA_CERT_NAME, folder / "tls" / CA_CERT_NAME)
    for cert_id in svc.cert_ids:
        try:
            issue_certificate(
                ca_dir, folder / "tls", role=svc.role, id=cert_id, hosts=svc.hosts, days=days
            )
        except ConfigError as exc:
            raise ConfigError(f"{svc.where}: {exc}") from None
    run = f"cd {svc.folder} && ffa-lora serve {svc.role} --config config.yaml"
    _write(
        folder / "config.yaml",
        _yaml(
            svc.config(),
            f"# {svc.where}; start it with: {run}\n"
            "# Relative paths are relative to this folder. "
            "Fields: docs/config.md\n",
        ),
    )
    _write(
        folder / "helm-values.yaml",
        _yaml(
            svc.helm,
            f"# {svc.where} on Kubernetes: sh k8s-secrets.sh, then\n"
            f"# helm install {RELEASE} deploy/helm/ffa-lora -n ffa-lora "
            "-f helm-values.yaml\n",
        ),
    )
    _write(folder / "k8s-secrets.sh", _secrets_script(svc), mode=0o755)


def _write_fernet(root: Path, folder: str) -> Path:
    path = root / folder / FERNET_FILE
    path.parent.mkdir(mode=0o700, parents=True)
    _write(path, new_fernet_key().decode() + "\n", mode=0o600)
    return path


def _deal_keys(spec: InitSpec, services: list[Service], root: Path) -> str:
    """The key ceremony: every holder's share, sealed with its own Fernet key, into its own
    folder (the coordinator's with the public parameters); returns the key's fingerprint."""
    holders = {s.holder: s for s in services if s.holder is not None}
    fernets = {h: _write_fernet(root, s.folder) for h, s in holders.items()}
    bits = spec.federation_block().secure_sum.key_bits
    dealt = run_ceremony(root / ".ceremony", holders=list(holders), threshold=spec.threshold, bits=bits,
                         test_only=bits < 2048, fernet_keys=fernets)
    for h, svc in holders.items():
        keys = root / svc.folder / "keys"
        keys.mkdir(mode=0o700)
        os.replace(dealt.shares[h], keys / "share")
        if svc.role == "coordinator":
            os.replace(dealt.params, root / svc.folder / PARAMS_FILE)
    shutil.rmtree(root / ".ceremony")
    return dealt.public_key_fingerprint


def _pin(services: list[Service], fingerprint: str) -> None:
    """Clients accept only the key with this fingerprint (signed by the coordinator)."""
    for svc in services:
        if svc.role == "client":
            svc.block["key_fingerprint"] = fingerprint
            svc.helm["clientAgent"]["config"]["key_fingerprint"] = fingerprint


def _readme(spec: InitSpec, services: list[Service]) -> str:
    rows = "\n".join(
        f"| `{s.folder}/` | {s.role} `{s.id}` | `cd {s.folder} && ffa-lora serve {s.role} "
        "--config config.yaml` |"
        for s in services
    )
    return f"""# Federation `{spec.federation}`

Made by `ffa-lora init` from `spec.yaml`. Copy each service folder to the host that runs it;
nothing else needs to travel.

| folder | service | start |
| --- | --- | --- |
{rows}

Start the coordinator first, then the key holders and the edges, then the clients. The clients
stop when the federation has finished; the coordinator writes the adapter to
`coordinator/state/adapter`.

**`ca/` stays offline.** {CA_WARNING} Keep `ca/ca.crt` (public): it is already in every
`tls/` folder. New certificates: `ffa-lora certs issue --ca-dir ca --role ROLE --id ID`.

**No one holds the whole private key.** init dealt a {spec.threshold}-of-{len(spec.keyholders) + 1}
threshold key (the coordinator and the key holders) and kept no copy: each holder's folder has
its own share in `keys/share`, sealed with its own `secrets/fernet.key`. Keep each Fernet key
only on its holder's host (or in a secret store); a holder that loses it loses its share. A
round is decrypted only when {spec.threshold} holders (the coordinator counted) agree, each
after checking the clients' and edges' signed claims. The clients pin the key's fingerprint.

On Kubernetes, per site: `sh k8s-secrets.sh` (creates the secrets from this folder's files),
then `helm install {RELEASE} deploy/helm/ffa-lora -n ffa-lora -f helm-values.yaml`. A client site
needs a PersistentVolumeClaim `<id>-training-data` holding its data file (mounted at `/data`).
Configuration fields: docs/config.md; deployment: deploy/README.md.
"""


def _check_target(out: Path, force: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise ConfigError(
            f"{out} already exists; pick another folder, or pass --force to replace it "
            "(a new CA then invalidates every certificate issued from the old one)"
        )
    if not (out / MARKER).is_file():
        raise ConfigError(
            f"{out} exists and was not made by ffa-lora init; --force replaces only "
            "init's own folders: pick another folder or empty it yourself"
        )


def scaffold(
    spec: InitSpec, out: Path, *, force: bool = False, spec_text: str | None = None
) -> list[Service]:
    """Write the federation folder ``out`` for ``spec``; return its services."""
    services = plan_services(spec)
    out = Path(out).resolve()
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ca_dir = tmp / "ca"
        init_ca(ca_dir, federation=spec.federation)
        _pin(services, _deal_keys(spec, services, tmp))
        for svc in services:
            _write_service(svc, tmp, ca_dir, spec.certificate_days)
        _write(tmp / "README.md", _readme(spec, services))
        _write(
            tmp / "spec.yaml",
            spec_text
            if spec_text is not None
            else yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False),
        )
        _write(tmp / MARKER, f"{spec.federation}\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return services


def main(argv: list[str] | None = None) -> int:
    """``ffa-lora init SPEC -o DIR [--force]``."""
    p = argparse.ArgumentParser(
        prog="ffa-lora init",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "spec", type=Path, help="the federation spec (YAML; example: docs/init-spec.yaml)"
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="the folder to create")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace DIR when an earlier ffa-lora init made it (new CA, new keys)",
    )
    a = p.parse_args(argv)
    spec = load_spec(a.spec)
    services = scaffold(spec, a.out, force=a.force, spec_text=a.spec.read_text(encoding="utf-8"))
    counts = {
        r: sum(s.role == r for s in services) for r in dict.fromkeys(s.role for s in services)
    }
    print(
        f"federation {spec.federation!r} written to {a.out}: "
        + ", ".join(f"{n} {r}{'s' if n > 1 else ''}" for r, n in counts.items())
        + f"; start each service from its folder (see {a.out / 'README.md'})"
    )
    print(f"warning: {CA_WARNING}", file=sys.stderr)
    return 0
