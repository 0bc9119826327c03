//! ARP for IPv4 over Ethernet (RFC 826).
use super::{MacAddr, WireError};

pub const LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < LEN {
            return Err(WireError::Truncated);
        }
        // Ethernet (1), IPv4 (0x0800), 6-byte and 4-byte addresses only.
        if b[0..6] != [0, 1, 8, 0, 6, 4] {
            return Err(WireError::Malformed);
        }
        Ok(ArpPacket { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn op(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }
    pub fn sha(&self) -> MacAddr {
        let b = self.b();
        MacAddr([b[8], b[9], b[10], b[11], b[12], b[13]])
    }
    pub fn spa(&self) -> [u8; 4] {
        let b = self.b();
        [b[14], b[15], b[16], b[17]]
    }
    pub fn tha(&self) -> MacAddr {
        let b = self.b();
        MacAddr([b[18], b[19], b[20], b[21], b[22], b[23]])
    }
    pub fn tpa(&self) -> [u8; 4] {
        let b = self.b();
        [b[24], b[25], b[26], b[27]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request() {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
        a.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 9]);
        let p = ArpPacket::new_checked(&a[..]).unwrap();
        assert_eq!(
            (p.op(), p.spa(), p.tpa()),
            (OP_REQUEST, [10, 0, 0, 1], [10, 0, 0, 9])
        );
        assert_eq!(p.sha().to_string(), "02:00:00:00:00:01");
        assert_eq!(p.tha(), MacAddr::default());
        assert_eq!(
            ArpPacket::new_checked(&a[..27]).err(),
            Some(WireError::Truncated)
        );
        a[1] = 6;
        assert_eq!(
            ArpPacket::new_checked(&a[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
