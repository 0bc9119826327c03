//! The flow key: every header field a rule can match or an action can set,
//! packed so that each field lies inside one u64 word. Masks are keys too,
//! which makes masked compare, hashing, `load` and `move` generic over
//! fields: a field is just (word, shift, width).

/// Words in a key. The first `PACKET_WORDS` come from the packet (and its
/// tunnel); the rest (metadata, registers) start at zero for every packet.
pub const KEY_WORDS: usize = 22;
pub const PACKET_WORDS: usize = 9;
const _: () = assert!(PACKET_WORDS <= KEY_WORDS);

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub w: [u64; KEY_WORDS],
}

impl std::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("FlowKey");
        for &field in Field::ALL {
            let v = self.get(field);
            if v != 0 {
                d.field(field.name(), &format_args!("{v:#x}"));
            }
        }
        d.finish()
    }
}

/// A field of the flow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    InPort,
    DlType,
    /// OVS's vlan_tci: bit 12 (CFI) set means "has an 802.1Q header".
    VlanTci,
    /// The inner tag of a double-tagged frame (OVS's vlans[1] with
    /// other_config:vlan-limit=2): not matchable, but kept so that popping
    /// the outer tag shows it and pushing one keeps it.
    VlanTci2,
    DlDst,
    /// IP protocol, or the ARP opcode (low 8 bits) as OVS keeps it.
    NwProto,
    /// The DSCP bits in their IP TOS position (tos & 0xfc).
    NwTos,
    DlSrc,
    NwTtl,
    NwEcn,
    /// 0 = not a fragment, 1 = first fragment, 3 = later fragment.
    NwFrag,
    /// IPv4 source or ARP SPA.
    NwSrc,
    /// IPv4 destination or ARP TPA.
    NwDst,
    /// TCP/UDP source port or ICMP type.
    TpSrc,
    /// TCP/UDP destination port or ICMP code.
    TpDst,
    TcpFlags,
    ArpSha,
    ArpTha,
    TunId,
    TunSrc,
    TunDst,
    /// Connection tracking results (set by `ct`, seen after recirculation).
    CtState,
    CtNwProto,
    CtZone,
    CtMark,
    /// The low 64 bits of ct_label (the high 64 are not kept).
    CtLabel,
    CtNwSrc,
    CtNwDst,
    CtTpSrc,
    CtTpDst,
    /// The table a recirculated packet starts at (internal).
    RecircTable,
    Metadata,
    Reg(u8),
}

