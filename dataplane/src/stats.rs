//! Counters. Each PMD owns its own (single writer: a plain load and store,
//! no locked instruction); readers sum over PMDs.
use crate::MAX_PORTS;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer (the owning PMD): no read-modify-write needed.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a frame was dropped. Every drop has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than its headers.
    Malformed,
    /// Its VLAN is not allowed on the port it arrived on.
    VlanDenied,
    /// NORMAL found the destination on the port it came from.
    SamePort,
    /// NORMAL had nowhere to send it (the only port in its VLAN).
    NoOutput,
    /// The egress queue was full or the driver refused it.
    TxFull,
    /// The egress port was down (vhost-user guest not connected).
    TxPortDown,
    /// No mbuf for a flood copy or a pushed tag.
    PoolEmpty,
    /// Arrived on an rx queue of a port that is being removed.
    NoPort,
    /// No flow in the tables matched (OpenFlow table miss).
    TableMiss,
    /// The matching flows' actions sent it nowhere (`actions=drop`).
    FlowDrop,
    /// dec_ttl on a packet whose TTL was 1 or 0.
    TtlExpired,
    /// resubmit/goto/group nesting passed 64 levels.
    RecursionLimit,
    /// A flow named a group that does not exist.
    NoGroup,
    /// Sent to the controller, and no controller takes packet-ins.
    Controller,
    /// NORMAL would have sent a frame from one tunnel port to another
    /// (split horizon: a full mesh of tunnels must not loop).
    SplitHorizon,
    /// No route to a tunnel's remote endpoint through a bridge.
    TunnelNoRoute,
    /// The next hop's MAC is not resolved (yet): an ARP request is out.
    TunnelNoNeighbor,
    /// The frame does not fit the tunnel's underlay MTU.
    MtuExceeded,
    /// Tunnel traffic for us with no tunnel port for its key/VNI and
    /// remote.
    TunnelUnknownKey,
    /// GRE with routing/version/unknown flags, VXLAN without exactly the
    /// I flag.
    TunnelBadFlags,
    /// Outer IPv4, GRE or UDP checksum wrong.
    TunnelBadChecksum,
    /// Truncated outer headers, an outer fragment, a non-Ethernet payload.
    TunnelMalformed,
    /// Forwarding is held: `other_config:flow-restore-wait=true`.
    RestoreWait,
    /// Underlay GRE/VXLAN from an address not in the tunnel peer
    /// allow-list (`other_config:tunnel-peer-allowlist`).
    TunnelPeerDenied,
    /// Beyond the port's `ingress_policing_rate`.
    RxQos,
    /// Beyond the port's QoS rate with its shaper queue full.
    TxQos,
}

impl DropReason {
    pub const ALL: [DropReason; 26] = [
        DropReason::Malformed,
        DropReason::VlanDenied,
        DropReason::SamePort,
        DropReason::NoOutput,
        DropReason::TxFull,
        DropReason::TxPortDown,
        DropReason::PoolEmpty,
        DropReason::NoPort,
        DropReason::TableMiss,
        DropReason::FlowDrop,
        DropReason::TtlExpired,
        DropReason::RecursionLimit,
        DropReason::NoGroup,
        DropReason::Controller,
        DropReason::SplitHorizon,
        DropReason::TunnelNoRoute,
        DropReason::TunnelNoNeighbor,
        DropReason::MtuExceeded,
        DropReason::TunnelUnknownKey,
        DropReason::TunnelBadFlags,
        DropReason::TunnelBadChecksum,
        DropReason::TunnelMalformed,
        DropReason::RestoreWait,
        DropReason::TunnelPeerDenied,
        DropReason::RxQos,
        DropReason::TxQos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::VlanDenied => "vlan-denied",
            DropReason::SamePort => "same-port",
            DropReason::NoOutput => "no-output",
            DropReason::TxFull => "tx-queue-full",
            DropReason::TxPortDown => "tx-port-down",
            DropReason::PoolEmpty => "pool-empty",
            DropReason::NoPort => "no-port",
            DropReason::TableMiss => "table-miss",
            DropReason::FlowDrop => "flow-drop",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::RecursionLimit => "recursion-limit",
            DropReason::NoGroup => "no-group",
            DropReason::Controller => "to-controller",
            DropReason::SplitHorizon => "split-horizon",
            DropReason::TunnelNoRoute => "tunnel-no-route",
            DropReason::TunnelNoNeighbor => "tunnel-no-neighbor",
            DropReason::MtuExceeded => "mtu-exceeded",
            DropReason::TunnelUnknownKey => "tunnel-unknown-key",
            DropReason::TunnelBadFlags => "tunnel-bad-flags",
            DropReason::TunnelBadChecksum => "tunnel-bad-checksum",
            DropReason::TunnelMalformed => "tunnel-malformed",
            DropReason::RestoreWait => "flow-restore-wait",
            DropReason::TunnelPeerDenied => "tunnel-peer-denied",
            DropReason::RxQos => "ingress-policing",
            DropReason::TxQos => "qos-queue-full",
        }
    }
}

