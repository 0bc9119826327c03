#!/usr/bin/env bash
# Installs rvs on a KVM host so that systemd runs rvsd where it ran
# ovs-vswitchd (same unit, same ovsdb-server and database, same run
# directory), or takes it out again.
#
#   bash control/dist/install.sh              # install (binaries built with cargo build --release)
#   bash control/dist/install.sh --uninstall  # back to Open vSwitch's ovs-vswitchd
#   --root DIR                                # install under DIR instead of / (packaging, tests)
#
# Then switch over with `systemctl restart ovs-vswitchd` (see README).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
root="" action=install
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    *) echo "install.sh: unknown argument '$1' (use --root DIR, --uninstall)" >&2; exit 2 ;;
  esac
done
dropin=$root/etc/systemd/system/ovs-vswitchd.service.d/rvs.conf
reload() {
  if [ -z "$root" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
}
if [ "$action" = uninstall ]; then
  rm -f "$dropin"
  rmdir "$(dirname "$dropin")" 2>/dev/null || true
  rm -f "$root/usr/lib/rvs/ovs-vswitchd" "$root/usr/lib/rvs/rvsd" \
    "$root/usr/local/bin/rvsctl" "$root/usr/local/bin/rvs-hugepages" \
    "$root/usr/share/doc/rvs/README.md"
  rmdir "$root/usr/lib/rvs" "$root/usr/share/doc/rvs" 2>/dev/null || true
  reload
  echo "rvs removed; 'systemctl restart ovs-vswitchd' starts Open vSwitch's ovs-vswitchd again"
  exit 0
fi
bin=$top/target/release
for b in rvsd rvsctl rvs-hugepages; do
  [ -x "$bin/$b" ] || { echo "install.sh: $bin/$b missing: run 'cargo build --release' first" >&2; exit 1; }
done
install -D -m 0755 "$bin/rvsd" "$root/usr/lib/rvs/rvsd"
ln -sfn rvsd "$root/usr/lib/rvs/ovs-vswitchd"
install -D -m 0755 "$bin/rvsctl" "$root/usr/local/bin/rvsctl"
install -D -m 0755 "$bin/rvs-hugepages" "$root/usr/local/bin/rvs-hugepages"
install -D -m 0644 "$top/README.md" "$root/usr/share/doc/rvs/README.md"
install -D -m 0644 "$here/ovs-vswitchd.service.d/rvs.conf" "$dropin"
reload
echo "rvs installed; 'systemctl restart ovs-vswitchd' starts rvsd in its place"
