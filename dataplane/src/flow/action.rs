//! OpenFlow actions as rules hold them. They keep the form they arrived in
//! (`mod_dl_src` and `set_field:..->eth_src` are different variants) so that
//! a flow dump shows what the operator wrote; translation treats the
//! equivalent ones alike.
use super::key::Field;

/// OpenFlow 1.1+ reserved port numbers (OpenFlow 1.0's 16-bit ones are
/// widened on decode).
pub mod ofpp {
    pub const MAX: u32 = 0xffff_ff00;
    pub const IN_PORT: u32 = 0xffff_fff8;
    pub const TABLE: u32 = 0xffff_fff9;
    pub const NORMAL: u32 = 0xffff_fffa;
    pub const FLOOD: u32 = 0xffff_fffb;
    pub const ALL: u32 = 0xffff_fffc;
    pub const CONTROLLER: u32 = 0xffff_fffd;
    pub const LOCAL: u32 = 0xffff_fffe;
    pub const ANY: u32 = 0xffff_ffff;
    /// The bridge's own port as ofport numbers show it in the database.
    pub const LOCAL_OFPORT: u32 = 65534;

    /// OpenFlow 1.0 16-bit port -> 32-bit.
    pub fn from16(p: u16) -> u32 {
        if p >= 0xff00 {
            p as u32 | 0xffff_0000
        } else {
            p as u32
        }
    }

    /// 32-bit port -> OpenFlow 1.0 16-bit; None when it does not fit.
    pub fn to16(p: u32) -> Option<u16> {
        if p >= 0xffff_ff00 {
            Some((p & 0xffff) as u16)
        } else if p < 0xff00 {
            Some(p as u16)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Output {
        port: u32,
        max_len: u16,
    },
    /// `mod_vlan_vid` (push = true: tags an untagged frame) or
    /// `set_field:..->vlan_vid` (push = false).
    SetVlanVid {
        vid: u16,
        push: bool,
    },
    SetVlanPcp {
        pcp: u8,
        push: bool,
    },
    /// `strip_vlan` (OpenFlow 1.0) / `pop_vlan`.
    StripVlan,
    PushVlan(u16),
    SetDlSrc(u64),
    SetDlDst(u64),
    SetNwSrc(u32),
    SetNwDst(u32),
    /// The DSCP bits in TOS position.
    SetNwTos(u8),
    SetTpSrc(u16),
    SetTpDst(u16),
    /// `set_field` (OpenFlow 1.2+) or NXAST_REG_LOAD2: value under mask.
    SetField {
        field: Field,
        value: u64,
        mask: u64,
    },
    /// NXAST_REG_LOAD: `load:value->field[ofs..ofs+n_bits-1]`.
    RegLoad {
        field: Field,
        ofs: u8,
        n_bits: u8,
        value: u64,
    },
    /// NXAST_REG_MOVE.
    RegMove {
        src: Field,
        src_ofs: u8,
        dst: Field,
        dst_ofs: u8,
        n_bits: u8,
    },
    DecTtl,
    /// `set_tunnel` (wide = false: NXAST_SET_TUNNEL, 32 bits) or
    /// `set_tunnel64`.
    SetTunnel {
        id: u64,
        wide: bool,
    },
    /// `resubmit([port],[table])`: None port = the packet's in_port, None
    /// table = the current table.
    Resubmit {
        port: Option<u32>,
        table: Option<u8>,
    },
    Group(u32),
    Note(Vec<u8>),
    Learn(Box<Learn>),
    /// OpenFlow 1.1+ instruction.
    WriteMetadata {
        value: u64,
        mask: u64,
    },
    /// OpenFlow 1.1+ instruction.
    GotoTable(u8),
    /// `ct(...)`: through the connection tracker.
    Ct(Box<CtAction>),
    /// NXAST_OUTPUT_REG: `output:field[ofs..ofs+n_bits-1]`, the port read
    /// from the packet's key.
    OutputReg {
        field: Field,
        ofs: u8,
        n_bits: u8,
        max_len: u16,
    },
}

/// `learn(...)`: adds or refreshes a flow built from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learn {
    pub table: u8,
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub fin_idle_timeout: u16,
    pub fin_hard_timeout: u16,
    pub cookie: u64,
    pub flags: u16,
    pub specs: Vec<LearnSpec>,
}

/// Where a learn spec's bits come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnSrc {
    Field { field: Field, ofs: u8 },
    Imm(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnSpec {
    /// Match `dst[dst_ofs..]` against the source bits.
    Match {
        src: LearnSrc,
        dst: Field,
        dst_ofs: u8,
        n_bits: u8,
    },
    /// Load the source bits into `dst[dst_ofs..]` in the learned flow.
    Load {
        src: LearnSrc,
        dst: Field,
        dst_ofs: u8,
        n_bits: u8,
    },
    /// Output to the port found in the source bits.
    Output { src: LearnSrc, n_bits: u8 },
}

/// A group's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupType {
    All,
    Select,
    Indirect,
    FastFailover,
}

impl GroupType {
    pub fn from_wire(t: u8) -> Option<GroupType> {
        Some(match t {
            0 => GroupType::All,
            1 => GroupType::Select,
            2 => GroupType::Indirect,
            3 => GroupType::FastFailover,
            _ => return None,
        })
    }
    pub fn to_wire(self) -> u8 {
        match self {
            GroupType::All => 0,
            GroupType::Select => 1,
            GroupType::Indirect => 2,
            GroupType::FastFailover => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub weight: u16,
    pub watch_port: u32,
    pub watch_group: u32,
    pub actions: Vec<Action>,
}

/// Where a `ct` action's zone comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtZone {
    Imm(u16),
    /// Bits `ofs..ofs+n_bits` of a field (`zone=NXM_NX_REG0[0..15]`).
    Field {
        field: Field,
        ofs: u8,
        n_bits: u8,
    },
}

/// `ct(commit,force,zone=...,table=...,nat(...),exec(...))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtAction {
    pub commit: bool,
    pub force: bool,
    pub zone: CtZone,
    /// Recirculate to this table afterwards.
    pub table: Option<u8>,
    pub alg: u16,
    pub nat: Option<crate::conntrack::nat::NatSpec>,
    /// Actions run on the connection when committing: set_field (or
    /// load) on ct_mark and ct_label.
    pub exec: Vec<Action>,
}
