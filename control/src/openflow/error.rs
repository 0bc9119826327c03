//! OpenFlow error replies: one enum for what rvs refuses, encoded per
//! version with the type/code pairs Open vSwitch uses (OpenFlow 1.0 has no
//! codes for match and group errors; those go as Nicira vendor errors,
//! which ovs-ofctl decodes by name).
use super::wire::{Writer, NX_VENDOR, OFP10};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfError {
    HelloIncompatible,
    BadVersion,
    BadType,
    BadStat,
    BadVendor,
    BadSubtype,
    BadLen,
    BufferEmpty,
    BufferUnknown,
    BadTableId,
    MultipartOverflow,
    ActionBadType,
    ActionBadLen,
    ActionBadVendor,
    ActionBadVendorType,
    ActionBadOutPort,
    ActionBadArgument,
    ActionBadOutGroup,
    ActionBadSetType,
    ActionBadSetArgument,
    InstUnknown,
    InstUnsupported,
    InstBadTableId,
    MatchBadType,
    MatchBadLen,
    MatchBadField,
    MatchBadValue,
    MatchBadMask,
    MatchBadPrereq,
    MatchDupField,
    FlowTableFull,
    FlowBadTableId,
    FlowOverlap,
    FlowBadCommand,
    GroupExists,
    GroupInvalid,
    GroupLoop,
    GroupUnknown,
    GroupBadType,
    GroupBadCommand,
    GroupBadBucket,
    GroupWatchUnsupported,
}

/// (type, code) or a Nicira vendor (type, code).
enum Code {
    Std(u16, u16),
    Nx(u16, u16),
}

impl OfError {
    fn code(self, version: u8) -> Code {
        use Code::*;
        use OfError::*;
        let of10 = version == OFP10;
        match self {
            HelloIncompatible => Std(0, 0),
            BadVersion => Std(1, 0),
            BadType => Std(1, 1),
            BadStat => Std(1, 2),
            BadVendor => Std(1, 3),
            BadSubtype => Std(1, 4),
            BadLen => Std(1, 6),
            BufferEmpty => Std(1, 7),
            BufferUnknown => Std(1, 8),
            BadTableId if of10 => Nx(1, 512),
            BadTableId => Std(1, 9),
            MultipartOverflow => Std(1, 13),
            ActionBadType => Std(2, 0),
            ActionBadLen => Std(2, 1),
            ActionBadVendor => Std(2, 2),
            ActionBadVendorType => Std(2, 3),
            ActionBadOutPort => Std(2, 4),
            ActionBadArgument => Std(2, 5),
            ActionBadOutGroup if of10 => Nx(2, 9),
            ActionBadOutGroup => Std(2, 9),
            ActionBadSetType if of10 => Std(2, 5),
            ActionBadSetType => Std(2, 13),
            ActionBadSetArgument if of10 => Std(2, 5),
            ActionBadSetArgument => Std(2, 15),
            InstUnknown if of10 => Std(1, 1),
            InstUnknown => Std(3, 0),
            InstUnsupported if of10 => Std(1, 1),
            InstUnsupported => Std(3, 1),
            InstBadTableId if of10 => Nx(1, 512),
            InstBadTableId => Std(3, 2),
            MatchBadType if of10 => Nx(1, 257),
            MatchBadType => Std(4, 0),
            MatchBadLen if of10 => Std(1, 6),
            MatchBadLen => Std(4, 1),
            MatchBadField if of10 => Nx(0, 263),
            MatchBadField => Std(4, 6),
            MatchBadValue if of10 => Nx(1, 258),
            MatchBadValue => Std(4, 7),
            MatchBadMask if of10 => Nx(1, 259),
            MatchBadMask => Std(4, 8),
            MatchBadPrereq if of10 => Nx(1, 260),
            MatchBadPrereq => Std(4, 9),
            MatchDupField if of10 => Nx(1, 261),
            MatchDupField => Std(4, 10),
            FlowTableFull if of10 => Std(3, 0),
            FlowTableFull => Std(5, 1),
            FlowBadTableId if of10 => Nx(1, 512),
            FlowBadTableId => Std(5, 2),
            FlowOverlap if of10 => Std(3, 1),
            FlowOverlap => Std(5, 3),
            FlowBadCommand if of10 => Std(3, 4),
            FlowBadCommand => Std(5, 6),
            GroupExists => grp(of10, 0),
            GroupInvalid => grp(of10, 1),
            GroupWatchUnsupported => grp(of10, 6),
            GroupLoop => grp(of10, 7),
            GroupUnknown => grp(of10, 8),
            GroupBadType => grp(of10, 10),
            GroupBadCommand => grp(of10, 11),
            GroupBadBucket => grp(of10, 12),
        }
    }

    /// The error message answering request `req` (its first 64 bytes are
    /// echoed, as the spec asks).
    pub fn encode(self, version: u8, xid: u32, req: &[u8]) -> Vec<u8> {
        let mut w = Writer::msg(version, 1, xid);
        match self.code(version) {
            Code::Std(t, c) => {
                w.u16(t).u16(c);
            }
            Code::Nx(t, c) if version == OFP10 => {
                // NXET_VENDOR (0xb0c2) / NXVC_VENDOR_ERROR, then nx_vendor_error.
                w.u16(0xb0c2).u16(0).u32(NX_VENDOR).u16(t).u16(c);
            }
            Code::Nx(t, c) => {
                // OpenFlow 1.2+: OFPET_EXPERIMENTER.
                w.u16(0xffff).u16(t).u32(NX_VENDOR);
                let _ = c;
            }
        }
        w.bytes(&req[..req.len().min(64)]);
        w.finish()
    }
}

fn grp(of10: bool, c: u16) -> Code {
    if of10 {
        Code::Nx(6, c)
    } else {
        Code::Std(6, c)
    }
}
