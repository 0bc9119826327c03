//! A batch through the OpenFlow pipeline: parse each frame into a flow key,
//! find its translation in the PMD's exact-match cache (or translate through
//! the classifier and cache it), count the hit rules once per run of
//! packets, and carry out the datapath ops.
use crate::conntrack::{nat, state, CtMemo, CtRequest, Outcome};
use crate::flow::cache::{FlowCache, RecircCache};
use crate::flow::extract::{extract_into, SameHeader, TunnelMeta};
use crate::flow::key::{packet_words_eq, Field, FlowKey, PACKET_WORDS};
use crate::flow::rewrite;
use crate::flow::rule::Pipeline;
use crate::flow::xlate::{
    translate, translate_actions, translate_recirc, CtOp, DpOp, PortView, Xlate,
};
use crate::normal::Normal;
use crate::packet::PacketBuf;
use crate::snapshot::{BridgeEntry, Inject, PacketIn, Snapshot};
use crate::stats::{DropReason, PmdStats};
use crate::txbuf::TxBuffers;
use crate::wire::ipv4::PROTO_UDP;
use crate::Burst;
use std::sync::atomic::Ordering;
use std::sync::Arc;

struct Exec<'a, 'b, P: PacketBuf> {
    snap: &'a Snapshot<P>,
    bridge: &'a BridgeEntry,
    in_slot: u16,
    in_port: u32,
    now: u32,
    stats: &'a PmdStats,
    tx: &'b mut TxBuffers<P>,
    normal: Option<Normal<'a, P>>,
    /// The packet's tunnel fields as the actions so far left them.
    tun: TunnelMeta,
    pipe: &'a Pipeline,
    rcache: &'b mut RecircCache,
    /// Recirculations this packet went through.
    depth: u32,
    /// What the last `ct` said.
    last_ct: Outcome,
    /// The last packet's connection, for the next packet of the batch.
    ct_memo: CtMemo,
    /// ct_state and ct_zone of the packet (or held set) being run, as
    /// its last ct left them.
    prior: (u8, u16),
}

/// Recirculations (ct(table=...)) one packet may go through.
const MAX_RECIRC: u32 = 8;

