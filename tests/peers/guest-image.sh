#!/usr/bin/env bash
# Builds the small Linux guest the tests boot with QEMU: Debian's cloud kernel
# (its package unpacked, never installed on the host) and an initramfs of
# busybox-static with the virtio-net modules. Nothing is downloaded from
# anywhere but Debian's archive.
#
#   bash tests/peers/guest-image.sh [DIR]   # default /var/cache/rvs-guest
#
# Prints DIR; DIR/vmlinuz and DIR/initrd.img are ready when it returns.
set -euo pipefail

out=${1:-/var/cache/rvs-guest}
# Bumped whenever the image's contents change: older caches are rebuilt.
version=2
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] \
  && [ "$(cat "$out/image-version" 2>/dev/null)" = "$version" ]; then
  echo "$out"
  exit 0
fi

# The kernel package the meta-package points at today.
pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$pkg" ] || { echo "guest-image.sh: no linux-image-cloud-amd64 in apt's lists (apt-get update)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1) \
  || { apt-get update -q >/dev/null && (cd "$work" && apt-get download -q "$pkg" >/dev/null); }
dpkg -x "$work"/*.deb "$work/k"
kver=$(ls "$work/k/lib/modules")
mods="$work/k/lib/modules/$kver/kernel"

root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,etc,mods,www}
cp /bin/busybox "$root/bin/busybox"
# Load order matters: each module after the ones it needs.
for m in drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko \
  drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko \
  drivers/virtio/virtio_pci.ko net/core/failover.ko drivers/net/net_failover.ko \
  drivers/net/virtio_net.ko; do
  cp "$mods/$m" "$root/mods/"
  basename "$m" >> "$root/mods/order"
done

# /init: network from the kernel command line (rvs.ip=ADDR/LEN rvs.gw=IP),
# a web server on port 80 and a TCP echo-ish listener, then a shell on the
# serial console for the test to drive (no echo, one marker per command).
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /mods/order); do insmod /mods/$m; done
ip link set lo up
# No IPv6 chatter (router solicitations, DAD): tests count frames exactly.
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
for a in $(cat /proc/cmdline); do
  case "$a" in
    rvs.ip=*) ip=${a#rvs.ip=} ;;
    rvs.gw=*) gw=${a#rvs.gw=} ;;
    rvs.mtu=*) mtu=${a#rvs.mtu=} ;;
  esac
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -n "$mtu" ] && ip link set eth0 mtu "$mtu"
ip link set eth0 up
[ -n "$ip" ] && ip address add "$ip" dev eth0
[ -n "$gw" ] && ip route add default via "$gw"
hostname guest
echo "hello from $(hostname)" > /www/index.html
httpd -p 80 -h /www
stty -echo -onlcr 2>/dev/null
echo "RVS-GUEST-READY $(cat /sys/class/net/eth0/address)"
export PS1=
# The shell is not PID 1: as init, busybox's ash exits (and the kernel
# panics) when an orphaned background job ends.
while true; do sh; done
EOF
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$out/initrd.img.tmp")
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
echo "$kver" > "$out/kernel-version"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$version" > "$out/image-version"
echo "$out"
