//! GRE header view (RFC 2784 with RFC 2890's key and sequence number), as
//! Ethernet-over-GRE ("gretap") carries it: protocol 0x6558.
use super::{be16, WireError};

/// Transparent Ethernet bridging: an Ethernet frame follows.
pub const PROTO_TEB: u16 = 0x6558;
pub const FLAG_CSUM: u16 = 0x8000;
pub const FLAG_KEY: u16 = 0x2000;
pub const FLAG_SEQ: u16 = 0x1000;
/// Routing present, strict source route, recursion control, flags and
/// version bits: none of them may be set in what we accept.
const FLAGS_FORBIDDEN: u16 = !(FLAG_CSUM | FLAG_KEY | FLAG_SEQ);

pub struct GreHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GreHeader<T> {
    /// Accepts version 0 with only the checksum, key and sequence bits set
    /// and every optional field present in the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < 4 {
            return Err(WireError::Truncated);
        }
        let g = GreHeader { buffer };
        if g.flags() & FLAGS_FORBIDDEN != 0 {
            return Err(WireError::Malformed);
        }
        if g.buffer.as_ref().len() < g.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(g)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Flags and version (the first 16 bits).
    pub fn flags(&self) -> u16 {
        be16(self.b(), 0)
    }
    pub fn protocol(&self) -> u16 {
        be16(self.b(), 2)
    }
    pub fn has_csum(&self) -> bool {
        self.flags() & FLAG_CSUM != 0
    }
    pub fn header_len(&self) -> usize {
        header_len(self.flags())
    }
    /// The key, when the key bit is set.
    pub fn key(&self) -> Option<u32> {
        let f = self.flags();
        if f & FLAG_KEY == 0 {
            return None;
        }
        let at = if f & FLAG_CSUM != 0 { 8 } else { 4 };
        let b = self.b();
        Some(u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
    }
}

/// Bytes of a GRE header with these flags.
pub fn header_len(flags: u16) -> usize {
    4 + 4
        * ((flags & FLAG_CSUM != 0) as usize
            + (flags & FLAG_KEY != 0) as usize
            + (flags & FLAG_SEQ != 0) as usize)
}

/// Writes a GRE header for an Ethernet payload into `out` (which must be
/// `header_len` long); the checksum field, when asked for, is left zero
/// for the caller to fill once the payload is behind it.
pub fn emit(out: &mut [u8], key: Option<u32>, csum: bool) {
    let flags = if csum { FLAG_CSUM } else { 0 } | if key.is_some() { FLAG_KEY } else { 0 };
    out[0..2].copy_from_slice(&flags.to_be_bytes());
    out[2..4].copy_from_slice(&PROTO_TEB.to_be_bytes());
    let mut at = 4;
    if csum {
        out[4..8].fill(0);
        at = 8;
    }
    if let Some(k) = key {
        out[at..at + 4].copy_from_slice(&k.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_key_and_checksum() {
        let mut b = [0u8; 12];
        emit(&mut b, Some(0x1234_5678), true);
        let g = GreHeader::new_checked(&b[..]).unwrap();
        assert_eq!(g.header_len(), 12);
        assert_eq!(g.key(), Some(0x1234_5678));
        assert!(g.has_csum());
        assert_eq!(g.protocol(), PROTO_TEB);
        let mut b = [0u8; 4];
        emit(&mut b, None, false);
        let g = GreHeader::new_checked(&b[..]).unwrap();
        assert_eq!((g.key(), g.header_len()), (None, 4));
    }

    #[test]
    fn refuses_routing_version_and_truncation() {
        // Routing present.
        assert_eq!(
            GreHeader::new_checked(&[0x40, 0, 0x65, 0x58][..]).err(),
            Some(WireError::Malformed)
        );
        // Version 1 (PPTP's enhanced GRE).
        assert_eq!(
            GreHeader::new_checked(&[0x20, 1, 0x65, 0x58, 0, 0, 0, 1][..]).err(),
            Some(WireError::Malformed)
        );
        // Key bit without the key.
        assert_eq!(
            GreHeader::new_checked(&[0x20, 0, 0x65, 0x58, 0, 0][..]).err(),
            Some(WireError::Truncated)
        );
        // Sequence numbers are allowed and skipped.
        let g = GreHeader::new_checked(&[0x30, 0, 0x65, 0x58, 0, 0, 0, 7, 0, 0, 0, 1][..]).unwrap();
        assert_eq!((g.key(), g.header_len()), (Some(7), 12));
    }
}
