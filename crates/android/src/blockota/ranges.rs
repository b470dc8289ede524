//! Range sets: `N,a0,b0,a1,b1,...`, `N` numbers giving half-open block
//! ranges, in the order the command uses them.

use super::MAX_BLOCKS;
use romdelta_format::{Extent, FormatError};

/// Half-open block ranges, in order, none empty, none overlapping another.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeSet(pub Vec<(u64, u64)>);

fn bad(what: &'static str, why: impl Into<String>) -> FormatError {
    FormatError::invalid(what, why.into())
}

impl RangeSet {
    /// Parses the text form; every number is checked.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let what = "range set";
        let mut nums = s.split(',');
        let count: u64 = nums
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(what, format!("{s:?}: no count")))?;
        if count == 0 || !count.is_multiple_of(2) {
            return Err(bad(what, format!("{s:?}: a count of {count}")));
        }
        let mut v = Vec::new();
        let mut seen = 0u64;
        while let (Some(a), Some(b)) = (nums.next(), nums.next()) {
            let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) => (a, b),
                _ => return Err(bad(what, format!("{s:?}: {a},{b} are not block numbers"))),
            };
            if a >= b || b > MAX_BLOCKS {
                return Err(bad(what, format!("{s:?}: range {a}..{b}")));
            }
            v.push((a, b));
            seen += 2;
            if seen > count {
                break;
            }
        }
        if seen != count || nums.next().is_some() {
            return Err(bad(
                what,
                format!("{s:?}: {count} numbers announced, another count given"),
            ));
        }
        let r = RangeSet(v);
        let mut sorted = r.0.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(bad(what, format!("{s:?}: ranges overlap")));
        }
        Ok(r)
    }

    /// The text form.
    pub fn render(&self) -> String {
        let mut s = (self.0.len() * 2).to_string();
        for (a, b) in &self.0 {
            s.push_str(&format!(",{a},{b}"));
        }
        s
    }

    /// Blocks in all ranges.
    pub fn blocks(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }

    /// The end of the last block used, 0 for an empty set.
    pub fn end(&self) -> u64 {
        self.0.iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// The ranges as extents, in order.
    pub fn extents(&self) -> Vec<Extent> {
        self.0.iter().map(|&(a, b)| Extent::new(a, b - a)).collect()
    }

    /// Whether any block is in both sets.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0
            .iter()
            .any(|&(a, b)| other.0.iter().any(|&(c, d)| a < d && c < b))
    }

    /// Every block, in order.
    pub fn iter_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(a, b)| a..b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let r = RangeSet::parse("4,816,1108,1131,3072").unwrap();
        assert_eq!(r.0, vec![(816, 1108), (1131, 3072)]);
        assert_eq!(r.blocks(), 292 + 1941);
        assert_eq!(r.render(), "4,816,1108,1131,3072");
        // Order is kept: it places blocks in a command's buffer.
        assert_eq!(
            RangeSet::parse("4,9,10,1,2").unwrap().0,
            vec![(9, 10), (1, 2)]
        );
    }

    #[test]
    fn bounds_the_buffers_of_a_command() {
        use crate::blockota::TransferList;
        let h = "a".repeat(40);
        let ok = format!("4\n262144\n0\n0\nmove {h} 2,0,262144 262144 2,262144,524288\n");
        assert!(TransferList::parse(ok.as_bytes(), 0).is_ok());
        let big = format!("4\n262145\n0\n0\nmove {h} 2,0,262145 262145 2,262145,524290\n");
        let e = TransferList::parse(big.as_bytes(), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 5") && e.contains("at most 262144"), "{e}");
        let stash = format!("4\n0\n1\n300000\nstash {h} 2,0,300000\n");
        assert!(TransferList::parse(stash.as_bytes(), 0).is_err());
        // new, zero and erase are written a piece at a time: not bounded.
        assert!(TransferList::parse(b"4\n1000000\n0\n0\nzero 2,0,1000000\n", 0).is_ok());
    }

    #[test]
    fn refuses_bad_sets() {
        for s in [
            "",
            "0",
            "3,1,2,3",
            "2,1",
            "2,2,2",
            "2,3,1",
            "4,1,2",
            "2,1,2,3,4",
            "2,a,b",
            "-2,1,2",
            "4,0,5,4,6",
            "2,0,4294967297",
        ] {
            assert!(RangeSet::parse(s).is_err(), "{s:?}");
        }
    }
}
