//! Internet checksums: the full one's-complement sum (RFC 1071) and the
//! incremental update of a header field (RFC 1624, eqn. 3), which NAT and
//! TTL decrement use so a rewrite never re-reads the payload.

/// One's-complement sum of `data` (odd length padded with a zero byte),
/// folded to 16 bits but not inverted (so a caller may add to it).
/// Eight bytes at a time: since 2^16 = 1 (mod 2^16 - 1), summing 32-bit
/// big-endian words and folding gives the sum of the 16-bit words.
pub fn sum(data: &[u8], acc: u32) -> u32 {
    let mut wide = acc as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        // Two 32-bit halves: at most 2^33 per chunk, far from overflow.
        wide += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        wide += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [b] = rest.remainder() {
        wide += (*b as u64) << 8;
    }
    while wide > 0xffff {
        wide = (wide & 0xffff) + (wide >> 16);
    }
    wide as u32
}

/// Folds a sum to 16 bits and inverts it: the value to put in a header.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` alone (IPv4 header, ICMP message).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// The IPv4 pseudo-header sum for TCP/UDP.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let mut acc = sum(&src, 0);
    acc = sum(&dst, acc);
    acc + proto as u32 + len as u32
}

/// RFC 1624: the new checksum after a 16-bit field changed from `old` to
/// `new`: HC' = ~(~HC + ~m + m').
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = (!hc) as u32 + (!old) as u32 + new as u32;
    finish(acc)
}

/// As `update16` for a 32-bit field (an IPv4 address).
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's sum, 16 bits at a time.
    fn reference(data: &[u8], mut acc: u64) -> u16 {
        for c in data.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn wide_sum_equals_the_16_bit_sum() {
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for len in (0..80).chain([1499, 1500, 9000]) {
            for fill in [None, Some(0u8), Some(0xff)] {
                let d: Vec<u8> = (0..len).map(|_| fill.unwrap_or(next() as u8)).collect();
                for acc in [0u32, 1, 0xffff, 0x1_fffe, next() & 0xf_ffff] {
                    assert_eq!(
                        finish(sum(&d, acc)),
                        reference(&d, acc as u64),
                        "len {len} acc {acc:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&d, 0)), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let mut h = [
            0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut h = [
            0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 192, 168, 1, 10, 10, 0, 0, 2,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        // Rewrite the source address and decrement the TTL incrementally.
        let old_src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new_src = u32::from_be_bytes([203, 0, 113, 7]);
        let mut hc = update32(c, old_src, new_src);
        h[12..16].copy_from_slice(&new_src.to_be_bytes());
        let old_ttl_proto = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        hc = update16(hc, old_ttl_proto, u16::from_be_bytes([h[8], h[9]]));
        h[10..12].copy_from_slice(&hc.to_be_bytes());
        assert_eq!(checksum(&h), 0);
        let mut fresh = h;
        fresh[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(checksum(&fresh), hc);
    }

    #[test]
    fn odd_lengths_pad_with_zero() {
        assert_eq!(sum(&[0xab], 0), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }
}
