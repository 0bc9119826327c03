//! A tunnel interface's configuration, parsed from its Interface row's
//! `type` and `options` with OVS's names and defaults. A bad value is
//! refused naming the option, so the row's `error` column says what to fix.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    Gre,
    Vxlan,
}

impl TunnelKind {
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Gre => "gre",
            TunnelKind::Vxlan => "vxlan",
        }
    }

    /// Largest key the header carries.
    pub fn max_key(self) -> u64 {
        match self {
            TunnelKind::Gre => u32::MAX as u64,
            TunnelKind::Vxlan => 0xff_ffff,
        }
    }
}

/// A value fixed by the interface, or taken from the flow (`flow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param<T> {
    Fixed(T),
    Flow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConf {
    pub kind: TunnelKind,
    /// Remote endpoint (IPv4, host order).
    pub remote: Param<u32>,
    /// Local endpoint; None: whichever address the route gives.
    pub local: Option<Param<u32>>,
    /// Key packets must carry to be received here (absent counts as 0).
    pub in_key: Param<u64>,
    /// Key sent; None: GRE without a key field (VXLAN sends VNI 0).
    pub out_key: Option<Param<u64>>,
    /// UDP destination port (VXLAN).
    pub dst_port: u16,
    /// GRE checksum on sent packets.
    pub csum: bool,
    pub ttl: u8,
    pub tos: u8,
    /// Don't-fragment on the outer header (OVS's df_default, true).
    pub df: bool,
}

/// Options this rvs reads; others are accepted and ignored with a warning
/// by the caller (OVS ignores what a tunnel type does not use).
pub const KNOWN_OPTIONS: &[&str] = &[
    "remote_ip",
    "local_ip",
    "key",
    "in_key",
    "out_key",
    "dst_port",
    "csum",
    "ttl",
    "tos",
    "df_default",
];

impl TunnelConf {
    /// Parses a `gre` or `vxlan` interface's options.
    pub fn from_options(kind: &str, opts: &BTreeMap<String, String>) -> Result<TunnelConf, String> {
        let kind = match kind {
            "gre" => TunnelKind::Gre,
            "vxlan" => TunnelKind::Vxlan,
            k => return Err(format!("'{k}' is not a tunnel type (gre, vxlan)")),
        };
        let get = |k: &str| opts.get(k).map(String::as_str);
        let remote = match get("remote_ip") {
            None | Some("") => {
                return Err(format!(
                    "{} tunnel needs options:remote_ip (an IPv4 address or 'flow')",
                    kind.name()
                ))
            }
            Some(v) => ip_param("remote_ip", v)?,
        };
        let local = get("local_ip")
            .map(|v| ip_param("local_ip", v))
            .transpose()?;
        let key = get("key").map(|v| key_param("key", v, kind)).transpose()?;
        let in_key = match get("in_key") {
            Some(v) => key_param("in_key", v, kind)?,
            None => key.unwrap_or(Param::Fixed(0)),
        };
        let out_key = match get("out_key") {
            Some(v) => Some(key_param("out_key", v, kind)?),
            None => key,
        };
        let dst_port = match get("dst_port") {
            None => crate::wire::vxlan::DEFAULT_PORT,
            Some(_) if kind == TunnelKind::Gre => {
                return Err("options:dst_port applies to vxlan tunnels only".into())
            }
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("options:dst_port={v:?} is not a UDP port (1-65535)"))?,
        };
        let csum = match get("csum") {
            None => false,
            Some("true") => true,
            Some("false") => false,
            Some(v) => return Err(format!("options:csum={v:?} is not 'true' or 'false'")),
        };
        let df = match get("df_default") {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => return Err(format!("options:df_default={v:?} is not 'true' or 'false'")),
        };
        let ttl = match get("ttl") {
            None => 64,
            Some(v) => v
                .parse::<u8>()
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| format!("options:ttl={v:?} is not a number from 1 to 255"))?,
        };
        let tos = match get("tos") {
            None => 0,
            Some(v) => v
                .parse::<u8>()
                .ok()
                .ok_or_else(|| format!("options:tos={v:?} is not a number from 0 to 255"))?,
        };
        Ok(TunnelConf {
            kind,
            remote,
            local,
            in_key,
            out_key,
            dst_port: if kind == TunnelKind::Gre { 0 } else { dst_port },
            csum,
            ttl,
            tos,
            df,
        })
    }

    /// The fixed remote endpoint, if any.
    pub fn remote_ip(&self) -> Option<u32> {
        match self.remote {
            Param::Fixed(ip) => Some(ip),
            Param::Flow => None,
        }
    }

    /// What `ovs-vsctl list interface` users expect to read back in
    /// `status`: tunnel_egress_iface and friends are added by the caller.
    pub fn describe(&self) -> String {
        let p = |x: &Param<u32>| match x {
            Param::Fixed(ip) => Ipv4Addr::from(*ip).to_string(),
            Param::Flow => "flow".into(),
        };
        let k = |x: &Param<u64>| match x {
            Param::Fixed(v) => v.to_string(),
            Param::Flow => "flow".into(),
        };
        let mut s = format!("{} remote_ip={}", self.kind.name(), p(&self.remote));
        if let Some(l) = &self.local {
            s += &format!(" local_ip={}", p(l));
        }
        s += &format!(" in_key={}", k(&self.in_key));
        match &self.out_key {
            Some(o) => s += &format!(" out_key={}", k(o)),
            None => s += " out_key=none",
        }
        if self.kind == TunnelKind::Vxlan {
            s += &format!(" dst_port={}", self.dst_port);
        }
        if self.csum {
            s += " csum=true";
        }
        s
    }
}

