//! The ovs-appctl commands of the tunnel underlay, with OVS's names and
//! output: ovs/route/{add,del,show,lookup}, tnl/neigh/{show,flush,set,
//! aging} (and their tnl/arp/ aliases), and rvs/tunnel/show for per-port
//! and per-key tunnel statistics.
use super::Underlay;
use crate::reconcile::Reconciler;
use crate::unixctl::Commands;
use rvs_dataplane::packet::PacketBuf;
use rvs_dataplane::snapshot::Switch;
use rvs_dataplane::stats::DropReason;
use rvs_dataplane::tunnel::state::EncapPlan;
use rvs_dataplane::tunnel::stats::untag;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

pub fn register<P: PacketBuf + 'static>(
    cmds: &mut Commands,
    ul: Arc<Underlay>,
    sw: Arc<Switch<P>>,
    rec: Arc<Mutex<Reconciler<P>>>,
) {
    let republish = {
        let rec = rec.clone();
        Arc::new(move || {
            if let Ok(mut r) = rec.lock() {
                r.publish_tunnels();
            }
        })
    };
    let (u, rp) = (ul.clone(), republish.clone());
    cmds.add(
        "ovs/route/add",
        "ip/plen output_bridge [gw]",
        2,
        3,
        Box::new(move |a| {
            u.route_add(&a[0], &a[1], a.get(2).map(String::as_str))?;
            rp();
            Ok("OK\n".into())
        }),
    );
    let (u, rp) = (ul.clone(), republish.clone());
    cmds.add(
        "ovs/route/del",
        "ip/plen",
        1,
        1,
        Box::new(move |a| {
            u.route_del(&a[0])?;
            rp();
            Ok("OK\n".into())
        }),
    );
    let u = ul.clone();
    cmds.add(
        "ovs/route/show",
        "",
        0,
        0,
        Box::new(move |_| Ok(u.route_show())),
    );
    let u = ul.clone();
    cmds.add(
        "ovs/route/lookup",
        "ip_addr",
        1,
        1,
        Box::new(move |a| u.route_lookup(&a[0])),
    );
    for pre in ["tnl/neigh", "tnl/arp"] {
        let u = ul.clone();
        cmds.add(
            &format!("{pre}/show"),
            "",
            0,
            0,
            Box::new(move |_| Ok(u.neigh_show())),
        );
        let (u, rp) = (ul.clone(), republish.clone());
        cmds.add(
            &format!("{pre}/flush"),
            "",
            0,
            0,
            Box::new(move |_| {
                u.neigh_flush();
                rp();
                Ok("OK\n".into())
            }),
        );
        let (u, rp) = (ul.clone(), republish.clone());
        cmds.add(
            &format!("{pre}/set"),
            "BRIDGE IP MAC",
            3,
            3,
            Box::new(move |a| {
                u.neigh_set(&a[0], &a[1], &a[2])?;
                rp();
                Ok("OK\n".into())
            }),
        );
        let u = ul.clone();
        cmds.add(
            &format!("{pre}/aging"),
            "[SECS]",
            0,
            1,
            Box::new(move |a| u.neigh_aging(a.first().map(String::as_str))),
        );
    }
    cmds.add(
        "rvs/tunnel/show",
        "",
        0,
        0,
        Box::new(move |_| Ok(tunnel_show(&sw, &rec))),
    );
}

const TUNNEL_DROPS: [DropReason; 9] = [
    DropReason::TunnelNoRoute,
    DropReason::TunnelNoNeighbor,
    DropReason::MtuExceeded,
    DropReason::TunnelUnknownKey,
    DropReason::TunnelBadFlags,
    DropReason::TunnelBadChecksum,
    DropReason::TunnelMalformed,
    DropReason::SplitHorizon,
    DropReason::TunnelPeerDenied,
];

fn tunnel_show<P: PacketBuf + 'static>(sw: &Switch<P>, rec: &Mutex<Reconciler<P>>) -> String {
    let mut out = String::new();
    let snap = sw.snap.load();
    let st = snap.tnl.load();
    let name_of = |slot: u16| {
        snap.port(slot)
            .map(|p| p.name.to_string())
            .unwrap_or_else(|| format!("slot {slot}"))
    };
    if let Ok(r) = rec.lock() {
        for lp in r.ports.values() {
            let Some(c) = &lp.tunnel else { continue };
            let t = r.port_stats(lp);
            let _ = writeln!(
                out,
                "{} (bridge {}, ofport {}): {}",
                lp.spec.name,
                lp.spec.bridge,
                lp.ofport,
                c.describe()
            );
            match st.ports.get(&lp.slot).map(|p| &p.plan) {
                Some(EncapPlan::Ready { out_slot, mtu, .. }) => {
                    let _ = writeln!(
                        out,
                        "  sends via {} (underlay mtu {mtu})",
                        name_of(*out_slot)
                    );
                }
                Some(EncapPlan::Dynamic) => {
                    let _ = writeln!(out, "  sends to the flow's tun_dst");
                }
                Some(EncapPlan::Unresolved(why)) => {
                    let _ = writeln!(out, "  cannot send: {}", why.name());
                }
                None => {}
            }
            let _ = writeln!(
                out,
                "  encapsulated: {} packets, {} bytes; decapsulated: {} packets, {} bytes; tx dropped: {}",
                t.tx_packets, t.tx_bytes, t.rx_packets, t.rx_bytes, t.tx_dropped
            );
        }
    }
    let mut keys: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for p in &sw.pmds {
        for (tag, e, d, x) in p.stats.tunnels.rows() {
            let k = keys.entry(tag).or_default();
            k.0 += e;
            k.1 += d;
            k.2 += x;
        }
    }
    let _ = writeln!(out, "keys:");
    for (tag, (e, d, x)) in keys {
        let what = match untag(tag) {
            Some((kind, key)) => format!("{} key {key}", kind.name()),
            None => "other keys".into(),
        };
        let _ = writeln!(
            out,
            "  {what}: encapsulated {e}, decapsulated {d}, dropped {x}"
        );
    }
    let _ = writeln!(out, "drops:");
    for r in TUNNEL_DROPS {
        let n: u64 = sw
            .pmds
            .iter()
            .map(|p| p.stats.drops[r as usize].get())
            .sum();
        let _ = writeln!(out, "  {}: {n}", r.name());
    }
    out
}
