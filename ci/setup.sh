#!/usr/bin/env bash
# Installs everything rvs needs on a fresh Debian 12 machine (as root) and
# reserves hugepages. Idempotent: safe to run again.
set -euo pipefail

PKGS=(
  # build
  build-essential pkg-config libclang-dev clang libdpdk-dev dpdk dpdk-dev libnuma-dev
  # the real OVS tools and database that drive rvsd
  openvswitch-switch openvswitch-common
  # test peers and tools (ovs-testcontroller: a real OpenFlow controller)
  openvswitch-testcontroller
  # the incumbent: benchmark baseline and the independent GRE peer in tests
  openvswitch-switch-dpdk
  iproute2 iputils-ping curl ethtool tshark netcat-openbsd busybox-static procps psmisc python3
  # the QEMU guest of the VM tests (its kernel is unpacked from Debian's archive, not installed)
  qemu-system-x86 util-linux
)

# Callers may ask for more.
read -r -a EXTRA <<< "${RVS_EXTRA_PKGS:-}"
PKGS+=("${EXTRA[@]}")

if [ "$(id -u)" != 0 ]; then
  echo "ci/setup.sh: run as root (installs Debian packages and reserves hugepages)" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Package post-install scripts must not start the distribution's OVS daemons:
  # rvsd runs its own ovsdb-server and takes ovs-vswitchd's place.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's openvswitch-switch may have started ovs-vswitchd / ovsdb-server on a
# machine with systemd; they would compete for vhost sockets and hugepages.
if command -v systemctl >/dev/null && systemctl is-active -q openvswitch-testcontroller 2>/dev/null; then
  systemctl stop openvswitch-testcontroller || true
fi
pkill -f '^/usr/bin/ovs-testcontroller' 2>/dev/null || true
if command -v systemctl >/dev/null && systemctl is-active -q openvswitch-switch 2>/dev/null; then
  systemctl stop openvswitch-switch || true
fi

# Rust toolchain components used by the checks.
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy || true
fi

# The guest the VM tests boot: Debian's cloud kernel and busybox, built once.
bash "$(dirname "$0")/../tests/peers/guest-image.sh" >/dev/null