fn ip_param(name: &str, v: &str) -> Result<Param<u32>, String> {
    if v == "flow" {
        return Ok(Param::Flow);
    }
    if v.contains(':') {
        return Err(format!(
            "options:{name}={v}: IPv6 tunnel endpoints are not supported by rvs (use IPv4)"
        ));
    }
    v.parse::<Ipv4Addr>()
        .map(|a| Param::Fixed(u32::from(a)))
        .map_err(|_| format!("options:{name}={v:?} is not an IPv4 address or 'flow'"))
}

fn key_param(name: &str, v: &str, kind: TunnelKind) -> Result<Param<u64>, String> {
    if v == "flow" {
        return Ok(Param::Flow);
    }
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse::<u64>(),
    }
    .map_err(|_| format!("options:{name}={v:?} is not a number or 'flow'"))?;
    if n > kind.max_key() {
        return Err(format!(
            "options:{name}={v} does not fit a {} key (at most {})",
            kind.name(),
            kind.max_key()
        ));
    }
    Ok(Param::Fixed(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cloudstack_gre_port() {
        let c =
            TunnelConf::from_options("gre", &opts(&[("key", "1001"), ("remote_ip", "10.0.0.2")]))
                .unwrap();
        assert_eq!(c.kind, TunnelKind::Gre);
        assert_eq!(c.remote, Param::Fixed(0x0a00_0002));
        assert_eq!(c.in_key, Param::Fixed(1001));
        assert_eq!(c.out_key, Some(Param::Fixed(1001)));
        assert_eq!(c.local, None);
        assert_eq!((c.ttl, c.df, c.csum), (64, true, false));
    }

    #[test]
    fn keys_split_flow_and_defaults() {
        let c = TunnelConf::from_options(
            "vxlan",
            &opts(&[
                ("remote_ip", "flow"),
                ("in_key", "flow"),
                ("out_key", "0x10"),
                ("dst_port", "8472"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.remote, c.in_key, c.out_key),
            (Param::Flow, Param::Flow, Some(Param::Fixed(16)))
        );
        assert_eq!(c.dst_port, 8472);
        let c = TunnelConf::from_options("vxlan", &opts(&[("remote_ip", "1.2.3.4")])).unwrap();
        assert_eq!(
            (c.in_key, c.out_key, c.dst_port),
            (Param::Fixed(0), None, 4789)
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = |k: &str, kv: &[(&str, &str)]| TunnelConf::from_options(k, &opts(kv)).unwrap_err();
        assert!(e("gre", &[]).contains("options:remote_ip"));
        assert!(e("gre", &[("remote_ip", "10.0.0")]).contains("options:remote_ip=\"10.0.0\""));
        assert!(e("gre", &[("remote_ip", "fe80::1")]).contains("IPv6"));
        assert!(e("vxlan", &[("remote_ip", "1.1.1.1"), ("key", "16777216")])
            .contains("options:key=16777216"));
        assert!(e("gre", &[("remote_ip", "1.1.1.1"), ("key", "x")]).contains("options:key"));
        assert!(e("gre", &[("remote_ip", "1.1.1.1"), ("dst_port", "4789")])
            .contains("options:dst_port"));
        assert!(
            e("vxlan", &[("remote_ip", "1.1.1.1"), ("dst_port", "0")]).contains("options:dst_port")
        );
        assert!(e("gre", &[("remote_ip", "1.1.1.1"), ("csum", "yes")]).contains("options:csum"));
        assert!(e("gre", &[("remote_ip", "1.1.1.1"), ("ttl", "0")]).contains("options:ttl"));
        assert!(TunnelConf::from_options(
            "gre",
            &opts(&[("remote_ip", "1.1.1.1"), ("key", "4294967295")])
        )
        .is_ok());
    }
}
