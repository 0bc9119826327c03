//! Transport headers: UDP, TCP and ICMP views over an IPv4 payload.
use super::{be16, WireError};

pub const UDP_HEADER_LEN: usize = 8;
pub const TCP_MIN_HEADER_LEN: usize = 20;
pub const ICMP_HEADER_LEN: usize = 8;

/// UDP or TCP ports (the first four bytes of both headers).
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    (l4.len() >= 4).then(|| {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    })
}

pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < UDP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = u16::from_be_bytes([b[4], b[5]]) as usize;
        if len < UDP_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(UdpDatagram { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn src_port(&self) -> u16 {
        be16(self.b(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), 2)
    }
    pub fn len(&self) -> u16 {
        be16(self.b(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize == UDP_HEADER_LEN
    }
    /// 0 means the sender computed none (legal for UDP over IPv4).
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 6)
    }
    pub fn payload(&self) -> &[u8] {
        &self.b()[UDP_HEADER_LEN..self.len() as usize]
    }
}

pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

pub const TCP_FIN: u16 = 0x01;
pub const TCP_SYN: u16 = 0x02;
pub const TCP_RST: u16 = 0x04;
pub const TCP_PSH: u16 = 0x08;
pub const TCP_ACK: u16 = 0x10;

impl<T: AsRef<[u8]>> TcpSegment<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < TCP_MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let off = ((b[12] >> 4) as usize) * 4;
        if off < TCP_MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if off > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpSegment { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn src_port(&self) -> u16 {
        be16(self.b(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), 2)
    }
    pub fn seq(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    pub fn ack(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }
    pub fn header_len(&self) -> usize {
        ((self.b()[12] >> 4) as usize) * 4
    }
    /// The 12 flag bits, as OpenFlow's tcp_flags field.
    pub fn flags(&self) -> u16 {
        be16(self.b(), 12) & 0x0fff
    }
    pub fn window(&self) -> u16 {
        be16(self.b(), 14)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16)
    }
}

pub struct IcmpMessage<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpMessage<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < ICMP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpMessage { buffer })
    }
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    /// Echo identifier (types 0 and 8).
    pub fn echo_ident(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }
    pub fn verify_checksum(&self) -> bool {
        super::checksum::checksum(self.buffer.as_ref()) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp() {
        let d = [0x12, 0x34, 0, 53, 0, 10, 0, 0, 0xaa, 0xbb];
        let u = UdpDatagram::new_checked(&d[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.len(), u.checksum()),
            (0x1234, 53, 10, 0)
        );
        assert_eq!(u.payload(), &[0xaa, 0xbb]);
        assert_eq!(
            UdpDatagram::new_checked(&d[..9]).err(),
            Some(WireError::Truncated)
        );
        let bad = [0, 1, 0, 2, 0, 4, 0, 0];
        assert_eq!(
            UdpDatagram::new_checked(&bad[..]).err(),
            Some(WireError::Malformed)
        );
        assert_eq!(ports(&d), Some((0x1234, 53)));
    }

    #[test]
    fn tcp() {
        let mut s = [0u8; 24];
        s[0..4].copy_from_slice(&[0x04, 0xd2, 0x00, 0x50]);
        s[4..8].copy_from_slice(&7u32.to_be_bytes());
        s[12] = 6 << 4;
        s[13] = (TCP_SYN | TCP_ACK) as u8;
        let t = TcpSegment::new_checked(&s[..]).unwrap();
        assert_eq!(
            (
                t.src_port(),
                t.dst_port(),
                t.seq(),
                t.header_len(),
                t.flags()
            ),
            (1234, 80, 7, 24, TCP_SYN | TCP_ACK)
        );
        assert_eq!(
            TcpSegment::new_checked(&s[..22]).err(),
            Some(WireError::Truncated),
            "options past the end"
        );
        s[12] = 4 << 4;
        assert_eq!(
            TcpSegment::new_checked(&s[..]).err(),
            Some(WireError::Malformed)
        );
    }

    #[test]
    fn icmp_echo() {
        let mut m = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3];
        let c = super::super::checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let i = IcmpMessage::new_checked(&m[..]).unwrap();
        assert_eq!((i.msg_type(), i.code(), i.echo_ident()), (8, 0, 0x1234));
        assert!(i.verify_checksum());
    }
}