#[derive(Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub rx_dropped: Counter,
    pub tx_dropped: Counter,
    /// Frames that waited for room at this port (`txhold`).
    pub tx_held: Counter,
}

/// Totals of one port, summed over PMDs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub tx_held: u64,
}

impl PortTotals {
    pub fn minus(&self, base: &PortTotals) -> PortTotals {
        PortTotals {
            rx_packets: self.rx_packets.wrapping_sub(base.rx_packets),
            rx_bytes: self.rx_bytes.wrapping_sub(base.rx_bytes),
            tx_packets: self.tx_packets.wrapping_sub(base.tx_packets),
            tx_bytes: self.tx_bytes.wrapping_sub(base.tx_bytes),
            rx_dropped: self.rx_dropped.wrapping_sub(base.rx_dropped),
            tx_dropped: self.tx_dropped.wrapping_sub(base.tx_dropped),
            tx_held: self.tx_held.wrapping_sub(base.tx_held),
        }
    }
}

pub struct PmdStats {
    pub rx_packets: Counter,
    pub tx_packets: Counter,
    pub busy_cycles: Counter,
    pub idle_cycles: Counter,
    pub iterations: Counter,
    pub busy_iterations: Counter,
    pub flood_packets: Counter,
    pub mac_hits: Counter,
    pub mac_misses: Counter,
    /// Exact-match cache hits and misses, and classifier translations.
    pub emc_hits: Counter,
    pub emc_misses: Counter,
    /// Exact-match misses a megaflow answered (no translation).
    pub megaflow_hits: Counter,
    /// Frames held for a port with no room (`txhold`).
    pub tx_held: Counter,
    /// Frames run through a bridge's tables again: after ct(table=...),
    /// and outer or inner frames after a tunnel's encap or decap (those
    /// an encap sends straight on are not).
    pub recirculations: Counter,
    pub drops: [Counter; DropReason::ALL.len()],
    pub ports: Box<[PortCounters]>,
    /// Per tunnel key/VNI.
    pub tunnels: crate::tunnel::stats::KeyStats,
}

impl Default for PmdStats {
    fn default() -> Self {
        PmdStats {
            rx_packets: Counter::default(),
            tx_packets: Counter::default(),
            busy_cycles: Counter::default(),
            idle_cycles: Counter::default(),
            iterations: Counter::default(),
            busy_iterations: Counter::default(),
            flood_packets: Counter::default(),
            mac_hits: Counter::default(),
            mac_misses: Counter::default(),
            emc_hits: Counter::default(),
            emc_misses: Counter::default(),
            megaflow_hits: Counter::default(),
            tx_held: Counter::default(),
            recirculations: Counter::default(),
            drops: Default::default(),
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            tunnels: Default::default(),
        }
    }
}

impl PmdStats {
    #[inline]
    pub fn drop(&self, r: DropReason, in_slot: Option<u16>, n: u64) {
        self.drops[r as usize].add(n);
        if let Some(s) = in_slot {
            if let Some(p) = self.ports.get(s as usize) {
                p.rx_dropped.add(n);
            }
        }
    }

    /// Counts `n` frames of `bytes` sent out of `slot`.
    #[inline]
    pub fn tx_sent(&self, slot: u16, n: u64, bytes: u64) {
        let p = &self.ports[slot as usize];
        p.tx_packets.add(n);
        p.tx_bytes.add(bytes);
        self.tx_packets.add(n);
    }

    /// Counts `n` frames for `slot` dropped at transmit.
    #[inline]
    pub fn tx_drop(&self, r: DropReason, slot: u16, n: u64) {
        self.drops[r as usize].add(n);
        self.ports[slot as usize].tx_dropped.add(n);
    }

    pub fn port_totals(&self, slot: u16) -> PortTotals {
        let p = &self.ports[slot as usize];
        PortTotals {
            rx_packets: p.rx_packets.get(),
            rx_bytes: p.rx_bytes.get(),
            tx_packets: p.tx_packets.get(),
            tx_bytes: p.tx_bytes.get(),
            rx_dropped: p.rx_dropped.get(),
            tx_dropped: p.tx_dropped.get(),
            tx_held: p.tx_held.get(),
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(|c| c.get()).sum()
    }
}

/// Sums one port's counters over PMDs.
pub fn port_totals<'a>(pmds: impl Iterator<Item = &'a PmdStats>, slot: u16) -> PortTotals {
    pmds.fold(PortTotals::default(), |a, s| {
        let p = s.port_totals(slot);
        PortTotals {
            rx_packets: a.rx_packets + p.rx_packets,
            rx_bytes: a.rx_bytes + p.rx_bytes,
            tx_packets: a.tx_packets + p.tx_packets,
            tx_bytes: a.tx_bytes + p.tx_bytes,
            rx_dropped: a.rx_dropped + p.rx_dropped,
            tx_dropped: a.tx_dropped + p.tx_dropped,
            tx_held: a.tx_held + p.tx_held,
        }
    })
}
