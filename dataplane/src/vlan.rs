//! Port VLAN modes as OVS defines them (Port `vlan_mode`, `tag`, `trunks`),
//! and the tag edits that egress needs.
use crate::packet::PacketBuf;
use crate::wire::ethernet::{ETHERTYPE_VLAN, HEADER_LEN, VLAN_TAG_LEN};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanMode {
    Access,
    Trunk,
    NativeTagged,
    NativeUntagged,
}

impl VlanMode {
    pub fn parse(s: &str) -> Result<VlanMode, String> {
        Ok(match s {
            "access" => VlanMode::Access,
            "trunk" => VlanMode::Trunk,
            "native-tagged" => VlanMode::NativeTagged,
            "native-untagged" => VlanMode::NativeUntagged,
            other => {
                return Err(format!(
                "vlan_mode {other:?} is not one of access, trunk, native-tagged, native-untagged"
            ))
            }
        })
    }
}

/// The VLAN configuration of one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanConf {
    pub mode: VlanMode,
    /// Access or native VLAN.
    pub tag: u16,
    /// Allowed VLANs (4096-bit set); None = all.
    pub trunks: Option<Arc<[u64; 64]>>,
}

impl Default for VlanConf {
    fn default() -> Self {
        VlanConf {
            mode: VlanMode::Trunk,
            tag: 0,
            trunks: None,
        }
    }
}

impl VlanConf {
    /// From the Port columns, with OVS's defaults: no vlan_mode means access
    /// when a tag is set and trunk otherwise.
    pub fn from_ovsdb(
        mode: Option<&str>,
        tag: Option<i64>,
        trunks: &[i64],
    ) -> Result<VlanConf, String> {
        let tag = match tag {
            Some(t) if !(0..4096).contains(&t) => {
                return Err(format!("tag {t} is not a VLAN id (0-4095)"))
            }
            Some(t) => Some(t as u16),
            None => None,
        };
        let mode = match mode {
            Some(m) => VlanMode::parse(m)?,
            None if tag.is_some() => VlanMode::Access,
            None => VlanMode::Trunk,
        };
        if mode != VlanMode::Trunk && tag.is_none() {
            return Err(format!("vlan_mode {mode:?} needs a tag"));
        }
        let trunks = if trunks.is_empty() {
            None
        } else {
            let mut bits = [0u64; 64];
            for &v in trunks {
                if !(0..4096).contains(&v) {
                    return Err(format!("trunks value {v} is not a VLAN id (0-4095)"));
                }
                bits[(v as usize) / 64] |= 1 << (v % 64);
            }
            Some(Arc::new(bits))
        };
        Ok(VlanConf {
            mode,
            tag: tag.unwrap_or(0),
            trunks,
        })
    }

    pub fn access(tag: u16) -> VlanConf {
        VlanConf {
            mode: VlanMode::Access,
            tag,
            trunks: None,
        }
    }

    #[inline]
    fn trunk_allows(&self, vid: u16) -> bool {
        match &self.trunks {
            None => true,
            Some(b) => b[(vid as usize & 0xfff) / 64] & (1 << (vid % 64)) != 0,
        }
    }

    /// The VLAN a frame that arrived with 802.1Q VID `vid` (None: untagged)
    /// belongs to, or None when this port must not accept it.
    #[inline]
    pub fn ingress(&self, vid: Option<u16>) -> Option<u16> {
        match self.mode {
            VlanMode::Access => match vid {
                None | Some(0) => Some(self.tag),
                Some(_) => None,
            },
            VlanMode::Trunk => {
                let v = vid.unwrap_or(0);
                self.trunk_allows(v).then_some(v)
            }
            VlanMode::NativeTagged | VlanMode::NativeUntagged => match vid {
                None | Some(0) => Some(self.tag),
                Some(v) => (v == self.tag || self.trunk_allows(v)).then_some(v),
            },
        }
    }

    /// Whether a frame in VLAN `vlan` may leave through this port.
    #[inline]
    pub fn member(&self, vlan: u16) -> bool {
        match self.mode {
            VlanMode::Access => vlan == self.tag,
            VlanMode::Trunk => self.trunk_allows(vlan),
            VlanMode::NativeTagged | VlanMode::NativeUntagged => {
                vlan == self.tag || self.trunk_allows(vlan)
            }
        }
    }

    /// The 802.1Q VID a frame in `vlan` carries on egress (None: untagged).
    #[inline]
    pub fn egress_vid(&self, vlan: u16) -> Option<u16> {
        match self.mode {
            VlanMode::Access => None,
            VlanMode::NativeUntagged if vlan == self.tag => None,
            _ if vlan == 0 => None,
            _ => Some(vlan),
        }
    }
}

