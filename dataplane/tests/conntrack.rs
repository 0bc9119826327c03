//! The connection tracker on frames: states through a TCP handshake and
//! close, UDP and ICMP, NAT in both directions with checksums that a full
//! recomputation agrees with, ICMP errors about a translated connection,
//! a full table evicting and counting, expiry, flush.
use rvs_dataplane::conntrack::nat::{apply, NatKind, NatSpec};
use rvs_dataplane::conntrack::state::*;
use rvs_dataplane::conntrack::{Conntrack, CtRequest, Outcome};
use rvs_dataplane::packet::{HeapBuf, PacketBuf};
use rvs_dataplane::wire::checksum::{checksum, finish, pseudo_header, sum};

const S: u64 = 1_000_000_000;

fn ip(a: [u8; 4]) -> u32 {
    u32::from_be_bytes(a)
}

/// An IPv4 frame with `proto` and transport bytes `l4` (checksums made
/// right).
fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let ck = match proto {
        6 => Some(16),
        17 => Some(6),
        1 => Some(2),
        _ => None,
    };
    if let Some(at) = ck {
        let ph = if proto == 1 {
            0
        } else {
            pseudo_header(src, dst, proto, l4.len() as u16)
        };
        let c = finish(sum(&l4, ph));
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend_from_slice(&h);
    f.extend_from_slice(&l4);
    f
}

fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8, seq: u32) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sp.to_be_bytes());
    t[2..4].copy_from_slice(&dp.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    frame(src, dst, 6, t)
}

fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
    let mut u = vec![0u8; 12];
    u[0..2].copy_from_slice(&sp.to_be_bytes());
    u[2..4].copy_from_slice(&dp.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    u[8..12].copy_from_slice(b"ping");
    frame(src, dst, 17, u)
}

/// Every checksum of an IPv4 TCP/UDP/ICMP frame is right.
fn sound(f: &[u8]) -> bool {
    let h = &f[14..34];
    if checksum(h) != 0 {
        return false;
    }
    let proto = h[9];
    let l4 = &f[34..];
    let src = [h[12], h[13], h[14], h[15]];
    let dst = [h[16], h[17], h[18], h[19]];
    match proto {
        6 => finish(sum(l4, pseudo_header(src, dst, 6, l4.len() as u16))) == 0,
        17 => {
            l4[6..8] == [0, 0] || finish(sum(l4, pseudo_header(src, dst, 17, l4.len() as u16))) == 0
        }
        1 => checksum(l4) == 0,
        _ => true,
    }
}

fn run(ct: &Conntrack, f: &[u8], req: &CtRequest, now: u64) -> (Outcome, Vec<u8>) {
    let o = ct.process(f, req, now);
    let mut p = HeapBuf::new(f);
    if let Some(rw) = &o.rewrite {
        assert!(apply(&mut p, rw));
    }
    (o, p.data().to_vec())
}

const C: [u8; 4] = [198, 51, 100, 7];
const PUB: [u8; 4] = [203, 0, 113, 10];
const VM: [u8; 4] = [10, 1, 0, 5];

#[test]
fn tcp_states_through_handshake_and_close() {
    let ct = Conntrack::new(100);
    let commit = CtRequest {
        commit: true,
        ..Default::default()
    };
    let look = CtRequest::default();
    let (o, _) = run(&ct, &tcp(C, 4000, VM, 80, 0x02, 100), &commit, 0);
    assert_eq!(o.state, TRK | NEW);
    let (o, _) = run(&ct, &tcp(VM, 80, C, 4000, 0x12, 900), &look, S);
    assert_eq!(o.state, TRK | EST | RPL);
    let (o, _) = run(&ct, &tcp(C, 4000, VM, 80, 0x10, 101), &look, 2 * S);
    assert_eq!(o.state, TRK | EST);
    // A mid-stream segment of an unknown connection is invalid.
    let (o, _) = run(&ct, &tcp(C, 4001, VM, 80, 0x10, 5), &commit, 2 * S);
    assert_eq!(o.state, TRK | INV);
    assert_eq!(ct.len(), 1);
    assert_eq!(o.orig, None);
}