/// Runs a batch that arrived on `in_slot` (and was counted there) through
/// the pipeline; `tun` holds each packet's tunnel fields when the port is
/// a tunnel.
#[allow(clippy::too_many_arguments)]
pub fn process_batch<P: PacketBuf>(
    snap: &Snapshot<P>,
    pipe: &Pipeline,
    in_slot: u16,
    pkts: &mut Burst<P>,
    tun: Option<&[TunnelMeta]>,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
    cache: &mut FlowCache,
    rcache: &mut RecircCache,
) {
    let Some(port) = snap.port(in_slot) else {
        stats.drop(DropReason::NoPort, None, pkts.len() as u64);
        pkts.clear();
        return;
    };
    let bridge = &snap.bridges[port.bridge as usize];
    let stamp = (pipe.generation, snap.version);
    let mut ex = Exec {
        snap,
        bridge,
        in_slot,
        in_port: port.ofport,
        now,
        stats,
        tx,
        normal: None,
        tun: TunnelMeta::default(),
        pipe,
        rcache,
        depth: 0,
        last_ct: Outcome::default(),
        ct_memo: CtMemo::default(),
        prior: (0, 0),
    };
    // The current run of packets with one key: a burst is mostly runs of
    // one flow, and a run costs one cache probe and one counter update.
    // Its translation, packets and bytes; its key is `run_key`.
    let mut run: Option<(Arc<Xlate>, u64, u64)> = None;
    // The run's packets not yet sent on, all with the tunnel fields `held`:
    // a run's actions are carried out over all of them at once (OVS's
    // per-flow packet batches), so an output costs a copy of pointers.
    let mut held: Burst<P> = Burst::new();
    let mut held_tun = TunnelMeta::default();
    // Whether every held packet has the same packet words (no run
    // extension across keys since the set began).
    let mut held_uniform = true;
    let (mut hits, mut misses, mut mega_hits) = (0u64, 0u64, 0u64);
    // Each frame's key is parsed into `key`; one that joins the run swaps
    // the two references and becomes `run_key` (the key of the run's last
    // parsed frame). Copying it instead reloaded the parser's 8-byte
    // stores 16 bytes at a time, a failed store forward: 13 % of this
    // function's samples with a million flows.
    let (mut key_a, mut key_b) = (FlowKey::default(), FlowKey::default());
    let (mut key, mut run_key) = (&mut key_a, &mut key_b);
    let mut same = SameHeader::default();
    let mut it = std::mem::take(pkts).into_iter();
    let mut i = 0;
    while let Some(pkt) = it.next() {
        let meta = tun.and_then(|t| t.get(i));
        i += 1;
        let same_key;
        // A frame with the header bytes of the run's frames has their key.
        let parsed = !same.matches(pkt.data(), meta);
        if parsed {
            same.clear();
            if extract_into(pkt.data(), port.ofport, meta, key).is_err() {
                stats.drop(DropReason::Malformed, Some(in_slot), 1);
                continue;
            }
        }
        let len = pkt.wire_len() as u64;
        match &mut run {
            // A frame recognised by its bytes is in the run: `same` holds
            // only while the run's key was the last one parsed.
            Some((_, n, b)) if !parsed || packet_words_eq(run_key.packet_words(), key) => {
                hits += 1;
                *n += 1;
                *b += len;
                same_key = true;
                // Two frames of one flow in a row: a run, whose next
                // frames are recognised by their bytes. (Remembered only
                // then: a burst of many flows pays nothing for it.)
                if parsed {
                    same.remember(pkt.data(), meta);
                }
            }
            // A new key under the run's megaflow (equal in every bit its
            // translation consulted) has the run's translation: OVS's
            // megaflow invariant, checked against the run instead of
            // probing both caches. Many flows through one rule cost a
            // masked compare each.
            Some((x, n, b))
                if x.wc
                    .as_ref()
                    .is_some_and(|wc| under_mask(run_key.packet_words(), &key.w, &wc.w)) =>
            {
                std::mem::swap(&mut key, &mut run_key);
                *n += 1;
                *b += len;
                misses += 1;
                mega_hits += 1;
                same_key = false;
            }
            _ => {
                // While the cache is bypassed the key is hashed only for
                // the rare insert.
                let h = (!cache.bypassed()).then(|| cache.hash.key(key));
                let cur = run.as_ref().map(|r| Arc::as_ptr(&r.0));
                // Only a translation that differs from the current run's is
                // cloned: with many flows under one megaflow, consecutive
                // packets differ in key but not in translation, and an Arc
                // clone and drop plus the rule counters per packet (four
                // locked instructions) were much of their cost.
                let found = match h {
                    Some(h) => cache.probe(key, h, stamp),
                    None => None,
                };
                let next: Option<Arc<Xlate>> = if let Some(x) = found {
                    hits += 1;
                    (Some(Arc::as_ptr(x)) != cur).then(|| x.clone())
                } else {
                    misses += 1;
                    let promote = cache.promote();
                    let (x, fresh) = match cache.mega.lookup(key, stamp) {
                        Some(x) => {
                            mega_hits += 1;
                            let keep = Some(Arc::as_ptr(x)) != cur || (promote && !x.volatile);
                            (keep.then(|| x.clone()), false)
                        }
                        None => {
                            let x = Arc::new(translate(pipe, bridge, in_slot, key));
                            cache.mega.insert(key, stamp, x.clone());
                            (Some(x), true)
                        }
                    };
                    // Filled even while bypassed, so that a working set that
                    // fits is found again at the next probe.
                    if let Some(x) = &x {
                        if !x.volatile && (fresh || promote) {
                            let h = h.unwrap_or_else(|| cache.hash.key(key));
                            cache.insert(key, h, stamp, x.clone());
                        }
                    }
                    x.filter(|x| Some(Arc::as_ptr(x)) != cur)
                };
                std::mem::swap(&mut key, &mut run_key);
                match next {
                    Some(xl) => {
                        if let Some((r, n, b)) = run.replace((xl, 1, len)) {
                            ex.run_held(&r, &mut held, held_tun, held_uniform);
                            credit(&r, n, b, now);
                        }
                        same_key = true;
                    }
                    // The same translation under a new key (so there is a
                    // current run): the run goes on.
                    None => {
                        if let Some((_, n, b)) = &mut run {
                            *n += 1;
                            *b += len;
                        }
                        same_key = false;
                    }
                }
            }
        }
        let Some((xl, ..)) = &run else {
            continue;
        };
        if let Some(reason) = xl.drop {
            // A table miss goes to the controllers when there are any
            // (OpenFlow 1.0's table-miss behaviour).
            if reason == DropReason::TableMiss && to_controller(bridge, port.ofport, 0, &pkt) {
                stats.drop(DropReason::Controller, Some(in_slot), 1);
            } else {
                stats.drop(reason, Some(in_slot), 1);
            }
            continue;
        }
        // A run extended under a megaflow may mix tunnel fields, which
        // outputs to tunnels read: what is held goes first.
        let m = meta.copied().unwrap_or_default();
        if m != held_tun || held.is_full() {
            ex.run_held(xl, &mut held, held_tun, held_uniform);
            held_tun = m;
        }
        held_uniform = held.is_empty() || (held_uniform && same_key);
        held.push(pkt);
        // The run's frames that follow, recognised by their bytes, join it
        // in one tight loop: the per-frame steps above (which arm, drop,
        // tunnel fields, uniformity) are the same for each of them.
        if same.armed() {
            let (k, bytes) = same_run(
                &same,
                it.as_slice(),
                tun.map(|t| t.get(i..).unwrap_or_default()),
                held_tun,
            );
            if k > 0 {
                if let Some((_, n, b)) = &mut run {
                    *n += k as u64;
                    *b += bytes;
                }
                hits += k as u64;
                held.extend(it.by_ref().take(k));
                i += k;
            }
        }
    }
    if let Some((r, n, b)) = run {
        ex.run_held(&r, &mut held, held_tun, held_uniform);
        credit(&r, n, b, now);
    }
    stats.emc_hits.add(hits);
    stats.emc_misses.add(misses);
    stats.megaflow_hits.add(mega_hits);
    if let Some(n) = ex.normal.take() {
        n.finish(stats);
    }
}

