#!/usr/bin/env bash
# Developer entry point: installs everything kata-shim needs on a fresh Debian 12
# machine (apt packages, a virtualenv, pip packages, the built extensions), then
# runs the requested job.
#
#   scripts/dev.sh demo     the main job (see README)
#   scripts/dev.sh test     the whole test suite (what CI runs)
#   scripts/dev.sh setup    only install / build
#
# Must run as root (apt-get, containerd, mounts). Idempotent: a second run skips
# what is already installed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=/usr/bin/python3   # Debian's interpreter: the same one the guest image copies

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc make pkg-config
  libc6-dev util-linux libseccomp2            # tests/security builds a static setuid probe; QEMU confinement (setpriv, seccomp)
  containerd runc busybox-static
  golang-github-containerd-containerd-dev   # upstream .proto files for the conformance test
  qemu-system-x86 linux-image-amd64 kmod cpio # guest VMs under TCG (generic kernel: has 9p)
  libvirt-daemon-system libvirt-dev           # libvirt backend (libvirt-python builds against it)
  systemd rpm rpmlint python3-cffi python3-packaging # journald tests, systemd-analyze, make rpm (rpm dep generator)
)

log() { printf '==> %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "kata-shim: run as root (sudo $0 $*): tests start containerd and mount filesystems" >&2
    exit 1
  fi
}

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$(sha256sum "$ROOT/requirements-dev.txt" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "pip install -r requirements-dev.txt"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
    echo "$want" >"$stamp"
  fi
}

build_package() {
  log "building kata-shim (Cython + cffi extensions) into the virtualenv"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps -e "$ROOT"
  "$VENV/bin/python" -c 'import kata_shim._fastio, kata_shim._native, kata_shim.ttrpc._framing'
}

setup() {
  need_root "$@"
  install_apt
  install_venv
  build_package
}

run_tests() {
  cd "$ROOT"
  log "ruff"
  "$VENV/bin/ruff" check kata_shim tests bench
  "$VENV/bin/ruff" format --check kata_shim tests bench
  log "mypy"
  "$VENV/bin/mypy" kata_shim
  log "generated code is up to date"
  "$VENV/bin/python" -m kata_shim.plugin.regen --check
  log "pytest"
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
}

run_demo() {
  cd "$ROOT"
  "$VENV/bin/python" -m kata_shim.demo "$@"
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup && run_tests "$@" ;;
  demo) setup && run_demo "$@" ;;
  *)
    echo "usage: $0 {demo|test|setup} [args...]" >&2
    exit 2
    ;;
esac
