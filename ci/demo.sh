#!/usr/bin/env bash
# Installs everything, then runs rvs the way a host runs OVS-DPDK: the real
# ovsdb-server with a durable database in /etc/openvswitch, rvsd in
# ovs-vswitchd's place (run directory /var/run/openvswitch), and a demo
# bridge with two vhost-user ports added through the real ovs-vsctl.
# Needs no NIC. Stop with: ovs-appctl -t ovs-vswitchd exit; ovs-appctl -t ovsdb-server exit
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --workspace --locked
./target/release/rvs-hugepages reserve "${RVS_HUGEPAGES:-1024}"

RUN=/var/run/openvswitch
DB=/etc/openvswitch/conf.db
LOG=/var/log/openvswitch
mkdir -p "$RUN" /etc/openvswitch "$LOG"
if pidof ovs-vswitchd >/dev/null; then
  echo "ovs-vswitchd is running: stop it first (systemctl stop openvswitch-switch), rvsd takes its place" >&2
  exit 1
fi
[ -f "$DB" ] || ovsdb-tool create "$DB" /usr/share/openvswitch/vswitch.ovsschema
if ! ovs-appctl -t ovsdb-server version >/dev/null 2>&1; then
  ovsdb-server "$DB" --remote=punix:$RUN/db.sock --pidfile=$RUN/ovsdb-server.pid \
    --log-file=$LOG/ovsdb-server.log --detach
fi
ovs-vsctl --no-wait init
ovs-vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true
if ! ovs-appctl -t ovs-vswitchd version 2>/dev/null | grep -q rvsd; then
  rm -f $RUN/ovs-vswitchd.pid
  nohup ./target/release/rvsd --db unix:$RUN/db.sock --rundir $RUN --pidfile >>$LOG/rvsd.log 2>&1 &
  for _ in $(seq 300); do ovs-appctl -t ovs-vswitchd version >/dev/null 2>&1 && break; sleep 0.1; done
fi
ovs-vsctl --may-exist add-br br0
ovs-vsctl --may-exist add-port br0 vhost-user-1 -- set Interface vhost-user-1 type=dpdkvhostuser
ovs-vsctl --may-exist add-port br0 vhost-user-2 -- set Interface vhost-user-2 type=dpdkvhostuser
ovs-vsctl show
ovs-appctl -t ovs-vswitchd dpif/show
echo "rvsd is running (log: $LOG/rvsd.log); VMs attach to $RUN/vhost-user-1 and $RUN/vhost-user-2"