#[test]
fn static_nat_both_ways_with_sound_checksums() {
    let ct = Conntrack::new(100);
    // Inbound: the client reaches PUB:80, which is VM:8080.
    let dnat = NatSpec {
        kind: NatKind::Dst,
        ip_min: ip(VM),
        ip_max: ip(VM),
        port_min: 8080,
        port_max: 8080,
        persistent: false,
        hash: false,
        random: false,
    };
    let rev = NatSpec {
        kind: NatKind::Reverse,
        ..dnat
    };
    let commit = CtRequest {
        commit: true,
        nat: Some(&dnat),
        set_mark: Some((7, u32::MAX)),
        ..Default::default()
    };
    let (o, f) = run(&ct, &tcp(C, 4000, PUB, 80, 0x02, 1), &commit, 0);
    assert_eq!(o.state, TRK | NEW | DNAT);
    assert_eq!(o.mark, 7);
    assert_eq!(
        (&f[30..34], &f[36..38]),
        (&VM[..], &8080u16.to_be_bytes()[..])
    );
    assert!(sound(&f));
    // The VM's answer goes back out as PUB:80.
    let back = CtRequest {
        nat: Some(&rev),
        ..Default::default()
    };
    let (o, f) = run(&ct, &tcp(VM, 8080, C, 4000, 0x12, 50), &back, S);
    assert_eq!(o.state, TRK | EST | RPL | DNAT);
    assert_eq!(o.mark, 7);
    assert_eq!(
        (&f[26..30], &f[34..36]),
        (&PUB[..], &80u16.to_be_bytes()[..])
    );
    assert!(sound(&f));
    // The original tuple stays what the client sent.
    let orig = o.orig.unwrap();
    assert_eq!((orig.src, orig.dst, orig.dport), (ip(C), ip(PUB), 80));
}

#[test]
fn source_nat_keeps_replies_apart_and_udp_zero_checksum() {
    let ct = Conntrack::new(100);
    let snat = NatSpec {
        kind: NatKind::Src,
        ip_min: ip(PUB),
        ip_max: ip(PUB),
        port_min: 0,
        port_max: 0,
        persistent: false,
        hash: false,
        random: false,
    };
    let commit = CtRequest {
        commit: true,
        nat: Some(&snat),
        ..Default::default()
    };
    // Two VMs use the same source port to the same server: the second
    // gets another public port.
    let (_, a) = run(&ct, &udp(VM, 5000, C, 53), &commit, 0);
    let (_, b) = run(&ct, &udp([10, 1, 0, 6], 5000, C, 53), &commit, 0);
    assert_eq!(&a[26..30], &PUB[..]);
    assert_eq!(&b[26..30], &PUB[..]);
    assert_eq!(&a[34..36], &5000u16.to_be_bytes()[..]);
    assert_ne!(&b[34..36], &5000u16.to_be_bytes()[..]);
    assert!(sound(&a) && sound(&b));
    // A UDP datagram without checksum keeps none.
    let mut z = udp([10, 1, 0, 9], 7000, C, 53);
    z[40] = 0;
    z[41] = 0;
    let (_, zf) = run(&ct, &z, &commit, 0);
    assert_eq!(&zf[40..42], &[0, 0]);
    assert_eq!(ct.len(), 3);
}

#[test]
fn icmp_errors_about_a_translated_connection_are_related_and_translated() {
    let ct = Conntrack::new(100);
    let snat = NatSpec {
        kind: NatKind::Src,
        ip_min: ip(PUB),
        ip_max: ip(PUB),
        port_min: 0,
        port_max: 0,
        persistent: false,
        hash: false,
        random: false,
    };
    let commit = CtRequest {
        commit: true,
        nat: Some(&snat),
        ..Default::default()
    };
    let (_, out) = run(&ct, &udp(VM, 33434, C, 33435), &commit, 0);
    // A router answers "time exceeded" to the public address, quoting
    // what it got.
    let mut icmp = vec![11, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&out[14..14 + 28]);
    let err = frame([192, 0, 2, 1], PUB, 1, icmp);
    let rev = NatSpec {
        kind: NatKind::Reverse,
        ..snat
    };
    let (o, f) = run(
        &ct,
        &err,
        &CtRequest {
            nat: Some(&rev),
            ..Default::default()
        },
        S,
    );
    assert_eq!(o.state, TRK | REL | RPL | SNAT);
    assert_eq!(&f[30..34], &VM[..], "outer destination back to the VM");
    assert_eq!(
        &f[42 + 12..42 + 16],
        &VM[..],
        "quoted source back to the VM"
    );
    assert!(sound(&f));
    assert_eq!(checksum(&f[42..62]), 0, "quoted IP header checksum");
}

