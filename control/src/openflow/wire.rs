//! OpenFlow framing: the common header, a bounds-checked reader that turns
//! every short read into an error (never a panic), and a writer that fills
//! in lengths.
use super::error::OfError;

pub const OFP10: u8 = 0x01;
pub const OFP13: u8 = 0x04;
pub const HEADER_LEN: usize = 8;
/// Nicira's vendor/experimenter id.
pub const NX_VENDOR: u32 = 0x0000_2320;
/// ONF's experimenter id (OpenFlow 1.3 extension fields).
pub const ONF_VENDOR: u32 = 0x4f4e_4600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub length: u16,
    pub xid: u32,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        (b.len() >= HEADER_LEN).then(|| Header {
            version: b[0],
            kind: b[1],
            length: u16::from_be_bytes([b[2], b[3]]),
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// Reads big-endian fields from a message; running off the end is
/// `BadLen` for the caller's context.
#[derive(Clone)]
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    short: OfError,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8], short: OfError) -> Self {
        Reader { b, pos: 0, short }
    }
    pub fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], OfError> {
        if self.remaining() < n {
            return Err(self.short);
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn skip(&mut self, n: usize) -> Result<(), OfError> {
        self.bytes(n).map(|_| ())
    }
    pub fn u8(&mut self) -> Result<u8, OfError> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, OfError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, OfError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, OfError> {
        let b = self.bytes(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.pos..];
        self.pos = self.b.len();
        s
    }
    /// Peeks a u16 at `ofs` bytes ahead without consuming.
    pub fn peek_u16(&self, ofs: usize) -> Result<u16, OfError> {
        let at = self.pos + ofs;
        if self.b.len() < at + 2 {
            return Err(self.short);
        }
        Ok(u16::from_be_bytes([self.b[at], self.b[at + 1]]))
    }
}

/// Builds one message; `finish` writes the length into the header.
#[derive(Default)]
pub struct Writer {
    pub b: Vec<u8>,
}

impl Writer {
    pub fn msg(version: u8, kind: u8, xid: u32) -> Writer {
        let mut w = Writer {
            b: Vec::with_capacity(64),
        };
        w.u8(version).u8(kind).u16(0).u32(xid);
        w
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.b.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.b.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.b.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.b.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.b.extend_from_slice(v);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.b.resize(self.b.len() + n, 0);
        self
    }
    /// A NUL-padded fixed-size string field.
    pub fn str_field(&mut self, s: &str, n: usize) -> &mut Self {
        let b = s.as_bytes();
        let k = b.len().min(n - 1);
        self.b.extend_from_slice(&b[..k]);
        self.zeros(n - k)
    }
    pub fn len(&self) -> usize {
        self.b.len()
    }
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
    /// Pads with zeros to a multiple of 8.
    pub fn pad8(&mut self) -> &mut Self {
        let n = (8 - self.b.len() % 8) % 8;
        self.zeros(n)
    }
    pub fn put_u16_at(&mut self, at: usize, v: u16) {
        self.b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    pub fn finish(mut self) -> Vec<u8> {
        let n = self.b.len() as u16;
        self.put_u16_at(2, n);
        self.b
    }
}

pub fn pad8_len(n: usize) -> usize {
    n.div_ceil(8) * 8
}
