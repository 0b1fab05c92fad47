#!/usr/bin/env bash
# Developer entry point: installs everything kata-shim needs on a fresh Debian 12
# machine (apt packages, a virtualenv, pip packages, the built extensions), then
# runs the requested job.
#
#   scripts/dev.sh demo     the main job (see README)
#   scripts/dev.sh test     the whole test suite (what CI runs)
#   scripts/dev.sh setup    only install / build
#   scripts/dev.sh ci-fresh what CI does: clone HEAD into a temp dir, run .ci/run there
#                           (new virtualenvs, CI=true, no stdin); must pass before a submission
#
# Must run as root (apt-get, containerd, mounts). Idempotent: a second run skips
# what is already installed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"                 # newest pinned libraries (requirements-dev.txt)
PROTOC_VENV="$ROOT/.venv-protoc"   # the protobuf code generator (requirements-protoc.txt)
DISTRO_VENV="$ROOT/.venv-distro"   # Debian's own python3-* libraries + test tools
PY=/usr/bin/python3   # Debian's interpreter: the same one the guest image copies

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc make pkg-config
  libc6-dev util-linux libseccomp2            # tests/security builds a static setuid probe; QEMU confinement (setpriv, seccomp)
  containerd runc busybox-static
  golang-github-containerd-containerd-dev   # upstream .proto files for the conformance test
  qemu-system-x86 linux-image-amd64 kmod cpio # guest VMs under TCG (generic kernel: has 9p)
  erofs-utils                                 # mkfs.erofs: the shared read-only guest root image
  libvirt-daemon-system libvirt-dev           # libvirt backend (libvirt-python builds against it)
  systemd rpm rpmlint python3-cffi python3-packaging # journald tests, systemd-analyze, make rpm (rpm dep generator)
  # the distribution's runtime libraries: the installed RPM's shim and .venv-distro run on them
  python3-protobuf python3-uvloop python3-prometheus-client python3-pyroute2
  containernetworking-plugins iproute2 util-linux # CRI tests: CNI bridge/host-local/loopback, ip netns, nsenter
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

# pip_env DIR REQUIREMENTS [venv args...]: a virtualenv on Debian's python with REQUIREMENTS
# installed; reinstalled when the file changes.
pip_env() {
  local dir=$1 req=$2
  shift 2
  if [ ! -x "$dir/bin/python" ]; then
    log "creating virtualenv $dir"
    "$PY" -m venv "$@" "$dir"
  fi
  local stamp="$dir/.requirements.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "pip install -r $(basename "$req") into $(basename "$dir")"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
  fi
}

install_venv() {
  pip_env "$VENV" "$ROOT/requirements-dev.txt"
  pip_env "$PROTOC_VENV" "$ROOT/requirements-protoc.txt"
  pip_env "$DISTRO_VENV" "$ROOT/requirements-distro.txt" --system-site-packages
}

build_package() {
  log "building kata-shim (Cython + cffi extensions) into the virtualenv"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps -e "$ROOT"
  # the C front (csrc/shimfront.c, built by setup.py): editable installs skip install_scripts
  install -m 0755 "$ROOT/build/front/containerd-shim-kata-v2" "$VENV/bin/containerd-shim-kata-v2"
  "$VENV/bin/python" -c 'import kata_shim._fastio, kata_shim._native, kata_shim.ttrpc._framing'
}

setup() {
  need_root "$@"
  install_apt
  install_venv
  build_package
}

# The wire layer (ttrpc, pbwire, minipb, generated code and its conformance), the OCI spec
# conversion, the task service with a real local agent, and the netlink plumbing (pyroute2) once
# more on the oldest runtimes we support: Debian 12's own packages.
DISTRO_TESTS=(tests/ttrpc tests/test_pbwire.py tests/test_oci.py tests/shim/test_minipb.py tests/proto tests/plugin tests/test_deps.py
  tests/task/test_spec.py tests/task/test_local_agent.py tests/guest/test_bundle.py
  tests/network/test_discovery.py tests/network/test_plumbing.py tests/network/test_agentmsg.py
  tests/guest/test_network.py)

run_tests() {
  cd "$ROOT"
  log "ruff"
  "$VENV/bin/ruff" check kata_shim tests bench
  "$VENV/bin/ruff" format --check kata_shim tests bench
  log "mypy"
  "$VENV/bin/mypy" kata_shim
  log "generated code is up to date"
  "$VENV/bin/python" -m kata_shim.plugin.regen --check
  log "wire layer on the distribution's python3-protobuf / python3-uvloop ($DISTRO_VENV)"
  "$DISTRO_VENV/bin/python" -m kata_shim.deps
  "$DISTRO_VENV/bin/python" -m pytest -q -p no:cacheprovider "${DISTRO_TESTS[@]}"
  log "pytest"
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
}

run_demo() {
  cd "$ROOT"
  "$VENV/bin/python" -m kata_shim.demo "$@"
}

# Committed work only (a clone of HEAD), fresh virtualenvs, CI's environment. The clone is
# removed afterwards unless KEEP=1; its output is also kept in $TMPDIR/kata-shim-ci-fresh.log.
ci_fresh() {
  need_root "$@"
  local dir log rc=0
  dir=$(mktemp -d "${TMPDIR:-/tmp}/kata-shim-ci-fresh.XXXXXX")
  log="${TMPDIR:-/tmp}/kata-shim-ci-fresh.log"
  log "cloning $(git -C "$ROOT" rev-parse --short HEAD) into $dir/c (uncommitted changes are not included)"
  git clone -q "$ROOT" "$dir/c"
  # a fresh machine has no guest image yet: build one inside the clone's dir, never share
  # (or race) the image other work trees test with
  (cd "$dir/c" && CI=true KATA_SHIM_TEST_IMAGE_DIR="$dir/guest-image" bash .ci/run "$@" \
    </dev/null 2>&1) | tee "$log" || rc=$?
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
  log "ci-fresh: exit status $rc (log: $log)"
  return "$rc"
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup && run_tests "$@" ;;
  demo) setup && run_demo "$@" ;;
  ci-fresh) ci_fresh "$@" ;;
  *)
    echo "usage: $0 {demo|test|setup|ci-fresh} [args...]" >&2
    exit 2
    ;;
esac
