//! IPv4 header view. `new_checked` accepts only what is safe to read:
//! version 4, IHL >= 5, header and total length within the buffer.
use super::{be16, WireError};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;
pub const MIN_HEADER_LEN: usize = 20;

pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = ((b[0] & 0x0f) as usize) * 4;
        let total = u16::from_be_bytes([b[2], b[3]]) as usize;
        if ihl < MIN_HEADER_LEN || total < ihl {
            return Err(WireError::Malformed);
        }
        if b.len() < ihl || b.len() < total {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn header_len(&self) -> usize {
        ((self.b()[0] & 0x0f) as usize) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.b()[1]
    }
    pub fn total_len(&self) -> u16 {
        be16(self.b(), 2)
    }
    pub fn ident(&self) -> u16 {
        be16(self.b(), 4)
    }
    pub fn dont_frag(&self) -> bool {
        self.b()[6] & 0x40 != 0
    }
    /// A fragment other than the first, or a first fragment with more to come.
    pub fn is_fragment(&self) -> bool {
        let f = be16(self.b(), 6);
        f & 0x3fff != 0
    }
    pub fn frag_offset(&self) -> u16 {
        (be16(self.b(), 6) & 0x1fff) * 8
    }
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 10)
    }
    pub fn src(&self) -> [u8; 4] {
        let b = self.b();
        [b[12], b[13], b[14], b[15]]
    }
    pub fn dst(&self) -> [u8; 4] {
        let b = self.b();
        [b[16], b[17], b[18], b[19]]
    }
    pub fn verify_checksum(&self) -> bool {
        super::checksum::checksum(&self.b()[..self.header_len()]) == 0
    }
    /// The L4 bytes (up to total length; trailing Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_checksum(&mut self, c: u16) {
        self.bm()[10..12].copy_from_slice(&c.to_be_bytes());
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = super::checksum::checksum(&self.b()[..hl]);
        self.set_checksum(c);
    }
    /// Decrements TTL, updating the checksum incrementally; false at 0 or 1.
    pub fn dec_ttl(&mut self) -> bool {
        let ttl = self.ttl();
        if ttl <= 1 {
            return false;
        }
        let old = u16::from_be_bytes([ttl, self.protocol()]);
        self.bm()[8] = ttl - 1;
        let new = u16::from_be_bytes([ttl - 1, self.protocol()]);
        let c = super::checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![
            0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        h.extend_from_slice(&[0x12, 0x34, 0x00, 0x35, 0, 8, 0, 0]);
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        p.fill_checksum();
        h
    }

    #[test]
    fn parses_and_verifies() {
        let h = header();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!(
            (p.src(), p.dst(), p.protocol(), p.ttl()),
            ([10, 0, 0, 1], [10, 0, 0, 2], PROTO_UDP, 64)
        );
        assert!(p.verify_checksum());
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let h = header();
        assert_eq!(
            Ipv4Packet::new_checked(&h[..19]).err(),
            Some(WireError::Truncated)
        );
        let mut bad = h.clone();
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(WireError::Malformed)
        );
        let mut bad = h.clone();
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(WireError::Malformed),
            "IHL below 5"
        );
        let mut bad = h.clone();
        bad[3] = 200;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(WireError::Truncated),
            "total length past the buffer"
        );
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut h = header();
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        assert!(p.dec_ttl());
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        h[8] = 1;
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        assert!(!p.dec_ttl());
    }
}
