//! The kernel's IPv4 routes, read with an rtnetlink dump (RTM_GETROUTE)
//! of the main and local tables, and its interfaces' addresses.
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const TABLE_MAIN: u32 = 254;
const TABLE_LOCAL: u32 = 255;

/// A kernel route as OVS's route table caches it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    pub prefix: u32,
    pub plen: u8,
    pub dev: String,
    pub gw: u32,
    pub src: u32,
    /// From the local table: an address of this host.
    pub local: bool,
}

/// Dumps the kernel's IPv4 unicast and local routes.
pub fn routes() -> Result<Vec<KernelRoute>, String> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| format!("netlink socket: {e}"))?;
    let raw = fd.as_raw_fd();
    bind(raw, &NetlinkAddr::new(0, 0)).map_err(|e| format!("netlink bind: {e}"))?;
    let mut req = Vec::with_capacity(28);
    req.extend_from_slice(&28u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    send(raw, &req, MsgFlags::empty()).map_err(|e| format!("netlink send: {e}"))?;
    let names = ifnames();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(raw, &mut buf, MsgFlags::empty()).map_err(|e| format!("netlink recv: {e}"))?;
        if n == 0 {
            break;
        }
        match parse(&buf[..n], &names, &mut out) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one datagram of the dump; true at its end.
fn parse(
    mut b: &[u8],
    names: &BTreeMap<u32, String>,
    out: &mut Vec<KernelRoute>,
) -> Result<bool, String> {
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        if len < 16 || len > b.len() {
            return Err("netlink: truncated message".into());
        }
        let msg = &b[16..len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = msg
                    .get(..4)
                    .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                if code != Some(0) {
                    return Err(format!("netlink: route dump refused ({code:?})"));
                }
            }
            RTM_NEWROUTE if msg.len() >= 12 => {
                if let Some(r) = route(msg, names) {
                    out.push(r);
                }
            }
            _ => {}
        }
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(false)
}

fn route(msg: &[u8], names: &BTreeMap<u32, String>) -> Option<KernelRoute> {
    let (family, plen, rtype) = (msg[0], msg[1], msg[7]);
    if family != libc::AF_INET as u8 || !(rtype == RTN_UNICAST || rtype == RTN_LOCAL) {
        return None;
    }
    let mut table = msg[4] as u32;
    let (mut dst, mut gw, mut src, mut oif) = (0u32, 0u32, 0u32, 0u32);
    let mut a = &msg[12..];
    while a.len() >= 4 {
        let alen = u16::from_ne_bytes([a[0], a[1]]) as usize;
        let aty = u16::from_ne_bytes([a[2], a[3]]);
        if alen < 4 || alen > a.len() {
            break;
        }
        let v = &a[4..alen];
        let be = || (v.len() >= 4).then(|| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        let ne = || (v.len() >= 4).then(|| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
        match aty {
            RTA_DST => dst = be()?,
            RTA_GATEWAY => gw = be()?,
            RTA_PREFSRC => src = be()?,
            RTA_OIF => oif = ne()?,
            RTA_TABLE => table = ne()?,
            _ => {}
        }
        a = a.get((alen + 3) & !3..).unwrap_or(&[]);
    }
    if table != TABLE_MAIN && table != TABLE_LOCAL {
        return None;
    }
    let local = rtype == RTN_LOCAL;
    Some(KernelRoute {
        prefix: dst,
        plen,
        dev: names
            .get(&oif)
            .cloned()
            .unwrap_or_else(|| format!("if{oif}")),
        gw,
        src: if local && src == 0 { dst } else { src },
        local,
    })
}

/// Interface index -> name, from sysfs.
fn ifnames() -> BTreeMap<u32, String> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(i) = sysfs(&name, "ifindex").and_then(|v| v.parse().ok()) {
                m.insert(i, name);
            }
        }
    }
    m
}

