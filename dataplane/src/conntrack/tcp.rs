//! TCP connection states as the tracker follows them: the handshake,
//! established, the closing FINs, resets; and a sequence-number sanity
//! check that refuses segments far outside what either end has sent.
use super::key::TcpInfo;

pub const FIN: u16 = 0x01;
pub const SYN: u16 = 0x02;
pub const RST: u16 = 0x04;
pub const ACK: u16 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    TimeWait,
    Closed,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT_1",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Closed => "CLOSED",
        }
    }
}

/// How far a segment may start from what its sender sent before: beyond
/// this it is not a retransmission or a window's worth of data ahead.
const MAX_SEQ_DISTANCE: u32 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTrack {
    pub state: TcpState,
    /// Highest sequence end sent per direction (0: original, 1: reply),
    /// once known.
    end: [Option<u32>; 2],
    fin: [bool; 2],
}

/// What a segment does to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Not a valid segment for this connection (+inv).
    Invalid,
    /// A new SYN for a connection that is over: start afresh.
    Reopen,
}

impl TcpTrack {
    /// The state after the first segment (original direction); None when
    /// that segment cannot open a connection (only a SYN without ACK can).
    pub fn new(t: &TcpInfo) -> Option<TcpTrack> {
        if t.flags & (SYN | ACK | RST | FIN) != SYN {
            return None;
        }
        Some(TcpTrack {
            state: TcpState::SynSent,
            end: [Some(t.seq.wrapping_add(t.len)), None],
            fin: [false; 2],
        })
    }

    /// Follows a segment sent in direction `dir` (0 original, 1 reply).
    pub fn update(&mut self, dir: usize, t: &TcpInfo) -> Verdict {
        let f = t.flags;
        if f & SYN != 0 && f & ACK == 0 && dir == 0 {
            if matches!(self.state, TcpState::TimeWait | TcpState::Closed) {
                return Verdict::Reopen;
            }
            if self.state != TcpState::SynSent {
                return Verdict::Invalid;
            }
        }
        if f & SYN != 0 && f & FIN != 0 {
            return Verdict::Invalid;
        }
        if let Some(e) = self.end[dir] {
            let d = t.seq.wrapping_sub(e);
            if d > MAX_SEQ_DISTANCE && d < u32::MAX - MAX_SEQ_DISTANCE {
                return Verdict::Invalid;
            }
        }
        let end = t.seq.wrapping_add(t.len);
        self.end[dir] = Some(match self.end[dir] {
            Some(e) if e.wrapping_sub(end) < MAX_SEQ_DISTANCE => e,
            _ => end,
        });
        if f & RST != 0 {
            self.state = TcpState::Closed;
            return Verdict::Ok;
        }
        match self.state {
            TcpState::SynSent if dir == 1 && f & (SYN | ACK) == (SYN | ACK) => {
                self.state = TcpState::SynRecv
            }
            TcpState::SynSent if dir == 1 => return Verdict::Invalid,
            TcpState::SynRecv if dir == 0 && f & ACK != 0 && f & SYN == 0 => {
                self.state = TcpState::Established
            }
            _ => {}
        }
        if f & FIN != 0 {
            self.fin[dir] = true;
            self.state = if self.fin[0] && self.fin[1] {
                TcpState::TimeWait
            } else {
                TcpState::FinWait
            };
        }
        Verdict::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u16, seq: u32, len: u32) -> TcpInfo {
        TcpInfo {
            flags,
            seq,
            ack: 0,
            len,
        }
    }

    #[test]
    fn handshake_data_and_close() {
        let mut t = TcpTrack::new(&seg(SYN, 100, 1)).unwrap();
        assert_eq!(t.update(1, &seg(SYN | ACK, 5000, 1)), Verdict::Ok);
        assert_eq!(t.state, TcpState::SynRecv);
        assert_eq!(t.update(0, &seg(ACK, 101, 0)), Verdict::Ok);
        assert_eq!(t.state, TcpState::Established);
        assert_eq!(t.update(0, &seg(ACK, 101, 1000)), Verdict::Ok);
        assert_eq!(t.update(1, &seg(ACK | FIN, 5001, 1)), Verdict::Ok);
        assert_eq!(t.state, TcpState::FinWait);
        assert_eq!(t.update(0, &seg(ACK | FIN, 1101, 1)), Verdict::Ok);
        assert_eq!(t.state, TcpState::TimeWait);
        assert_eq!(t.update(0, &seg(SYN, 9000, 1)), Verdict::Reopen);
    }

    #[test]
    fn refuses_what_cannot_be() {
        assert!(
            TcpTrack::new(&seg(ACK, 1, 0)).is_none(),
            "mid-stream ACK opens nothing"
        );
        assert!(TcpTrack::new(&seg(SYN | ACK, 1, 1)).is_none());
        let mut t = TcpTrack::new(&seg(SYN, 100, 1)).unwrap();
        assert_eq!(
            t.update(1, &seg(ACK, 7, 0)),
            Verdict::Invalid,
            "no SYN-ACK yet"
        );
        let mut t = TcpTrack::new(&seg(SYN, 100, 1)).unwrap();
        t.update(1, &seg(SYN | ACK, 5000, 1));
        assert_eq!(
            t.update(0, &seg(ACK, 100 + (1 << 31), 0)),
            Verdict::Invalid,
            "far out of window"
        );
        assert_eq!(t.update(0, &seg(RST, 101, 0)), Verdict::Ok);
        assert_eq!(t.state, TcpState::Closed);
    }
}