/// How many of `rest` (with tunnel fields `tun`, when from a tunnel) the
/// remembered frame `same` vouches for and carry `held_tun`, one after
/// another, and their bytes. Out of line: the loop it would sit in has
/// no registers to spare for it (inlined, it cost bursts of many flows,
/// which never get here, 20 instructions per frame).
#[inline(never)]
fn same_run<P: PacketBuf>(
    same: &SameHeader,
    rest: &[P],
    tun: Option<&[TunnelMeta]>,
    held_tun: TunnelMeta,
) -> (usize, u64) {
    let (mut k, mut bytes) = (0, 0u64);
    while let Some(p) = rest.get(k) {
        let m = tun.and_then(|t| t.get(k));
        if m.copied().unwrap_or_default() != held_tun || !same.matches(p.data(), m) {
            break;
        }
        bytes += p.wire_len() as u64;
        k += 1;
    }
    (k, bytes)
}

/// Whether `ops` (group buckets and clones included) go through the
/// connection tracker.
fn uses_ct(ops: &[DpOp]) -> bool {
    ops.iter().any(|op| match op {
        DpOp::Ct(_) => true,
        DpOp::Clone(sub) => uses_ct(sub),
        DpOp::FastFailover(alts) => alts.iter().any(|(_, sub)| uses_ct(sub)),
        _ => false,
    })
}

/// Whether `key` equals `run` in every bit `wc` keeps (over the words
/// `run` has: the packet words for a run's key, all for a recirculation's).
#[inline]
fn under_mask(run: &[u64], key: &[u64], wc: &[u64]) -> bool {
    run.iter()
        .zip(key)
        .zip(wc)
        .fold(0u64, |d, ((r, k), m)| d | ((r ^ k) & m))
        == 0
}

/// Queues a packet-in for the controllers; false when none is connected
/// or the queue is full (the caller counts the packet either way).
fn to_controller<P: PacketBuf>(bridge: &BridgeEntry, in_port: u32, reason: u8, pkt: &P) -> bool {
    let f = &bridge.flows;
    f.controllers_up.load(Ordering::Relaxed) > 0
        && f.packet_in
            .try_send(PacketIn {
                in_port,
                reason,
                data: pkt.data().to_vec(),
            })
            .is_ok()
}