/// Makes the frame's tag what egress wants. `tagged` says whether it carries
/// one now. False when a tag cannot be pushed (no headroom).
#[inline]
pub fn set_egress_tag<P: PacketBuf>(pkt: &mut P, tagged: bool, want: Option<u16>) -> bool {
    match (tagged, want) {
        (false, None) => true,
        (true, Some(vid)) => {
            let d = pkt.data_mut();
            let tci = (u16::from_be_bytes([d[14], d[15]]) & 0xf000) | vid;
            d[14..16].copy_from_slice(&tci.to_be_bytes());
            true
        }
        (false, Some(vid)) => push_vlan(pkt, vid),
        (true, None) => pop_vlan(pkt),
    }
}

pub fn push_vlan<P: PacketBuf>(pkt: &mut P, tci: u16) -> bool {
    if pkt.data().len() < HEADER_LEN || !pkt.prepend(VLAN_TAG_LEN as u16) {
        return false;
    }
    let d = pkt.data_mut();
    d.copy_within(VLAN_TAG_LEN..VLAN_TAG_LEN + 12, 0);
    d[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    d[14..16].copy_from_slice(&tci.to_be_bytes());
    true
}

pub fn pop_vlan<P: PacketBuf>(pkt: &mut P) -> bool {
    if pkt.data().len() < HEADER_LEN + VLAN_TAG_LEN {
        return false;
    }
    pkt.data_mut().copy_within(0..12, VLAN_TAG_LEN);
    pkt.adj(VLAN_TAG_LEN as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HeapBuf;

    #[test]
    fn ovs_defaults() {
        assert_eq!(
            VlanConf::from_ovsdb(None, Some(30), &[]).unwrap().mode,
            VlanMode::Access
        );
        assert_eq!(
            VlanConf::from_ovsdb(None, None, &[]).unwrap().mode,
            VlanMode::Trunk
        );
        assert!(VlanConf::from_ovsdb(Some("access"), None, &[]).is_err());
        assert!(VlanConf::from_ovsdb(Some("sideways"), Some(1), &[]).is_err());
        assert!(VlanConf::from_ovsdb(None, Some(4096), &[]).is_err());
    }

    #[test]
    fn access_port() {
        let a = VlanConf::access(30);
        assert_eq!(a.ingress(None), Some(30));
        assert_eq!(a.ingress(Some(0)), Some(30));
        assert_eq!(a.ingress(Some(30)), None, "access ports drop tagged frames");
        assert!(a.member(30) && !a.member(31));
        assert_eq!(a.egress_vid(30), None);
    }

    #[test]
    fn trunk_port() {
        let t = VlanConf::from_ovsdb(Some("trunk"), None, &[10, 20]).unwrap();
        assert_eq!(t.ingress(Some(10)), Some(10));
        assert_eq!(t.ingress(Some(11)), None);
        assert_eq!(t.ingress(None), None, "VLAN 0 not in trunks");
        assert!(t.member(20) && !t.member(30));
        assert_eq!(t.egress_vid(20), Some(20));
        let all = VlanConf::default();
        assert_eq!(all.ingress(None), Some(0));
        assert_eq!(all.egress_vid(0), None);
        assert_eq!(all.egress_vid(4094), Some(4094));
    }

    #[test]
    fn native_modes() {
        let nu = VlanConf::from_ovsdb(Some("native-untagged"), Some(5), &[6]).unwrap();
        assert_eq!(nu.ingress(None), Some(5));
        assert_eq!(nu.ingress(Some(6)), Some(6));
        assert_eq!(nu.ingress(Some(7)), None);
        assert_eq!(nu.egress_vid(5), None);
        assert_eq!(nu.egress_vid(6), Some(6));
        let nt = VlanConf::from_ovsdb(Some("native-tagged"), Some(5), &[6]).unwrap();
        assert_eq!(nt.egress_vid(5), Some(5));
        assert!(nt.member(5) && nt.member(6) && !nt.member(7));
    }

    #[test]
    fn push_pop_round_trip() {
        let frame: Vec<u8> = (0u8..64).collect();
        let mut p = HeapBuf::new(&frame);
        assert!(set_egress_tag(&mut p, false, Some(100)));
        assert_eq!(p.data().len(), 68);
        assert_eq!(&p.data()[..12], &frame[..12]);
        assert_eq!(&p.data()[12..16], &[0x81, 0x00, 0x00, 100]);
        assert_eq!(&p.data()[16..], &frame[12..]);
        assert!(set_egress_tag(&mut p, true, Some(200)));
        assert_eq!(&p.data()[14..16], &[0x00, 200]);
        assert!(set_egress_tag(&mut p, true, None));
        assert_eq!(p.data(), &frame[..]);
    }
}