impl Field {
    pub const ALL: &'static [Field] = &[
        Field::InPort,
        Field::DlType,
        Field::VlanTci,
        Field::VlanTci2,
        Field::DlDst,
        Field::NwProto,
        Field::NwTos,
        Field::DlSrc,
        Field::NwTtl,
        Field::NwEcn,
        Field::NwFrag,
        Field::NwSrc,
        Field::NwDst,
        Field::TpSrc,
        Field::TpDst,
        Field::TcpFlags,
        Field::ArpSha,
        Field::ArpTha,
        Field::TunId,
        Field::TunSrc,
        Field::TunDst,
        Field::CtState,
        Field::CtNwProto,
        Field::CtZone,
        Field::CtMark,
        Field::CtLabel,
        Field::CtNwSrc,
        Field::CtNwDst,
        Field::CtTpSrc,
        Field::CtTpDst,
        Field::RecircTable,
        Field::Metadata,
        Field::Reg(0),
        Field::Reg(1),
        Field::Reg(2),
        Field::Reg(3),
        Field::Reg(4),
        Field::Reg(5),
        Field::Reg(6),
        Field::Reg(7),
        Field::Reg(8),
        Field::Reg(9),
        Field::Reg(10),
        Field::Reg(11),
        Field::Reg(12),
        Field::Reg(13),
        Field::Reg(14),
        Field::Reg(15),
    ];

    /// (word, shift, width in bits)
    #[inline]
    pub const fn place(self) -> (usize, u32, u32) {
        match self {
            Field::InPort => (0, 0, 32),
            Field::DlType => (0, 32, 16),
            Field::VlanTci => (0, 48, 16),
            Field::DlDst => (1, 0, 48),
            Field::NwProto => (1, 48, 8),
            Field::NwTos => (1, 56, 8),
            Field::DlSrc => (2, 0, 48),
            Field::NwTtl => (2, 48, 8),
            Field::NwEcn => (2, 56, 2),
            Field::NwFrag => (2, 58, 2),
            Field::NwSrc => (3, 0, 32),
            Field::NwDst => (3, 32, 32),
            Field::TpSrc => (4, 0, 16),
            Field::TpDst => (4, 16, 16),
            Field::TcpFlags => (4, 32, 12),
            Field::VlanTci2 => (4, 48, 16),
            Field::ArpSha => (5, 0, 48),
            Field::ArpTha => (6, 0, 48),
            Field::TunId => (7, 0, 64),
            Field::TunSrc => (8, 0, 32),
            Field::TunDst => (8, 32, 32),
            Field::CtState => (9, 0, 8),
            Field::CtNwProto => (9, 8, 8),
            Field::CtZone => (9, 16, 16),
            Field::CtMark => (9, 32, 32),
            Field::CtLabel => (10, 0, 64),
            Field::CtNwSrc => (11, 0, 32),
            Field::CtNwDst => (11, 32, 32),
            Field::CtTpSrc => (12, 0, 16),
            Field::CtTpDst => (12, 16, 16),
            Field::RecircTable => (12, 32, 8),
            Field::Metadata => (13, 0, 64),
            Field::Reg(r) => (14 + (r as usize & 15) / 2, (r as u32 & 1) * 32, 32),
        }
    }

    #[inline]
    pub const fn bits(self) -> u32 {
        self.place().2
    }

    /// All ones over the field's width.
    #[inline]
    pub const fn full(self) -> u64 {
        let b = self.bits();
        if b == 64 {
            u64::MAX
        } else {
            (1u64 << b) - 1
        }
    }

    pub fn name(self) -> &'static str {
        const REGS: [&str; 16] = [
            "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9",
            "reg10", "reg11", "reg12", "reg13", "reg14", "reg15",
        ];
        match self {
            Field::InPort => "in_port",
            Field::DlType => "dl_type",
            Field::VlanTci => "vlan_tci",
            Field::VlanTci2 => "vlan_tci_inner",
            Field::DlDst => "dl_dst",
            Field::NwProto => "nw_proto",
            Field::NwTos => "nw_tos",
            Field::DlSrc => "dl_src",
            Field::NwTtl => "nw_ttl",
            Field::NwEcn => "nw_ecn",
            Field::NwFrag => "nw_frag",
            Field::NwSrc => "nw_src",
            Field::NwDst => "nw_dst",
            Field::TpSrc => "tp_src",
            Field::TpDst => "tp_dst",
            Field::TcpFlags => "tcp_flags",
            Field::ArpSha => "arp_sha",
            Field::ArpTha => "arp_tha",
            Field::TunId => "tun_id",
            Field::TunSrc => "tun_src",
            Field::TunDst => "tun_dst",
            Field::CtState => "ct_state",
            Field::CtNwProto => "ct_nw_proto",
            Field::CtZone => "ct_zone",
            Field::CtMark => "ct_mark",
            Field::CtLabel => "ct_label",
            Field::CtNwSrc => "ct_nw_src",
            Field::CtNwDst => "ct_nw_dst",
            Field::CtTpSrc => "ct_tp_src",
            Field::CtTpDst => "ct_tp_dst",
            Field::RecircTable => "recirc_table",
            Field::Metadata => "metadata",
            Field::Reg(r) => REGS[r as usize & 15],
        }
    }

    /// True for fields that live only in the pipeline, not in the packet.
    pub fn is_metadata(self) -> bool {
        matches!(
            self,
            Field::Metadata
                | Field::Reg(_)
                | Field::InPort
                | Field::CtState
                | Field::CtNwProto
                | Field::CtZone
                | Field::CtMark
                | Field::CtLabel
                | Field::CtNwSrc
                | Field::CtNwDst
                | Field::CtTpSrc
                | Field::CtTpDst
                | Field::RecircTable
        )
    }
}

impl FlowKey {
    #[inline]
    pub fn get(&self, f: Field) -> u64 {
        let (w, s, _) = f.place();
        (self.w[w] >> s) & f.full()
    }

    #[inline]
    pub fn set(&mut self, f: Field, v: u64) {
        let (w, s, _) = f.place();
        let m = f.full() << s;
        self.w[w] = (self.w[w] & !m) | ((v << s) & m);
    }

