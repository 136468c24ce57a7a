#!/usr/bin/env bash
# deploy/images/build.sh — build the three service images without a container registry.
# Target of `make images` (not part of `make test`).
#
# 1. Base image: unless --base IMAGE is given, a Debian bookworm root filesystem is made with
#    debootstrap (minbase + passwd, ca-certificates; then python3.11, python3.11-venv with apt
#    in the chroot) and imported as
#    localhost/ffa-lora-base:bookworm. No registry is contacted; packages come from Debian's
#    mirror and PyPI.
# 2. Local wheels: a torch==2.13.0 CPU wheel found in pip's find-links (/opt/wheels or
#    $PIP_FIND_LINKS) is copied into deploy/images/wheels/ so that the images take it instead of
#    the multi-GB CUDA build from PyPI (pass --cuda-torch to skip this, e.g. for GPU clients).
# 3. The targets coordinator, edge and client of deploy/images/Dockerfile are built with the
#    first engine that works: podman, buildah, docker (a reachable daemon).
# 4. --smoke runs `ffa-lora --help` in each image.
#
# Usage: deploy/images/build.sh [--engine podman|buildah|docker] [--base IMAGE] [--tag TAG]
#                               [--only coordinator,edge,client] [--cuda-torch] [--smoke]
# Needs root for debootstrap (or --base). Env: DEBIAN_MIRROR, IMAGE_PREFIX (default ffa-lora),
# BUILD_ISOLATION (podman/buildah: chroot by default; oci where the runtime works).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

engine=""; base=""; tag="0.1.0"; only="coordinator,edge,client"; cuda_torch=0; smoke=0
while (($#)); do
  case "$1" in
    --engine) engine="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --cuda-torch) cuda_torch=1; shift ;;
    --smoke) smoke=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
prefix="${IMAGE_PREFIX:-ffa-lora}"
# chroot isolation runs RUN steps without an OCI runtime: works where crun/runc cannot set up
# cgroups or rlimits (nested VMs, hybrid cgroup v1/v2 hosts like this project's machines).
isolation="${BUILD_ISOLATION:-chroot}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { echo "[build.sh] $*" >&2; }

# ---- engine ---------------------------------------------------------------------------------
engine_works() {
  case "$1" in
    podman|buildah) command -v "$1" >/dev/null && "$1" info >/dev/null 2>&1 ;;
    docker) command -v docker >/dev/null && docker info >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}
if [[ -z "$engine" ]]; then
  for e in podman buildah docker; do if engine_works "$e"; then engine="$e"; break; fi; done
fi
if [[ -z "$engine" ]] || ! engine_works "$engine"; then
  log "no working container engine (tried ${engine:-podman buildah docker});" \
      "apt-get install podman buildah, or start a docker daemon"
  exit 2
fi
log "engine: $engine ($("$engine" --version 2>/dev/null | head -1))"

image_exists() {
  case "$engine" in
    podman) podman image exists "$1" ;;
    buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
    docker) docker image inspect "$1" >/dev/null 2>&1 ;;
  esac
}

# ---- base image from debootstrap ------------------------------------------------------------
if [[ -z "$base" ]]; then
  base="localhost/${prefix}-base:bookworm"
  if image_exists "$base"; then
    log "base image $base exists"
  else
    command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 2; }
    rootfs="$(mktemp -d /var/tmp/ffa-lora-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap bookworm into $rootfs (mirror $mirror)"
    start=$SECONDS
    debootstrap --variant=minbase --include=passwd,ca-certificates bookworm "$rootfs" "$mirror" >&2
    # Python inside the chroot with apt (debootstrap --include of python3.11-venv fails to
    # configure in minbase: its postinst needs the python3 alternatives set up first).
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" \
      > "$rootfs/etc/apt/sources.list"
    mount -t proc proc "$rootfs/proc"
    chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv && apt-get clean' >&2 \
      || { umount "$rootfs/proc"; exit 1; }
    umount "$rootfs/proc"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    log "debootstrap took $((SECONDS - start)) s; $(du -sh "$rootfs" | cut -f1) rootfs; importing"
    case "$engine" in
      podman) tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >&2 ;;
      docker) tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$base" >&2 ;;
      buildah)
        ctr="$(buildah from scratch)"
        mnt="$(buildah mount "$ctr")"
        tar -C "$rootfs" -c . | tar -C "$mnt" -x
        buildah umount "$ctr" >/dev/null
        buildah config --cmd /bin/bash "$ctr"
        buildah commit "$ctr" "$base" >&2
        buildah rm "$ctr" >/dev/null ;;
    esac
  fi
fi
log "base: $base"

# ---- local wheels ---------------------------------------------------------------------------
if (( ! cuda_torch )); then
  for dir in $(printf '%s\n' ${PIP_FIND_LINKS:-} /opt/wheels | sort -u); do
    for whl in "$dir"/torch-2.13.0+cpu-*.whl; do
      [[ -f "$whl" ]] || continue
      [[ -f "deploy/images/wheels/$(basename "$whl")" ]] || cp "$whl" deploy/images/wheels/
      log "local wheel: $(basename "$whl")"
    done
  done
fi

# ---- images ---------------------------------------------------------------------------------
[[ -z "$only" ]] && { log "--only empty: base image only"; exit 0; }
[[ -f requirements/lock.txt ]] || { log "requirements/lock.txt missing (make lock)"; exit 2; }
# A CA bundle pip trusts on this host (TLS-intercepting proxy): mounted into the RUN steps.
host_ca="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
ca_args=()
if [[ -n "$host_ca" && -f "$host_ca" && "$engine" != docker ]]; then
  ca_args=(-v "$host_ca:/etc/ffa-lora-build/ca.crt:ro" --build-arg PIP_CERT=/etc/ffa-lora-build/ca.crt)
  log "pip CA bundle for the build: $host_ca"
fi
dockerfile=deploy/images/Dockerfile
declare -A name=([coordinator]=cloud-coordinator [edge]=edge-aggregator [client]=client-agent)
IFS=, read -r -a wanted <<<"$only"
for c in "${wanted[@]}"; do
  [[ -n "${name[$c]:-}" ]] || { log "unknown component $c"; exit 2; }
  ref="$prefix/${name[$c]}:$tag"
  log "building $ref from $dockerfile (target $c)"
  start=$SECONDS
  case "$engine" in
    podman) podman build --isolation "$isolation" --network host --format docker --target "$c" \
              -f "$dockerfile" --build-arg BASE_IMAGE="$base" "${ca_args[@]}" -t "$ref" . ;;
    buildah) buildah bud --isolation "$isolation" --network host --format docker --target "$c" \
              -f "$dockerfile" --build-arg BASE_IMAGE="$base" "${ca_args[@]}" -t "$ref" . ;;
    docker) docker build -f "$dockerfile" --target "$c" --build-arg BASE_IMAGE="$base" -t "$ref" . ;;
  esac
  log "built $ref in $((SECONDS - start)) s"
  if (( smoke )); then
    case "$engine" in
      podman|buildah)
        ctr="$(buildah from "$ref")"
        ok=0
        buildah run --isolation "$isolation" --user 10001:10001 "$ctr" -- \
          ffa-lora --help >/dev/null && ok=1
        buildah rm "$ctr" >/dev/null
        (( ok )) || { log "smoke FAILED: $ref"; exit 1; } ;;
      docker) docker run --rm --network none "$ref" --help >/dev/null ;;
    esac
    log "smoke ok: $ref runs 'ffa-lora --help'"
  fi
done
log "done: $(printf '%s ' "${wanted[@]}")"
