//! A packet described in ovs-ofctl's flow syntax (`in_port=1,tcp,
//! nw_dst=10.0.0.1,tp_dst=80`), as `ovs-appctl ofproto/trace` takes it.
//! Every field named gets its exact value; the rest stay zero.
use rvs_dataplane::flow::extract::VLAN_CFI;
use rvs_dataplane::flow::key::{Field, FlowKey};

fn num(v: &str) -> Result<u64, String> {
    let r = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| format!("{v:?} is not a number"))
}

fn mac(v: &str) -> Result<u64, String> {
    let b: Vec<&str> = v.split(':').collect();
    if b.len() != 6 {
        return Err(format!("{v:?} is not a MAC address"));
    }
    b.iter().try_fold(0u64, |a, x| {
        u8::from_str_radix(x, 16)
            .map(|o| a << 8 | o as u64)
            .map_err(|_| format!("{v:?} is not a MAC address"))
    })
}

fn ip(v: &str) -> Result<u64, String> {
    v.parse::<std::net::Ipv4Addr>()
        .map(|a| u32::from(a) as u64)
        .map_err(|_| format!("{v:?} is not an IPv4 address"))
}

/// Parses a flow; an unknown field or bad value is an error naming it.
pub fn parse(text: &str) -> Result<FlowKey, String> {
    let mut k = FlowKey::default();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, v) = item.split_once('=').unwrap_or((item, ""));
        let set_proto = |k: &mut FlowKey, t: u64, p: Option<u64>| {
            k.set(Field::DlType, t);
            if let Some(p) = p {
                k.set(Field::NwProto, p);
            }
        };
        match name {
            "ip" => set_proto(&mut k, 0x800, None),
            "tcp" => set_proto(&mut k, 0x800, Some(6)),
            "udp" => set_proto(&mut k, 0x800, Some(17)),
            "icmp" => set_proto(&mut k, 0x800, Some(1)),
            "arp" => set_proto(&mut k, 0x806, None),
            "in_port" => k.set(Field::InPort, num(v)?),
            "dl_src" | "eth_src" => k.set(Field::DlSrc, mac(v)?),
            "dl_dst" | "eth_dst" => k.set(Field::DlDst, mac(v)?),
            "dl_type" | "eth_type" => k.set(Field::DlType, num(v)?),
            "dl_vlan" => {
                let cur = k.get(Field::VlanTci);
                k.set(
                    Field::VlanTci,
                    (cur & 0xe000) | VLAN_CFI as u64 | (num(v)? & 0xfff),
                );
            }
            "dl_vlan_pcp" => {
                let cur = k.get(Field::VlanTci);
                k.set(
                    Field::VlanTci,
                    (cur & 0x0fff) | VLAN_CFI as u64 | (num(v)? & 7) << 13,
                );
            }
            "vlan_tci" => k.set(Field::VlanTci, num(v)?),
            "nw_src" | "ip_src" | "arp_spa" => k.set(Field::NwSrc, ip(v)?),
            "nw_dst" | "ip_dst" | "arp_tpa" => k.set(Field::NwDst, ip(v)?),
            "nw_proto" | "ip_proto" | "arp_op" => k.set(Field::NwProto, num(v)?),
            "nw_tos" => k.set(Field::NwTos, num(v)? & 0xfc),
            "nw_ttl" => k.set(Field::NwTtl, num(v)?),
            "tp_src" | "tcp_src" | "udp_src" | "icmp_type" => k.set(Field::TpSrc, num(v)?),
            "tp_dst" | "tcp_dst" | "udp_dst" | "icmp_code" => k.set(Field::TpDst, num(v)?),
            "tcp_flags" => k.set(Field::TcpFlags, num(v)?),
            "arp_sha" => k.set(Field::ArpSha, mac(v)?),
            "arp_tha" => k.set(Field::ArpTha, mac(v)?),
            "tun_id" => k.set(Field::TunId, num(v)?),
            "tun_src" => k.set(Field::TunSrc, ip(v)?),
            "tun_dst" => k.set(Field::TunDst, ip(v)?),
            "metadata" => k.set(Field::Metadata, num(v)?),
            r if r.starts_with("reg") => {
                let n: u8 = r[3..]
                    .parse()
                    .ok()
                    .filter(|n| *n < 16)
                    .ok_or_else(|| format!("unknown field {r:?}"))?;
                k.set(Field::Reg(n), num(v)?);
            }
            other => return Err(format!("unknown field {other:?}")),
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_fields() {
        let k = parse("in_port=3,tcp,nw_dst=10.0.0.1,tp_dst=80,dl_vlan=5,reg2=0x10").unwrap();
        assert_eq!(k.get(Field::InPort), 3);
        assert_eq!((k.get(Field::DlType), k.get(Field::NwProto)), (0x800, 6));
        assert_eq!(k.get(Field::NwDst), 0x0a00_0001);
        assert_eq!(k.get(Field::TpDst), 80);
        assert_eq!(k.get(Field::VlanTci), 0x1005);
        assert_eq!(k.get(Field::Reg(2)), 0x10);
        assert_eq!(parse("bogus=1").unwrap_err(), "unknown field \"bogus\"");
        assert!(parse("dl_dst=1:2").unwrap_err().contains("not a MAC"));
    }
}