    /// Sets bits `ofs..ofs+n` of field `f` to the low `n` bits of `v`
    /// (NXM's subfield `f[ofs..ofs+n-1]`).
    #[inline]
    pub fn set_bits(&mut self, f: Field, ofs: u32, n: u32, v: u64) {
        let m = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        let cur = self.get(f);
        self.set(f, (cur & !(m << ofs)) | ((v & m) << ofs));
    }

    #[inline]
    pub fn get_bits(&self, f: Field, ofs: u32, n: u32) -> u64 {
        let m = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        (self.get(f) >> ofs) & m
    }

    /// The key with only the bits of `mask` kept.
    #[inline]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = FlowKey::default();
        for i in 0..KEY_WORDS {
            out.w[i] = self.w[i] & mask.w[i];
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.w.iter().all(|&w| w == 0)
    }

    /// The words parsed from the packet (what the exact-match cache keys).
    #[inline(always)]
    pub fn packet_words(&self) -> &[u64; PACKET_WORDS] {
        self.w
            .first_chunk::<PACKET_WORDS>()
            .expect("PACKET_WORDS <= KEY_WORDS")
    }
}

/// True when `a` holds `k`'s packet words. Branch-free and inlined: a
/// slice compare here would be a memcmp call per packet.
#[inline(always)]
pub fn packet_words_eq(a: &[u64; PACKET_WORDS], k: &FlowKey) -> bool {
    a.iter().zip(&k.w).fold(0u64, |d, (x, y)| d | (x ^ y)) == 0
}

/// A rule's match: the values and which bits of them count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Match {
    pub key: FlowKey,
    pub mask: FlowKey,
}

impl Match {
    /// Matches everything.
    pub fn any() -> Match {
        Match::default()
    }

    /// Adds `field == value` under `mask` (bits outside the field's width
    /// are ignored).
    pub fn set(&mut self, f: Field, value: u64, mask: u64) {
        let mask = mask & f.full();
        self.mask.set(f, self.mask.get(f) | mask);
        let cur = self.key.get(f);
        self.key.set(f, (cur & !mask) | (value & mask));
    }

    pub fn exact(&mut self, f: Field, value: u64) {
        self.set(f, value, u64::MAX);
    }

    #[inline]
    pub fn matches(&self, k: &FlowKey) -> bool {
        (0..KEY_WORDS).all(|i| k.w[i] & self.mask.w[i] == self.key.w[i])
    }

    /// (value, mask) of one field.
    pub fn field(&self, f: Field) -> (u64, u64) {
        (self.key.get(f), self.mask.get(f))
    }

    /// True when everything `other` matches, this matches too, in the sense
    /// OpenFlow's non-strict modify/delete use: this rule's match is a
    /// subset (more specific or equal) of `filter`.
    pub fn is_within(&self, filter: &Match) -> bool {
        (0..KEY_WORDS).all(|i| {
            // Every bit the filter cares about must be cared about by us
            // and have the filter's value.
            filter.mask.w[i] & !self.mask.w[i] == 0
                && self.key.w[i] & filter.mask.w[i] == filter.key.w[i]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap() {
        let mut seen = [0u64; KEY_WORDS];
        for &f in Field::ALL {
            let (w, s, _) = f.place();
            let m = f.full() << s;
            assert_eq!(seen[w] & m, 0, "{f:?} overlaps");
            seen[w] |= m;
        }
    }

    #[test]
    fn set_get_bits() {
        let mut k = FlowKey::default();
        k.set(Field::Reg(3), 0xdead_beef);
        assert_eq!(k.get(Field::Reg(3)), 0xdead_beef);
        assert_eq!(k.get(Field::Reg(2)), 0);
        k.set_bits(Field::Reg(3), 4, 8, 0xff);
        assert_eq!(k.get(Field::Reg(3)), 0xdead_bfff);
        assert_eq!(k.get_bits(Field::Reg(3), 16, 16), 0xdead);
        k.set(Field::DlDst, 0x1122_3344_5566_7788);
        assert_eq!(k.get(Field::DlDst), 0x3344_5566_7788);
        assert_eq!(k.get(Field::NwProto), 0);
    }

    #[test]
    fn within() {
        let mut broad = Match::any();
        broad.exact(Field::DlType, 0x800);
        let mut narrow = broad;
        narrow.set(Field::NwSrc, 0x0a000000, 0xff000000);
        assert!(narrow.is_within(&broad));
        assert!(!broad.is_within(&narrow));
        assert!(broad.is_within(&Match::any()));
    }
}