/// Sends a controller's packet-out: its actions on `pkt`, as if it had
/// arrived on `inj.in_port`.
#[allow(clippy::too_many_arguments)]
pub fn inject<P: PacketBuf>(
    snap: &Snapshot<P>,
    bridge: &BridgeEntry,
    inj: &Inject,
    pkt: P,
    now: u32,
    stats: &PmdStats,
    tx: &mut TxBuffers<P>,
    rcache: &mut RecircCache,
) {
    let in_slot = bridge.slot(inj.in_port).unwrap_or(u16::MAX);
    let mut key = FlowKey::default();
    if extract_into(pkt.data(), inj.in_port, None, &mut key).is_err() {
        stats.drop(DropReason::Malformed, None, 1);
        return;
    }
    let pipe = bridge.flows.published.load();
    let xl = translate_actions(&pipe, bridge, in_slot, &key, &inj.actions);
    credit(&xl, 1, pkt.wire_len() as u64, now);
    let mut ex = Exec {
        snap,
        bridge,
        in_slot,
        in_port: inj.in_port,
        now,
        stats,
        tx,
        normal: None,
        tun: TunnelMeta::default(),
        pipe: &pipe,
        rcache,
        depth: 0,
        last_ct: Outcome::default(),
        ct_memo: CtMemo::default(),
        prior: (0, 0),
    };
    if let Some(reason) = xl.drop {
        stats.drop(reason, None, 1);
        return;
    }
    ex.run(&xl.ops, xl.last_consumer, pkt);
    if let Some(n) = ex.normal.take() {
        n.finish(stats);
    }
}

#[inline]
fn credit(x: &Xlate, n: u64, bytes: u64, now: u32) {
    for h in x.hits.iter() {
        h.hit(n, bytes, now);
    }
}