/// A kernel netdev's address, MAC and MTU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub ips: Vec<u32>,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// Every kernel netdev with its IPv4 addresses, MAC and MTU.
pub fn links() -> BTreeMap<String, Link> {
    let mut m: BTreeMap<String, Link> = BTreeMap::new();
    for name in ifnames().into_values() {
        let mac = sysfs(&name, "address")
            .and_then(|a| a.parse::<rvs_dataplane::wire::MacAddr>().ok())
            .map(|a| a.0)
            .unwrap_or_default();
        let mtu = sysfs(&name, "mtu")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500);
        m.insert(
            name,
            Link {
                ips: Vec::new(),
                mac,
                mtu,
            },
        );
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) else {
                continue;
            };
            if let Some(l) = m.get_mut(&a.interface_name) {
                l.ips.push(u32::from(sin.ip()));
            }
        }
    }
    m
}

const NLM_F_ACK: u16 = 4;

/// Sends one rtnetlink request (header added here) and waits for its ack.
pub(crate) fn request(kind: u16, flags: u16, body: &[u8]) -> Result<(), String> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| format!("netlink socket: {e}"))?;
    let raw = fd.as_raw_fd();
    bind(raw, &NetlinkAddr::new(0, 0)).map_err(|e| format!("netlink bind: {e}"))?;
    let mut req = Vec::with_capacity(16 + body.len());
    req.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(body);
    send(raw, &req, MsgFlags::empty()).map_err(|e| format!("netlink send: {e}"))?;
    let mut buf = [0u8; 1024];
    let n = recv(raw, &mut buf, MsgFlags::empty()).map_err(|e| format!("netlink recv: {e}"))?;
    // The ack is an NLMSG_ERROR carrying errno 0.
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if errno != 0 {
            return Err(nix::errno::Errno::from_raw(-errno).desc().to_string());
        }
    }
    Ok(())
}

pub(crate) fn index(name: &str) -> Result<u32, String> {
    nix::net::if_::if_nametoindex(name).map_err(|e| format!("{name}: {e}"))
}

/// Deletes kernel netdev `name` (RTM_DELLINK), as `ip link del` does.
pub fn delete_link(name: &str) -> Result<(), String> {
    const RTM_DELLINK: u16 = 17;
    // ifinfomsg: family, pad, type, index, flags, change.
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    body.extend_from_slice(&(index(name)? as i32).to_ne_bytes());
    body.extend_from_slice(&[0u8; 8]);
    request(RTM_DELLINK, 0, &body).map_err(|e| format!("deleting {name}: {e}"))
}

/// A netdev's IPv4 addresses with their prefix lengths.
pub fn ipv4_addresses(name: &str) -> Vec<(std::net::Ipv4Addr, u8)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            let mask = a.netmask.as_ref()?.as_sockaddr_in()?.ip();
            Some((ip, u32::from(mask).count_ones() as u8))
        })
        .collect()
}

/// Adds an IPv4 address to a netdev (RTM_NEWADDR), as `ip address add`.
pub fn add_ipv4_address(name: &str, ip: std::net::Ipv4Addr, plen: u8) -> Result<(), String> {
    const RTM_NEWADDR: u16 = 20;
    const NLM_F_EXCL: u16 = 0x200;
    const NLM_F_CREATE: u16 = 0x400;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    // ifaddrmsg: family, prefixlen, flags, scope, index; then two rtattrs.
    let mut body = vec![libc::AF_INET as u8, plen, 0, 0];
    body.extend_from_slice(&index(name)?.to_ne_bytes());
    for kind in [IFA_LOCAL, IFA_ADDRESS] {
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(&ip.octets());
    }
    request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &body)
        .map_err(|e| format!("adding {ip}/{plen} to {name}: {e}"))
}

fn sysfs(dev: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/{attr}"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dumps_this_hosts_routes() {
        // Every Linux host has local routes for its loopback address.
        let r = super::routes().unwrap();
        assert!(
            r.iter()
                .any(|r| r.local && r.prefix == 0x7f00_0001 && r.dev == "lo"),
            "{r:?}"
        );
    }
}
