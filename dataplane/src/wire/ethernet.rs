//! Ethernet II with an optional 802.1Q tag.
use super::WireError;

pub const HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group bit: broadcast and multicast are flooded, never learned.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    pub fn as_u64(&self) -> u64 {
        self.0.iter().fold(0u64, |a, b| (a << 8) | *b as u64)
    }

    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (want xx:xx:xx:xx:xx:xx)"
            ));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        Ok(MacAddr(m))
    }
}

/// A read view of an Ethernet frame's header.
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let f = EthernetFrame { buffer };
        if f.ethertype() == ETHERTYPE_VLAN && f.buffer.as_ref().len() < HEADER_LEN + VLAN_TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(f)
    }

    #[inline]
    pub fn dst(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn src(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// The outer ethertype (0x8100 for a tagged frame).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }

    /// The 802.1Q TCI when the frame carries a tag.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.ethertype() != ETHERTYPE_VLAN {
            return None;
        }
        let b = self.buffer.as_ref();
        Some(u16::from_be_bytes([b[14], b[15]]))
    }

    /// The ethertype after any 802.1Q tag.
    pub fn inner_ethertype(&self) -> u16 {
        match self.vlan_tci() {
            Some(_) => {
                let b = self.buffer.as_ref();
                u16::from_be_bytes([b[16], b[17]])
            }
            None => self.ethertype(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tagged_and_untagged() {
        let mut f = [0u8; 18];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f[14..16].copy_from_slice(&(0x2000 | 30u16).to_be_bytes());
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert!(e.dst().is_multicast());
        assert_eq!(e.src().to_string(), "02:00:00:00:00:01");
        assert_eq!(e.vlan_tci(), Some(0x2000 | 30));
        assert_eq!(e.inner_ethertype(), 0x0800);
        assert_eq!(
            EthernetFrame::new_checked(&f[..16]).err(),
            Some(WireError::Truncated)
        );
        assert_eq!(
            EthernetFrame::new_checked(&f[..13]).err(),
            Some(WireError::Truncated)
        );
    }

    #[test]
    fn mac_round_trips() {
        let m: MacAddr = "50:54:00:ab:cd:ef".parse().unwrap();
        assert_eq!(MacAddr::from_u64(m.as_u64()), m);
        assert!("50:54:00".parse::<MacAddr>().is_err());
    }
}
