//! VXLAN header view (RFC 7348): 8 bytes, the I flag and a 24-bit VNI.
use super::WireError;

pub const HEADER_LEN: usize = 8;
pub const DEFAULT_PORT: u16 = 4789;
/// The "VNI valid" flag; every other flag and reserved bit must be zero.
const FLAG_I: u32 = 0x0800_0000;

pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Accepts exactly the I flag with zero reserved bits, as OVS does.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let flags = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if flags != FLAG_I || b[7] != 0 {
            return Err(WireError::Malformed);
        }
        Ok(VxlanHeader { buffer })
    }

    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }
}

/// Writes a VXLAN header for `vni` (its low 24 bits) into `out[..8]`.
pub fn emit(out: &mut [u8], vni: u32) {
    out[0..4].copy_from_slice(&FLAG_I.to_be_bytes());
    out[4..8].copy_from_slice(&((vni & 0xff_ffff) << 8).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_flags() {
        let mut b = [0u8; 8];
        emit(&mut b, 0x12_3456);
        assert_eq!(b, [8, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(VxlanHeader::new_checked(&b[..]).unwrap().vni(), 0x12_3456);
        let mut bad = b;
        bad[0] = 0x0c;
        assert_eq!(
            VxlanHeader::new_checked(&bad[..]).err(),
            Some(WireError::Malformed)
        );
        let mut bad = b;
        bad[7] = 1;
        assert!(VxlanHeader::new_checked(&bad[..]).is_err());
        assert_eq!(
            VxlanHeader::new_checked(&b[..7]).err(),
            Some(WireError::Truncated)
        );
    }
}