#[test]
fn full_table_evicts_and_counts_and_entries_expire() {
    let ct = Conntrack::new(4);
    let commit = CtRequest {
        commit: true,
        ..Default::default()
    };
    for i in 0..6u16 {
        ct.process(&udp(VM, 1000 + i, C, 53), &commit, i as u64);
    }
    assert_eq!(ct.len(), 4);
    assert_eq!(
        ct.stats.evicted.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // UDP seen once lives 30 s.
    assert_eq!(ct.sweep(29 * S), 0);
    assert_eq!(ct.sweep(31 * S), 4);
    assert!(ct.is_empty());
    ct.process(&udp(VM, 1, C, 53), &commit, 0);
    ct.process(
        &udp(VM, 2, C, 53),
        &CtRequest {
            commit: true,
            zone: 9,
            ..Default::default()
        },
        0,
    );
    assert_eq!(ct.flush(Some(9)), 1);
    assert_eq!(ct.len(), 1);
}

#[test]
fn icmp_echo_is_tracked_by_identifier() {
    let ct = Conntrack::new(10);
    let echo = |src, dst, ty| frame(src, dst, 1, vec![ty, 0, 0, 0, 0x12, 0x34, 0, 1]);
    let (o, _) = run(
        &ct,
        &echo(C, VM, 8),
        &CtRequest {
            commit: true,
            ..Default::default()
        },
        0,
    );
    assert_eq!(o.state, TRK | NEW);
    let (o, _) = run(&ct, &echo(VM, C, 0), &CtRequest::default(), 1);
    assert_eq!(o.state, TRK | EST | RPL);
}

#[test]
fn destination_nat_clash_moves_the_source_port() {
    // Two public addresses balanced to the same backend: the client uses
    // the same source port towards both (its ports are per destination),
    // so the second connection's reply key would be the first's.
    let ct = Conntrack::new(100);
    let dnat = NatSpec {
        kind: NatKind::Dst,
        ip_min: ip(VM),
        ip_max: ip(VM),
        port_min: 8000,
        port_max: 8000,
        persistent: false,
        hash: false,
        random: false,
    };
    let rev = NatSpec {
        kind: NatKind::Reverse,
        ..dnat
    };
    let commit = CtRequest {
        commit: true,
        nat: Some(&dnat),
        ..Default::default()
    };
    let back = CtRequest {
        nat: Some(&rev),
        ..Default::default()
    };
    let (o, f) = run(&ct, &tcp(C, 4000, PUB, 80, 0x02, 1), &commit, 0);
    assert_eq!(o.state, TRK | NEW | DNAT);
    assert_eq!(&f[34..36], &4000u16.to_be_bytes()[..]);
    let other = [203, 0, 113, 11];
    let (o, f) = run(&ct, &tcp(C, 4000, other, 80, 0x02, 1), &commit, 0);
    assert_eq!(o.state, TRK | NEW | DNAT | SNAT, "translated both ways");
    assert_eq!(
        (&f[30..34], &f[36..38]),
        (&VM[..], &8000u16.to_be_bytes()[..])
    );
    let sport = u16::from_be_bytes([f[34], f[35]]);
    assert_ne!(sport, 4000);
    assert!(sound(&f));
    assert_eq!(ct.len(), 2);
    // Each backend answer finds its own connection and goes back as the
    // address the client asked, to the port it used.
    let (o, f) = run(&ct, &tcp(VM, 8000, C, sport, 0x12, 9), &back, S);
    assert_eq!(o.state & (EST | RPL), EST | RPL);
    assert_eq!(
        (&f[26..30], &f[36..38]),
        (&other[..], &4000u16.to_be_bytes()[..])
    );
    assert!(sound(&f));
    let (_, f) = run(&ct, &tcp(VM, 8000, C, 4000, 0x12, 9), &back, S);
    assert_eq!(&f[26..30], &PUB[..]);
}

#[test]
fn a_prepared_rewrite_writes_what_apply_writes() {
    // SNAT and DNAT with port changes on UDP (checksum on) and TCP frames
    // whose IP identification and payload differ from the sample's: the
    // prepared rewrite gives the same bytes as applying it whole.
    use rvs_dataplane::conntrack::nat::{Prepared, Rewrite};
    for (proto, l4c) in [(17u8, 40usize), (6, 50)] {
        let make = |id: u16, tail: u8| {
            let mut f = if proto == 17 {
                udp(C, 4000, PUB, 80)
            } else {
                tcp(C, 4000, PUB, 80, 0x10, 77)
            };
            f[18..20].copy_from_slice(&id.to_be_bytes());
            let n = f.len();
            f[n - 1] = tail;
            // Checksums made right again for the changed bytes.
            f[24..26].copy_from_slice(&[0, 0]);
            let c = checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f[l4c..l4c + 2].copy_from_slice(&[0, 0]);
            let c = finish(sum(&f[34..], pseudo_header(C, PUB, proto, (n - 34) as u16)));
            f[l4c..l4c + 2].copy_from_slice(&c.to_be_bytes());
            assert!(sound(&f));
            f
        };
        let rw = Rewrite {
            l3: 14,
            l4: 34,
            proto,
            src: Some((ip(VM), 5555)),
            dst: Some((ip([10, 9, 9, 9]), 8080)),
            quoted: None,
        };
        let sample = make(1, 0);
        let pr = Prepared::new(&rw, &sample).expect("prepared");
        for (id, tail) in [(1u16, 0u8), (2, 9), (0xfffe, 0xff), (300, 17)] {
            let f = make(id, tail);
            assert!(pr.fits(&f));
            let mut whole = HeapBuf::new(&f);
            assert!(apply(&mut whole, &rw));
            let mut fast = f.clone();
            pr.apply(&mut fast);
            assert_eq!(fast, whole.data(), "proto {proto} id {id}");
            assert!(sound(&fast));
        }
        // Another header length does not fit.
        let mut longer = sample.clone();
        longer[14] = 0x46;
        assert!(!pr.fits(&longer));
        // Nor does a packet of another connection (its source address).
        let mut other = sample.clone();
        other[29] ^= 1;
        assert!(!pr.fits(&other));
    }
}

#[test]
fn rewrites_of_any_fields_leave_sound_checksums_and_the_new_values() {
    // Source, destination or both, sometimes keeping one half of an
    // address, on UDP and TCP frames of pseudo-random addresses and
    // ports: every rewritten frame checks out against a full
    // recomputation and carries the new values, and nothing else moved.
    use rvs_dataplane::conntrack::nat::Rewrite;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000u32 {
        let (r1, r2, r3) = (next(), next(), next());
        let (src, dst) = ((r1 >> 32) as u32, r1 as u32);
        let (sp, dp) = ((r2 >> 48) as u16, (r2 >> 32) as u16);
        let proto = if i % 2 == 0 { 17u8 } else { 6 };
        let f = if proto == 17 {
            udp(src.to_be_bytes(), sp, dst.to_be_bytes(), dp)
        } else {
            tcp(src.to_be_bytes(), sp, dst.to_be_bytes(), dp, 0x10, i)
        };
        let new_ip = |old: u32, r: u64| match r % 3 {
            0 => old,
            1 => (old & 0xffff_0000) | (r >> 40) as u32 & 0xffff,
            _ => (r >> 20) as u32,
        };
        let s_end = Some((new_ip(src, r2), r3 as u16));
        let d_end = Some((new_ip(dst, r3), (r3 >> 16) as u16));
        let (s, d) = match i % 3 {
            0 => (s_end, None),
            1 => (None, d_end),
            _ => (s_end, d_end),
        };
        let rw = Rewrite {
            l3: 14,
            l4: 34,
            proto,
            src: s,
            dst: d,
            quoted: None,
        };
        let mut p = HeapBuf::new(&f);
        assert!(apply(&mut p, &rw));
        let g = p.data().to_vec();
        assert!(sound(&g), "frame {i}: {rw:?}");
        let mut want = f.clone();
        if let Some((ip, port)) = s {
            want[26..30].copy_from_slice(&ip.to_be_bytes());
            want[34..36].copy_from_slice(&port.to_be_bytes());
        }
        if let Some((ip, port)) = d {
            want[30..34].copy_from_slice(&ip.to_be_bytes());
            want[36..38].copy_from_slice(&port.to_be_bytes());
        }
        // Everything but the two checksums is as asked.
        let csum = if proto == 17 { 40 } else { 50 };
        for at in [24, csum] {
            want[at..at + 2].copy_from_slice(&g[at..at + 2]);
        }
        assert_eq!(g, want, "frame {i}");
    }
}
