//! `ovs-appctl rvs/service/show` (and `rvsctl show`): every rule with the
//! counters of the flows it compiled to, per backend for load balancers,
//! and the gateway's neighbours and drops.
use super::compile::{self, cookie, mark, T_LBPICK, T_NEIGH, T_SVC};
use super::spec::{fmt_ip, fmt_mac, fmt_ports, BridgeServices, Services};
use super::BridgeHandle;
use rvs_dataplane::flow::rule::Rule;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

#[derive(Default, Clone, Copy)]
struct Count {
    packets: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, r: &Rule) {
        let (p, b) = r.stats.get();
        self.packets += p;
        self.bytes += b;
    }
}

/// Sums of one cookie's flows: new connections (the flows that commit
/// them) and all packets in tracked tables.
#[derive(Default, Clone, Copy)]
struct RuleCount {
    new: Count,
    all: Count,
    refused: Count,
}

fn counts(rules: &[Arc<Rule>]) -> BTreeMap<u64, RuleCount> {
    let mut out: BTreeMap<u64, RuleCount> = BTreeMap::new();
    for r in rules {
        if compile::cookie_kind(r.cookie).is_none() || r.table == 0 {
            continue;
        }
        let c = out.entry(r.cookie).or_default();
        let commits = r
            .actions
            .iter()
            .any(|a| matches!(a, rvs_dataplane::flow::action::Action::Ct(ct) if ct.commit));
        if r.table == T_SVC && r.priority == 40 {
            c.refused.add(r);
            continue;
        }
        if commits {
            c.new.add(r);
        }
        if r.table == T_SVC || (r.table == T_LBPICK && r.priority == 10) {
            c.all.add(r);
        }
    }
    out
}

fn line(out: &mut String, indent: &str, what: &str, c: &RuleCount) {
    let _ = writeln!(
        out,
        "{indent}{what}: {} connections, {} packets, {} bytes",
        c.new.packets, c.all.packets, c.all.bytes
    );
}

pub fn render(
    config: &Services,
    applied: &BTreeMap<String, BridgeServices>,
    failures: &BTreeMap<String, String>,
    bridges: &[BridgeHandle],
) -> String {
    let mut out = String::new();
    for e in &config.errors {
        let _ = writeln!(out, "error: {e}");
    }
    for (name, flows) in bridges {
        let Some(b) = applied.get(name) else { continue };
        let Some(g) = &b.gateway else { continue };
        let t = flows.tables.lock().unwrap_or_else(|e| e.into_inner());
        let rules: Vec<Arc<Rule>> = t.rules().cloned().collect();
        let neigh = super::install::neighbours(&t);
        drop(t);
        let by = counts(&rules);
        let get = |kind, mk| by.get(&cookie(kind, mk)).copied().unwrap_or_default();
        let addrs: Vec<String> = g
            .addresses
            .iter()
            .map(|&(a, p)| format!("{}/{p}", fmt_ip(a)))
            .collect();
        let _ = writeln!(
            out,
            "bridge {name}: gateway {} {} zone {}{}",
            fmt_mac(g.mac),
            addrs.join(" "),
            g.zone,
            g.upstream
                .map(|u| format!(" upstream {}", fmt_ip(u)))
                .unwrap_or_default()
        );
        if let Some(f) = failures.get(name) {
            let _ = writeln!(out, "  not installed: {f}");
        }
        let gw = get(compile::KIND_GATEWAY, 0);
        let stat = |table: u8, prio: u16| {
            rules
                .iter()
                .filter(|r| {
                    r.table == table
                        && r.priority == prio
                        && r.cookie == cookie(compile::KIND_GATEWAY, 0)
                })
                .map(|r| r.stats.get().0)
                .sum::<u64>()
        };
        let _ = writeln!(
            out,
            "  routed without translation: {} connections; dropped: {} invalid, {} no neighbour",
            gw.new.packets,
            stat(T_SVC, 100),
            stat(T_NEIGH, 0)
        );
        for (ip, mac) in &neigh {
            let _ = writeln!(out, "  neighbour {} {}", fmt_ip(*ip), fmt_mac(*mac));
        }
        for n in &b.nats {
            let c = get(compile::KIND_NAT, mark(n.id, 0));
            line(
                &mut out,
                "  ",
                &format!(
                    "static-nat {} <-> {} (mark {:#x})",
                    fmt_ip(n.public),
                    fmt_ip(n.private),
                    mark(n.id, 0)
                ),
                &c,
            );
        }
        for p in &b.forwards {
            let c = get(compile::KIND_PF, mark(p.id, 0));
            line(
                &mut out,
                "  ",
                &format!(
                    "port-forward {} {} {} -> {}:{} (mark {:#x})",
                    fmt_ip(p.public),
                    p.proto.name(),
                    fmt_ports(p.public_ports),
                    fmt_ip(p.private),
                    fmt_ports(p.private_ports),
                    mark(p.id, 0)
                ),
                &c,
            );
        }
        for lb in &b.balancers {
            let mut total = RuleCount::default();
            for be in &lb.backends {
                let c = get(compile::KIND_LB, mark(lb.id, be.index));
                for (t, s) in [(&mut total.new, c.new), (&mut total.all, c.all)] {
                    t.packets += s.packets;
                    t.bytes += s.bytes;
                }
            }
            let sticky = if lb.stickiness > 0 {
                format!(" sticky {}s", lb.stickiness)
            } else {
                String::new()
            };
            line(
                &mut out,
                "  ",
                &format!(
                    "load-balancer {} {}:{} {} {}{sticky} on-remove {} (group {:#x})",
                    lb.name,
                    fmt_ip(lb.vip),
                    lb.port,
                    lb.proto.name(),
                    lb.algorithm.name(),
                    lb.on_remove.name(),
                    compile::group_id(lb)
                ),
                &total,
            );
            for be in &lb.backends {
                let c = get(compile::KIND_LB, mark(lb.id, be.index));
                line(
                    &mut out,
                    "    ",
                    &format!(
                        "backend {}:{} weight {} (mark {:#x})",
                        fmt_ip(be.ip),
                        be.port,
                        be.weight,
                        mark(lb.id, be.index)
                    ),
                    &c,
                );
            }
        }
        let refused: u64 = by.values().map(|c| c.refused.packets).sum();
        let _ = writeln!(
            out,
            "  refused (no rule for the port): {refused} connections"
        );
    }
    if out.is_empty() {
        out.push_str("no services configured\n");
    }
    out
}
