//! The ovs-appctl dpctl/ commands of the connection tracker, in OVS's
//! formats: dump-conntrack, flush-conntrack, ct-stats-show,
//! ct-set-maxconns, ct-get-maxconns, ct-get-nconns; and
//! rvs/ct-set-timeout for the per-state timeouts.
use crate::unixctl::Commands;
use rvs_dataplane::conntrack::{Conn, Conntrack};
use rvs_dataplane::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The arguments after an optional datapath name (`netdev@ovs-netdev`),
/// and the zone a `zone=N` among them asks for.
fn zone_arg(args: &[String]) -> Result<(Option<u16>, Vec<&str>), String> {
    let mut zone = None;
    let mut rest = Vec::new();
    for a in args.iter().filter(|a| !a.contains('@')) {
        match a.strip_prefix("zone=") {
            Some(z) => {
                zone = Some(
                    z.parse::<u16>()
                        .map_err(|_| format!("invalid zone: {z:?} (0-65535)"))?,
                )
            }
            None => rest.push(a.as_str()),
        }
    }
    Ok((zone, rest))
}

fn tuple(proto: u8, src: u32, dst: u32, sport: u16, dport: u16, icmp_type: u8) -> String {
    let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
    if proto == PROTO_ICMP {
        format!("src={s},dst={d},id={sport},type={icmp_type},code=0")
    } else {
        format!("src={s},dst={d},sport={sport},dport={dport}")
    }
}

/// One connection as `ovs-appctl dpctl/dump-conntrack` prints it.
pub fn format_conn(c: &Conn) -> String {
    let o = c.orig;
    let r = c.reply;
    let name = match o.proto {
        PROTO_TCP => "tcp".to_string(),
        PROTO_UDP => "udp".to_string(),
        PROTO_ICMP => "icmp".to_string(),
        p => format!("proto={p}"),
    };
    let reply_type = if o.proto == PROTO_ICMP && c.icmp_type == 8 {
        0
    } else {
        c.icmp_type
    };
    let mut s = format!(
        "{name},orig=({}),reply=({})",
        tuple(o.proto, o.src, o.dst, o.sport, o.dport, c.icmp_type),
        tuple(r.proto, r.src, r.dst, r.sport, r.dport, reply_type)
    );
    if o.zone != 0 {
        let _ = write!(s, ",zone={}", o.zone);
    }
    let st = c.st.lock().unwrap_or_else(|p| p.into_inner());
    if st.mark != 0 {
        let _ = write!(s, ",mark={}", st.mark);
    }
    if st.label != 0 {
        let _ = write!(s, ",labels={:#x}", st.label);
    }
    if let Some(t) = &st.tcp {
        let _ = write!(s, ",protoinfo=(state={})", t.state.name());
    }
    s
}

pub fn register(
    cmds: &mut Commands,
    ct: Arc<Conntrack>,
    now_ns: Arc<dyn Fn() -> u64 + Send + Sync>,
) {
    let (c, now) = (ct.clone(), now_ns.clone());
    cmds.add(
        "dpctl/dump-conntrack",
        "[dp] [zone=N]",
        0,
        3,
        Box::new(move |a| {
            let (zone, _) = zone_arg(a)?;
            c.sweep(now());
            let mut out = String::new();
            for conn in c.dump(zone) {
                out += &format_conn(&conn);
                out += "\n";
            }
            Ok(out)
        }),
    );
    let c = ct.clone();
    cmds.add(
        "dpctl/flush-conntrack",
        "[dp] [zone=N]",
        0,
        3,
        Box::new(move |a| {
            let (zone, _) = zone_arg(a)?;
            c.flush(zone);
            Ok(String::new())
        }),
    );
    let (c, now) = (ct.clone(), now_ns.clone());
    cmds.add(
        "dpctl/ct-stats-show",
        "[dp] [zone=N]",
        0,
        3,
        Box::new(move |a| {
            let (zone, _) = zone_arg(a)?;
            c.sweep(now());
            let all = c.dump(zone);
            let n = |p: u8| all.iter().filter(|x| x.orig.proto == p).count();
            let st = &c.stats;
            let g = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
            Ok(format!(
                "Connections Stats:\n\tTotal: {}\n\tTCP: {}\n\tUDP: {}\n\tICMP: {}\n\
                 Tracker:\n\tcreated: {}\n\texpired: {}\n\tevicted: {}\n\trefused (table full): {}\n\
                 \tinvalid: {}\n\tnat exhausted: {}\n\tlimit: {}\n",
                all.len(),
                n(PROTO_TCP),
                n(PROTO_UDP),
                n(PROTO_ICMP),
                g(&st.created),
                g(&st.expired),
                g(&st.evicted),
                g(&st.full),
                g(&st.invalid),
                g(&st.nat_exhausted),
                c.limit.load(Ordering::Relaxed)
            ))
        }),
    );
    let c = ct.clone();
    cmds.add(
        "dpctl/ct-set-maxconns",
        "[dp] maxconns",
        1,
        2,
        Box::new(move |a| {
            let (_, rest) = zone_arg(a)?;
            let n = rest
                .first()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or("maxconns must be a number greater than 0")?;
            c.limit.store(n, Ordering::Relaxed);
            Ok("setting maxconns successful\n".into())
        }),
    );
    let c = ct.clone();
    cmds.add(
        "dpctl/ct-get-maxconns",
        "[dp]",
        0,
        1,
        Box::new(move |_| Ok(format!("{}\n", c.limit.load(Ordering::Relaxed)))),
    );
    let c = ct.clone();
    cmds.add(
        "dpctl/ct-get-nconns",
        "[dp]",
        0,
        1,
        Box::new(move |_| Ok(format!("{}\n", c.len()))),
    );
    let c = ct;
    cmds.add(
        "rvs/ct-set-timeout",
        "tcp-syn|tcp-established|tcp-closing|udp-first|udp-multiple|icmp SECONDS",
        2,
        2,
        Box::new(move |a| {
            let secs = a[1]
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("timeout {:?} is not a number of seconds", a[1]))?;
            if !c.timeouts.set(&a[0], secs) {
                return Err(format!(
                    "unknown timeout {:?} (tcp-syn, tcp-established, tcp-closing, udp-first, udp-multiple, icmp)",
                    a[0]
                ));
            }
            Ok("OK\n".into())
        }),
    );
}
