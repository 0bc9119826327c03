//! Keeps the host's IP stack off a kernel device rvsd switches (a `system`
//! port: a VM's tap, a veth). rvsd reads such a device with AF_PACKET,
//! which leaves the kernel processing every frame as well: it would answer
//! ARP for the host's addresses on the guest's tap and take packets meant
//! for the bridge's own port straight from the guest, around the switch
//! and its policer. OVS's kernel datapath steals the frames with an
//! rx_handler; here a clsact qdisc with a one-instruction BPF filter drops
//! them at tc ingress, which runs after the packet taps rvsd reads from.
//! The filter stays if rvsd dies (the port stays a switch port) and goes
//! when the port leaves the switch.
use super::netlink::{index, request};

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_OPS_LEN: u16 = 4;
const TCA_BPF_OPS: u16 = 5;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_CLSACT_HANDLE: u32 = 0xffff_0000;
const TC_H_INGRESS_PARENT: u32 = 0xffff_fff2;
const ETH_P_ALL: u16 = 3;
const FILTER_PRIO: u32 = 0xc000;
/// `ret #2`: TC_ACT_SHOT for every frame.
const DROP_ALL: [u8; 8] = [0x06, 0, 0, 0, 2, 0, 0, 0];

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&handle.to_ne_bytes());
    b.extend_from_slice(&parent.to_ne_bytes());
    b.extend_from_slice(&info.to_ne_bytes());
    b
}

fn attr(b: &mut Vec<u8>, kind: u16, data: &[u8]) {
    b.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(data);
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
}

/// Drops every frame `name` receives before the host's stack sees it (the
/// switch still does). Replaces what a previous run left.
pub fn detach(name: &str) -> Result<(), String> {
    let ifx = index(name)?;
    let _ = request(
        RTM_DELQDISC,
        0,
        &tcmsg(ifx, TC_H_CLSACT_HANDLE, TC_H_CLSACT, 0),
    );
    let mut q = tcmsg(ifx, TC_H_CLSACT_HANDLE, TC_H_CLSACT, 0);
    attr(&mut q, TCA_KIND, b"clsact\0");
    request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, &q)
        .map_err(|e| format!("{name}: clsact qdisc: {e}"))?;
    let info = (FILTER_PRIO << 16) | u32::from(ETH_P_ALL.to_be());
    let mut f = tcmsg(ifx, 1, TC_H_INGRESS_PARENT, info);
    attr(&mut f, TCA_KIND, b"bpf\0");
    let mut opts = Vec::new();
    attr(&mut opts, TCA_BPF_OPS_LEN, &1u16.to_ne_bytes());
    attr(&mut opts, TCA_BPF_OPS, &DROP_ALL);
    attr(
        &mut opts,
        TCA_BPF_FLAGS,
        &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes(),
    );
    attr(&mut f, TCA_OPTIONS, &opts);
    request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, &f)
        .map_err(|e| format!("{name}: ingress filter: {e}"))
}

/// Gives `name` back to the host's stack.
pub fn reattach(name: &str) -> Result<(), String> {
    let ifx = index(name)?;
    request(
        RTM_DELQDISC,
        0,
        &tcmsg(ifx, TC_H_CLSACT_HANDLE, TC_H_CLSACT, 0),
    )
    .map_err(|e| format!("{name}: removing clsact qdisc: {e}"))
}
