//! Counters per tunnel key/VNI, kept by each PMD in a small open-addressed
//! table it alone writes (keys are claimed once, never moved); the control
//! thread sums them over PMDs. Keys beyond the table's room share one
//! overflow row.
use super::conf::TunnelKind;
use crate::stats::Counter;
use std::sync::atomic::{AtomicU64, Ordering};

const ROWS: usize = 256;
const PROBES: usize = 8;
/// The overflow row's tag.
pub const OTHER: u64 = u64::MAX;

#[derive(Default)]
pub struct KeyRow {
    tag: AtomicU64,
    pub encap: Counter,
    pub decap: Counter,
    pub dropped: Counter,
}

pub struct KeyStats {
    rows: Box<[KeyRow]>,
}

impl Default for KeyStats {
    fn default() -> Self {
        KeyStats {
            rows: (0..ROWS + 1).map(|_| KeyRow::default()).collect(),
        }
    }
}

/// (kind, key) as a non-zero tag.
pub fn tag(kind: TunnelKind, key: u64) -> u64 {
    ((kind as u64 + 1) << 56) | (key & 0x00ff_ffff_ffff_ffff)
}

/// The (kind, key) of a tag; None for the overflow row.
pub fn untag(t: u64) -> Option<(TunnelKind, u64)> {
    let kind = match t >> 56 {
        1 => TunnelKind::Gre,
        2 => TunnelKind::Vxlan,
        _ => return None,
    };
    Some((kind, t & 0x00ff_ffff_ffff_ffff))
}

impl KeyStats {
    /// The row of (kind, key), claimed on first use. Only the owning PMD
    /// calls this.
    #[inline]
    pub fn row(&self, kind: TunnelKind, key: u64) -> &KeyRow {
        let t = tag(kind, key);
        let h = (t.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % ROWS;
        for i in 0..PROBES {
            let r = &self.rows[(h + i) % ROWS];
            match r.tag.load(Ordering::Relaxed) {
                x if x == t => return r,
                0 => {
                    r.tag.store(t, Ordering::Release);
                    return r;
                }
                _ => {}
            }
        }
        let o = &self.rows[ROWS];
        o.tag.store(OTHER, Ordering::Relaxed);
        o
    }

    /// (tag, encap, decap, dropped) of every claimed row.
    pub fn rows(&self) -> impl Iterator<Item = (u64, u64, u64, u64)> + '_ {
        self.rows.iter().filter_map(|r| {
            let t = r.tag.load(Ordering::Acquire);
            (t != 0).then(|| (t, r.encap.get(), r.decap.get(), r.dropped.get()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_per_kind_and_key_and_overflow_is_shared() {
        let s = KeyStats::default();
        s.row(TunnelKind::Gre, 5).encap.add(2);
        s.row(TunnelKind::Vxlan, 5).decap.add(3);
        s.row(TunnelKind::Gre, 5).dropped.add(1);
        let mut v: Vec<_> = s.rows().collect();
        v.sort();
        assert_eq!(
            v,
            vec![
                (tag(TunnelKind::Gre, 5), 2, 0, 1),
                (tag(TunnelKind::Vxlan, 5), 0, 3, 0)
            ]
        );
        for k in 0..2000 {
            s.row(TunnelKind::Gre, 1000 + k).decap.add(1);
        }
        let total: u64 = s.rows().map(|r| r.2).sum();
        assert_eq!(total, 3 + 2000);
        assert!(s.rows().any(|r| r.0 == OTHER));
        assert_eq!(
            untag(tag(TunnelKind::Vxlan, 77)),
            Some((TunnelKind::Vxlan, 77))
        );
    }
}