impl<'a, P: PacketBuf> Exec<'a, '_, P> {
    /// Carries out `xl` on every held packet (which all came with tunnel
    /// fields `tun`, and all have the same packet words when `uniform`)
    /// and leaves `held` empty. Outputs, rewrites, tunnel fields, NORMAL
    /// and ct go op by op over the whole set, and a closing
    /// ct(table=...) recirculates it in groups (`ct_held`); learn,
    /// groups and controller go packet by packet. Either way each packet
    /// sees the ops in order, and each port gets the packets in arrival
    /// order.
    fn run_held(&mut self, xl: &Xlate, held: &mut Burst<P>, tun: TunnelMeta, uniform: bool) {
        let batched = |(i, op): (usize, &DpOp)| match op {
            // A copy that recirculates while the packet goes on.
            DpOp::Ct(c) => c.recirc.is_none() || Some(i) == xl.last_consumer,
            _ => op.runs_batched(),
        };
        // Each packet's ct state after a ct is its own: one ct per set.
        let cts = xl.ops.iter().filter(|o| matches!(o, DpOp::Ct(_))).count();
        let prior = self.prior;
        // Nothing sends the packets on (what they teach still counts), a
        // single packet, or ops that need packet-by-packet order.
        let Some(last) = xl
            .last_consumer
            .filter(|_| held.len() > 1 && cts <= 1 && xl.ops.iter().enumerate().all(batched))
        else {
            for pkt in held.drain(..) {
                (self.tun, self.prior) = (tun, prior);
                self.run(&xl.ops, xl.last_consumer, pkt);
            }
            self.prior = prior;
            return;
        };
        self.tun = tun;
        let (stats, in_slot) = (self.stats, self.in_slot);
        for (i, op) in xl.ops.iter().enumerate() {
            let consume = i == last;
            match op {
                DpOp::Output(_) | DpOp::Normal => {
                    if consume {
                        self.hand_on_all(op, held);
                        return;
                    }
                    for pkt in held.iter() {
                        match pkt.deep_copy() {
                            Some(c) => self.hand_on(op, c),
                            None => stats.drop(DropReason::PoolEmpty, None, 1),
                        }
                    }
                }
                DpOp::SetTunnel(t) => self.tun = *t,
                DpOp::Ct(ct) => match &ct.recirc {
                    Some((_, carry)) => {
                        if self.depth >= MAX_RECIRC {
                            let n = held.len() as u64;
                            stats.drop(DropReason::RecursionLimit, Some(in_slot), n);
                            held.clear();
                        } else if uniform {
                            self.ct_held(ct, carry, held);
                        } else {
                            self.ct_mixed(ct, carry, held);
                        }
                        return;
                    }
                    None => {
                        let mut kept = Burst::new();
                        for pkt in held.drain(..) {
                            self.prior = prior;
                            if let Some(p) = self.conntrack(ct, pkt) {
                                kept.push(p);
                            }
                        }
                        self.prior = prior;
                        *held = kept;
                    }
                },
                _ => held.retain(|pkt| {
                    let kept = rewrite::apply(pkt, op);
                    if !kept {
                        stats.drop(DropReason::PoolEmpty, Some(in_slot), 1);
                    }
                    kept
                }),
            }
        }
    }

    /// ct(table=...) closing a uniform held set (one key; the caller
    /// checked the recursion limit): each packet through the tracker, then
    /// back through the tables in groups of consecutive packets that come
    /// back with one key. A group costs one recirculation lookup, and a
    /// packet whose ct outcome equals the one before is not parsed again
    /// (its key is that packet's).
    fn ct_held(&mut self, ct: &CtOp, carry: &FlowKey, held: &mut Burst<P>) {
        self.stats.recirculations.add(held.len() as u64);
        let mut group: Burst<P> = Burst::new();
        // Two slots of (outcome, key): the current group's (`g`) and the
        // packet's; a new group flips `g`, so neither is copied per packet.
        let mut outs = [Outcome::default(); 2];
        let mut keys = [FlowKey::default(), FlowKey::default()];
        let mut g = 0;
        let mut gx: Option<Arc<Xlate>> = None;
        let prior = self.prior;
        let mut it = std::mem::take(held).into_iter();
        while let Some(pkt) = it.next() {
            self.prior = prior;
            let Some(pkt) = self.conntrack(ct, pkt) else {
                continue;
            };
            let s = 1 - g;
            outs[s] = self.last_ct;
            let same_out = gx.is_some() && outs[s] == outs[g];
            if same_out {
                // The packet before again: same key after ct, same group;
                // and the rest of the run may go with it at once.
                group.push(pkt);
                self.ct_bulk(ct, &outs[s], &mut it, &mut group);
                continue;
            }
            if !self.recirc_key(carry, &outs[s], &pkt, &mut keys[s]) {
                continue;
            }
            if !(same_out && keys[s] == keys[g]) {
                if let Some(x) = gx.take() {
                    self.run_group(&x, &outs[g], &mut group, prior, true);
                }
                gx = Some(self.recirc_xlate(&keys[s]));
                g = s;
            }
            group.push(pkt);
            // A packet of a connection that was there before it (the memo
            // holds it): the rest of a uniform run gets what it got, so
            // one packet through the tracker is enough, not two.
            if self.ct_memo.is_set() {
                self.ct_bulk(ct, &outs[s], &mut it, &mut group);
            }
        }
        if let Some(x) = gx {
            self.run_group(&x, &outs[g], &mut group, prior, true);
        }
    }

    /// ct(table=...) closing a set of many flows (a run extended across
    /// keys, so each packet is its own connection): each packet through
    /// the tracker and its recirculated key built, then on in groups of
    /// consecutive packets under one megaflow of the recirculated
    /// translation (equal in every key bit it consulted, with the same ct
    /// state and zone), as the main loop extends a run. A group costs one
    /// translation lookup and its outputs move as a block; packet by
    /// packet, the lookup and the single outputs were ~450 of the ~2000
    /// instructions per frame of rvs-ipp's 32-connection nat loop. A
    /// translation that uses the tracker again runs packet by packet. The
    /// caller checked the recursion limit.
    fn ct_mixed(&mut self, ct: &CtOp, carry: &FlowKey, held: &mut Burst<P>) {
        self.stats.recirculations.add(held.len() as u64);
        let prior = self.prior;
        let mut group: Burst<P> = Burst::new();
        // The group's translation, key and ct outcome, and whether the
        // translation uses the tracker.
        let mut cur: Option<(Arc<Xlate>, FlowKey, Outcome, bool)> = None;
        let mut key = FlowKey::default();
        for pkt in std::mem::take(held) {
            self.prior = prior;
            let Some(pkt) = self.conntrack(ct, pkt) else {
                continue;
            };
            if !self.recirc_key(carry, &self.last_ct, &pkt, &mut key) {
                continue;
            }
            let out = &self.last_ct;
            let same = cur.as_ref().is_some_and(|(x, k, o, _)| {
                (o.state, o.zone) == (out.state, out.zone)
                    && x.wc
                        .as_ref()
                        .is_some_and(|wc| under_mask(&k.w, &key.w, &wc.w))
            });
            if !same {
                if let Some((x, _, o, _)) = cur.take() {
                    self.run_group(&x, &o, &mut group, prior, false);
                }
                let out = self.last_ct;
                let x = self.recirc_xlate(&key);
                let ct = uses_ct(&x.ops);
                cur = Some((x, key, out, ct));
            }
            group.push(pkt);
            // A translation that goes through the tracker again (a commit,
            // a second zone, a group bucket's NAT) runs before the next
            // packet's ct, as packet by packet: the tracker sees each
            // connection's packets in the order they came (TCP follows
            // them segment by segment).
            if let Some((x, _, o, _)) = cur.take_if(|c| c.3) {
                self.run_group(&x, &o, &mut group, prior, false);
            }
        }
        if let Some((x, _, o, _)) = cur {
            self.run_group(&x, &o, &mut group, prior, false);
        }
        self.prior = prior;
    }

    /// Moves the rest of a uniform run into `group` when ct would say
    /// `out` (what the run's last packet got) for each of them: counted on
    /// the connection at once and rewritten by a prepared rewrite. False,
    /// with `it` untouched, when they must go one by one.
    fn ct_bulk(
        &mut self,
        ct: &CtOp,
        out: &Outcome,
        it: &mut arrayvec::IntoIter<P, { crate::BURST }>,
        group: &mut Burst<P>,
    ) -> bool {
        let rest = it.as_slice();
        // TCP is tracked segment by segment, and ICMP echoes of one key may
        // carry other IDs: only UDP's connection is what the key names.
        if rest.is_empty() || out.orig.is_none_or(|o| o.proto != PROTO_UDP) {
            return false;
        }
        let prep = match &out.rewrite {
            None => None,
            Some(rw) => match rest.first().and_then(|p| nat::Prepared::new(rw, p.data())) {
                Some(pr) if rest.iter().all(|p| pr.fits(p.data())) => Some(pr),
                _ => return false,
            },
        };
        if !self.ct_repeat(ct, rest) {
            return false;
        }
        for mut p in it.by_ref() {
            if let Some(pr) = &prep {
                pr.apply(p.data_mut());
            }
            group.push(p);
        }
        true
    }

    /// Counts `rest` (the rest of a uniform UDP run whose last packet got
    /// `out` from ct) on their connection at once, when ct would say the
    /// same for each.
    fn ct_repeat(&mut self, ct: &CtOp, rest: &[P]) -> bool {
        let bytes = rest.iter().map(|p| p.wire_len() as u64).sum();
        let req = self.ct_request(ct);
        self.snap.ct.repeat(
            &self.ct_memo,
            &req,
            rest.len() as u64,
            bytes,
            self.now as u64 * 1_000_000_000,
        )
    }

    /// Recirculated packets that came back with one translation (and one
    /// key when `uniform`), through it.
    fn run_group(
        &mut self,
        xl: &Xlate,
        out: &Outcome,
        group: &mut Burst<P>,
        prior: (u8, u16),
        uniform: bool,
    ) {
        if group.is_empty() {
            return;
        }
        let n = group.len() as u64;
        let bytes = group.iter().map(|p| p.wire_len() as u64).sum();
        credit(xl, n, bytes, self.now);
        if let Some(r) = xl.drop {
            self.stats.drop(r, Some(self.in_slot), n);
            group.clear();
            return;
        }
        self.depth += 1;
        let saved = self.tun;
        self.prior = (out.state, out.zone);
        self.run_held(xl, group, saved, uniform);
        (self.tun, self.prior) = (saved, prior);
        self.depth -= 1;
    }

    /// `hand_on` for every held packet: an output to a plain port moves
    /// them into its tx burst in one go.
    fn hand_on_all(&mut self, op: &DpOp, held: &mut Burst<P>) {
        match *op {
            DpOp::Output(slot) => {
                let refused = match self.snap.port(slot) {
                    None => {
                        self.stats.drop(DropReason::NoPort, None, held.len() as u64);
                        held.clear();
                        return;
                    }
                    Some(p) if p.tunnel => self.tx.push_tunnel_all(slot, held, self.tun),
                    Some(_) => self.tx.push_all(slot, held),
                };
                if refused > 0 {
                    self.stats.tx_drop(DropReason::TxFull, slot, refused);
                }
            }
            DpOp::Normal => {
                if self.normal.is_none() {
                    self.normal = Normal::new(self.snap, self.in_slot, self.now);
                }
                match self.normal.as_mut() {
                    Some(n) => n.forward_all(held, self.stats, self.tx),
                    None => {
                        self.stats.drop(DropReason::NoPort, None, held.len() as u64);
                        held.clear();
                    }
                }
            }
            _ => {
                for pkt in held.drain(..) {
                    self.hand_on(op, pkt);
                }
            }
        }
    }

    fn run(&mut self, ops: &[DpOp], last: Option<usize>, mut pkt: P) {
        let Some(last) = last else {
            // Nothing sends the packet, but what it teaches still counts
            // (an ARP reply that only feeds a learn action).
            for op in ops {
                if let DpOp::Learn(l) = op {
                    self.learn(l);
                }
            }
            self.stats.drop(DropReason::FlowDrop, Some(self.in_slot), 1);
            return;
        };
        for (i, op) in ops.iter().enumerate() {
            let consume = i == last;
            match op {
                DpOp::Output(_) | DpOp::Normal | DpOp::Clone(_) | DpOp::FastFailover(_) => {
                    if consume {
                        self.hand_on(op, pkt);
                        return;
                    }
                    match pkt.deep_copy() {
                        Some(c) => self.hand_on(op, c),
                        None => self.stats.drop(DropReason::PoolEmpty, None, 1),
                    }
                }
                DpOp::Controller(reason) => {
                    to_controller(self.bridge, self.in_port, *reason, &pkt);
                    self.stats.drop(DropReason::Controller, None, 1);
                    if consume {
                        return;
                    }
                }
                DpOp::SetTunnel(t) => self.tun = *t,
                DpOp::Ct(ct) => {
                    let Some(p) = self.conntrack(ct, pkt) else {
                        return;
                    };
                    pkt = p;
                    self.prior = (self.last_ct.state, self.last_ct.zone);
                    if let Some((_, carry)) = &ct.recirc {
                        let (outcome, carry) = (self.last_ct, *carry);
                        if consume {
                            self.recirc(&carry, &outcome, pkt);
                            return;
                        }
                        match pkt.deep_copy() {
                            Some(c) => self.recirc(&carry, &outcome, c),
                            None => self.stats.drop(DropReason::PoolEmpty, None, 1),
                        }
                    }
                }
                DpOp::Learn(l) => self.learn(l),
                _ => {
                    if !rewrite::apply(&mut pkt, op) {
                        self.stats
                            .drop(DropReason::PoolEmpty, Some(self.in_slot), 1);
                        return;
                    }
                }
            }
        }
    }

    fn learn(&self, l: &Arc<crate::flow::xlate::LearnOp>) {
        if l.due(self.now) {
            // Full: the control thread is behind; the next second's
            // packets ask again.
            let _ = self.bridge.flows.learned.try_send(l.clone());
        }
    }

    /// What `ct` asks of the tracker for the packet being run.
    fn ct_request<'c>(&self, ct: &'c CtOp) -> CtRequest<'c> {
        CtRequest {
            zone: ct.zone,
            commit: ct.commit,
            force: ct.force,
            nat: ct.nat.as_ref(),
            set_mark: ct.set_mark,
            set_label: ct.set_label,
            counter: ct.counter.as_ref().map(|c| &c.0),
            natted: self.prior.0 & (state::SNAT | state::DNAT) != 0 && self.prior.1 == ct.zone,
        }
    }

    /// Runs the packet through the tracker and applies its NAT; None when
    /// the packet was dropped.
    fn conntrack(&mut self, ct: &CtOp, mut pkt: P) -> Option<P> {
        let req = self.ct_request(ct);
        // Straight into last_ct: what the caller reads next.
        self.snap.ct.process_with(
            pkt.data(),
            &req,
            self.now as u64 * 1_000_000_000,
            &mut self.ct_memo,
            &mut self.last_ct,
        );
        if let Some(rw) = &self.last_ct.rewrite {
            if !nat::apply(&mut pkt, rw) {
                self.stats
                    .drop(DropReason::Malformed, Some(self.in_slot), 1);
                return None;
            }
        }
        Some(pkt)
    }

    /// Runs a packet back through the tables after `ct(table=...)`, with
    /// what the tracker said in its key.
    fn recirc(&mut self, carry: &FlowKey, out: &Outcome, pkt: P) {
        if self.depth >= MAX_RECIRC {
            self.stats
                .drop(DropReason::RecursionLimit, Some(self.in_slot), 1);
            return;
        }
        self.stats.recirculations.add(1);
        let mut key = FlowKey::default();
        if !self.recirc_key(carry, out, &pkt, &mut key) {
            return;
        }
        let xl = self.recirc_xlate(&key);
        credit(&xl, 1, pkt.wire_len() as u64, self.now);
        if let Some(r) = xl.drop {
            self.stats.drop(r, Some(self.in_slot), 1);
            return;
        }
        self.depth += 1;
        let saved = (self.tun, self.prior);
        self.prior = (out.state, out.zone);
        self.run(&xl.ops, xl.last_consumer, pkt);
        (self.tun, self.prior) = saved;
        self.depth -= 1;
    }

    /// The key of a packet recirculated after ct: parsed again (NAT may
    /// have changed it), with the pipeline state `carry` holds (in_port,
    /// tunnel, metadata, registers, the table) and what ct said. False
    /// (and counted) when the packet no longer parses.
    fn recirc_key(&self, carry: &FlowKey, out: &Outcome, pkt: &P, key: &mut FlowKey) -> bool {
        let tun = TunnelMeta {
            id: carry.get(Field::TunId),
            src: carry.get(Field::TunSrc) as u32,
            dst: carry.get(Field::TunDst) as u32,
        };
        let tun = (tun != TunnelMeta::default()).then_some(tun);
        if extract_into(
            pkt.data(),
            carry.get(Field::InPort) as u32,
            tun.as_ref(),
            key,
        )
        .is_err()
        {
            self.stats
                .drop(DropReason::Malformed, Some(self.in_slot), 1);
            return false;
        }
        let (meta_word, _, _) = Field::Metadata.place();
        key.w[PACKET_WORDS..meta_word].fill(0);
        key.w[meta_word..].copy_from_slice(&carry.w[meta_word..]);
        key.set(Field::RecircTable, carry.get(Field::RecircTable));
        key.set(Field::CtState, out.state as u64);
        key.set(Field::CtZone, out.zone as u64);
        key.set(Field::CtMark, out.mark as u64);
        key.set(Field::CtLabel, out.label as u64);
        if let Some(o) = out.orig {
            key.set(Field::CtNwProto, o.proto as u64);
            key.set(Field::CtNwSrc, o.src as u64);
            key.set(Field::CtNwDst, o.dst as u64);
            key.set(Field::CtTpSrc, o.sport as u64);
            key.set(Field::CtTpDst, o.dport as u64);
        }
        true
    }

    /// The translation of a recirculated key, from the recirculation
    /// caches or the tables.
    fn recirc_xlate(&mut self, key: &FlowKey) -> Arc<Xlate> {
        let stamp = (self.pipe.generation, self.snap.version);
        if let Some(x) = self.rcache.get(key, stamp) {
            return x;
        }
        let (x, fresh) = match self.rcache.mega.lookup(key, stamp) {
            Some(x) => (x.clone(), false),
            None => {
                let x = Arc::new(translate_recirc(self.pipe, self.bridge, self.in_slot, key));
                self.rcache.mega.insert(key, stamp, x.clone());
                (x, true)
            }
        };
        if !x.volatile && (fresh || self.rcache.promote()) {
            self.rcache.insert(*key, stamp, x.clone());
        }
        x
    }

    fn hand_on(&mut self, op: &DpOp, pkt: P) {
        match op {
            DpOp::Output(slot) => {
                let slot = *slot;
                let queued = match self.snap.port(slot) {
                    None => {
                        self.stats.drop(DropReason::NoPort, None, 1);
                        return;
                    }
                    Some(p) if p.tunnel => self.tx.push_tunnel(slot, pkt, self.tun),
                    Some(_) => self.tx.push(slot, pkt),
                };
                if queued.is_err() {
                    self.stats.tx_drop(DropReason::TxFull, slot, 1);
                }
            }
            DpOp::Normal => {
                if self.normal.is_none() {
                    self.normal = Normal::new(self.snap, self.in_slot, self.now);
                }
                match self.normal.as_mut() {
                    Some(n) => n.forward(pkt, self.stats, self.tx),
                    None => self.stats.drop(DropReason::NoPort, None, 1),
                }
            }
            DpOp::Clone(sub) => {
                let last = sub.iter().rposition(DpOp::consumes);
                let saved = self.tun;
                self.run(sub, last, pkt);
                self.tun = saved;
            }
            DpOp::FastFailover(alts) => {
                let live = alts.iter().find(|(watch, _)| {
                    watch.is_some_and(|s| self.snap.port(s).is_some_and(|p| !p.dev.tx_down()))
                });
                match live {
                    Some((_, sub)) => {
                        let last = sub.iter().rposition(DpOp::consumes);
                        let saved = self.tun;
                        self.run(sub, last, pkt);
                        self.tun = saved;
                    }
                    None => self.stats.drop(DropReason::FlowDrop, Some(self.in_slot), 1),
                }
            }
            _ => {}
        }
    }
}
