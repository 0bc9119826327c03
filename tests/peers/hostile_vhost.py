#!/usr/bin/env python3
"""A hostile vhost-user frontend (the VM side, as QEMU would be, but
lying): it connects to a vhost-user server socket, shares 2 MiB of memory,
sets up the two virtqueues of a virtio-net device, then posts a transmit
descriptor the switch must not follow.

usage: hostile_vhost.py SOCKET MODE SECONDS
  MODE outside: the descriptor's address lies outside the shared memory
  MODE overrun: the address is inside, the length runs past its end
  MODE loop:    a descriptor chain that points back at itself
  MODE long:    a proper descriptor holding a 4000-byte frame
  MODE valid:   a proper 60-byte frame (the control)
  MODE rx-valid:   a proper 2048-byte receive buffer
  MODE rx-outside: a receive buffer outside the shared memory
  MODE rx-badnext: a 20-byte receive buffer chained to a descriptor past
                   the table
  MODE rx-short:   a proper receive buffer of 30 bytes (no mergeable
                   buffers were negotiated: a frame must fit in one)
It prints "posted" once the descriptor is out, keeps the connection for
SECONDS, then prints the used ring's index (how many descriptors the
switch gave back) and exits. The rx- modes post on the receive queue
instead and print "rxused N len L data HEX": the receive ring's used
index, its first entry's length, and the first 12 bytes after the
10-byte header in the buffer.
"""
import mmap
import os
import socket
import struct
import sys
import time

GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
VERSION, REPLY = 0x1, 0x4

MEM = 2 << 20
VA = 0x7F00_0000_0000  # the "VM process" address of the memory
QSIZE = 256
# Guest-physical layout: per queue a descriptor table, avail and used
# rings; buffers after.
RINGS = {0: (0x0000, 0x1000, 0x2000), 1: (0x4000, 0x5000, 0x6000)}
BUF = 0x10000


def msg(s, req, payload=b"", fds=None):
    data = struct.pack("<III", req, VERSION, len(payload)) + payload
    if fds:
        socket.send_fds(s, [data], fds)
    else:
        s.sendall(data)


def reply(s):
    hdr = s.recv(12, socket.MSG_WAITALL)
    _req, _flags, size = struct.unpack("<III", hdr)
    return s.recv(size, socket.MSG_WAITALL)


def main():
    path, mode, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    fd = os.memfd_create("guest-ram")
    os.ftruncate(fd, MEM)
    mem = mmap.mmap(fd, MEM, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    msg(s, SET_OWNER)
    msg(s, GET_FEATURES)
    (offered,) = struct.unpack("<Q", reply(s))
    # No feature at all: a legacy device with a 10-byte header; nothing
    # the switch offers is needed to misbehave.
    msg(s, SET_FEATURES, struct.pack("<Q", 0))
    region = struct.pack("<QQQQ", 0, MEM, VA, 0)
    msg(s, SET_MEM_TABLE, struct.pack("<II", 1, 0) + region + b"\0" * 32 * 7, [fd])
    kicks = {}
    for q, (desc, avail, used) in RINGS.items():
        msg(s, SET_VRING_NUM, struct.pack("<II", q, QSIZE))
        msg(s, SET_VRING_BASE, struct.pack("<II", q, 0))
        msg(s, SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, VA + desc, VA + used, VA + avail, 0))
        kick, call = os.eventfd(0), os.eventfd(0)
        kicks[q] = kick
        msg(s, SET_VRING_KICK, struct.pack("<Q", q), [kick])
        msg(s, SET_VRING_CALL, struct.pack("<Q", q), [call])
    time.sleep(1.0)

    if mode.startswith("rx-"):
        receive(mem, kicks, mode, secs)
        return
    # The transmit queue (1): one descriptor, as the mode says.
    desc, avail, used = RINGS[1]
    if mode == "outside":
        d = struct.pack("<QIHH", 0x4000_0000, 74, 0, 0)
    elif mode == "overrun":
        d = struct.pack("<QIHH", MEM - 16, 4096, 0, 0)
    elif mode == "valid":
        # The control: a 10-byte virtio-net header and a broadcast frame.
        frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x0e\x01" + b"\x08\x06" + b"\0" * 46
        mem[BUF : BUF + 10 + len(frame)] = b"\0" * 10 + frame
        d = struct.pack("<QIHH", BUF, 10 + len(frame), 0, 0)
    elif mode == "loop":
        d = struct.pack("<QIHH", BUF, 74, 1, 0)  # NEXT, next = itself
    elif mode == "long":
        # Inside the memory, but a 4000-byte frame: longer than any mbuf.
        d = struct.pack("<QIHH", BUF, 4010, 0, 0)
    else:
        sys.exit(f"unknown mode {mode}")
    mem[desc : desc + 16] = d
    mem[avail + 4 : avail + 6] = struct.pack("<H", 0)  # ring[0] = head 0
    mem[avail + 2 : avail + 4] = struct.pack("<H", 1)  # idx = 1
    os.eventfd_write(kicks[1], 1)
    print("posted", flush=True)
    time.sleep(secs)
    (used_idx,) = struct.unpack("<H", mem[used + 2 : used + 4])
    print(f"used {used_idx} offered 0x{offered:x}", flush=True)


def receive(mem, kicks, mode, secs):
    """One receive buffer (device-writable) on queue 0, as the mode says."""
    desc, avail, used = RINGS[0]
    buf = BUF + 0x1000
    write = 2
    if mode == "rx-valid":
        d = struct.pack("<QIHH", buf, 2048, write, 0)
    elif mode == "rx-outside":
        d = struct.pack("<QIHH", 0x4000_0000, 2048, write, 0)
    elif mode == "rx-badnext":
        d = struct.pack("<QIHH", buf, 20, write | 1, QSIZE + 44)
    elif mode == "rx-short":
        d = struct.pack("<QIHH", buf, 30, write, 0)
    else:
        sys.exit(f"unknown mode {mode}")
    mem[desc : desc + 16] = d
    mem[avail + 4 : avail + 6] = struct.pack("<H", 0)
    mem[avail + 2 : avail + 4] = struct.pack("<H", 1)
    os.eventfd_write(kicks[0], 1)
    print("posted", flush=True)
    time.sleep(secs)
    (used_idx,) = struct.unpack("<H", mem[used + 2 : used + 4])
    (length,) = struct.unpack("<I", mem[used + 8 : used + 12])
    data = mem[buf + 10 : buf + 22].hex()
    print(f"rxused {used_idx} len {length} data {data}", flush=True)


if __name__ == "__main__":
    main()
