//! A bsdiff matcher over a suffix array built by libsais.
//!
//! The scan is Colin Percival's bsdiff algorithm: walk the new bytes, find
//! the longest exact match in the old bytes through the suffix array, and
//! emit an entry whenever the match found is clearly better than simply
//! continuing the current alignment; each entry's approximate match is
//! extended forwards and backwards so that small edits (changed pointers,
//! shifted offsets) become near-zero diff bytes that compress well.

use romdelta_format::ops::{BsdiffPatch, Control};

/// A suffix array over `old`, built once and searched many times.
pub struct SuffixIndex<'a> {
    old: &'a [u8],
    sa: Vec<i32>,
}

impl<'a> SuffixIndex<'a> {
    /// Builds the suffix array of `old` (which must be shorter than 2 GiB).
    pub fn new(old: &'a [u8]) -> Self {
        assert!(old.len() < i32::MAX as usize, "source window too large");
        let sa = if old.is_empty() {
            Vec::new()
        } else {
            libsais::SuffixArrayConstruction::for_text(old)
                .in_owned_buffer32()
                .single_threaded()
                .run()
                .expect("libsais suffix sorting of an in-memory byte text")
                .into_vec()
        };
        SuffixIndex { old, sa }
    }

    fn common_prefix(a: &[u8], b: &[u8]) -> usize {
        a.iter().zip(b).take_while(|(x, y)| x == y).count()
    }

    /// The longest match of a prefix of `needle` in `old`: `(position, length)`.
    pub fn longest_match(&self, needle: &[u8]) -> (usize, usize) {
        let (old, sa) = (self.old, &self.sa);
        if sa.is_empty() {
            return (0, 0);
        }
        // Binary search for the insertion point of `needle` among the sorted suffixes;
        // the longest match is at one of its two neighbours.
        let (mut lo, mut hi) = (0usize, sa.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let suf = &old[sa[mid] as usize..];
            let n = needle.len().min(suf.len());
            if suf[..n] <= needle[..n] {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut best = (0usize, 0usize);
        for i in [lo, hi] {
            if i < sa.len() {
                let p = sa[i] as usize;
                let l = Self::common_prefix(&old[p..], needle);
                if l > best.1 {
                    best = (p, l);
                }
            }
        }
        best
    }
}

/// Computes a bsdiff patch that turns `old` into `new`.
pub fn diff(old: &[u8], new: &[u8]) -> BsdiffPatch {
    let index = SuffixIndex::new(old);
    diff_with_index(&index, new)
}

/// Computes a bsdiff patch against the old bytes of a prebuilt index.
pub fn diff_with_index(index: &SuffixIndex<'_>, new: &[u8]) -> BsdiffPatch {
    let old = index.old;
    let (oldsize, newsize) = (old.len() as i64, new.len() as i64);
    let mut patch = BsdiffPatch::default();
    let at_old = |i: i64| old[i as usize];
    let at_new = |i: i64| new[i as usize];

    let (mut scan, mut len, mut pos) = (0i64, 0i64, 0i64);
    let (mut lastscan, mut lastpos, mut lastoffset) = (0i64, 0i64, 0i64);
    while scan < newsize {
        let mut oldscore = 0i64;
        scan += len;
        let mut scsc = scan;
        while scan < newsize {
            let (p, l) = index.longest_match(&new[scan as usize..]);
            pos = p as i64;
            len = l as i64;
            while scsc < scan + len {
                if scsc + lastoffset >= 0
                    && scsc + lastoffset < oldsize
                    && at_old(scsc + lastoffset) == at_new(scsc)
                {
                    oldscore += 1;
                }
                scsc += 1;
            }
            if (len == oldscore && len != 0) || len > oldscore + 8 {
                break;
            }
            if scan + lastoffset >= 0
                && scan + lastoffset < oldsize
                && at_old(scan + lastoffset) == at_new(scan)
            {
                oldscore -= 1;
            }
            scan += 1;
        }
        if len != oldscore || scan == newsize {
            // Extend the previous match forwards from lastscan ...
            let (mut s, mut best, mut lenf) = (0i64, 0i64, 0i64);
            let mut i = 0i64;
            while lastscan + i < scan && lastpos + i < oldsize {
                if at_old(lastpos + i) == at_new(lastscan + i) {
                    s += 1;
                }
                i += 1;
                if s * 2 - i > best * 2 - lenf {
                    best = s;
                    lenf = i;
                }
            }
            // ... and the new match backwards from scan.
            let mut lenb = 0i64;
            if scan < newsize {
                let (mut s, mut best) = (0i64, 0i64);
                let mut i = 1i64;
                while scan >= lastscan + i && pos >= i {
                    if at_old(pos - i) == at_new(scan - i) {
                        s += 1;
                    }
                    if s * 2 - i > best * 2 - lenb {
                        best = s;
                        lenb = i;
                    }
                    i += 1;
                }
            }
            // Where the two extensions overlap, split at the best point.
            if lastscan + lenf > scan - lenb {
                let overlap = (lastscan + lenf) - (scan - lenb);
                let (mut s, mut best, mut lens) = (0i64, 0i64, 0i64);
                for i in 0..overlap {
                    if at_new(lastscan + lenf - overlap + i) == at_old(lastpos + lenf - overlap + i)
                    {
                        s += 1;
                    }
                    if at_new(scan - lenb + i) == at_old(pos - lenb + i) {
                        s -= 1;
                    }
                    if s > best {
                        best = s;
                        lens = i + 1;
                    }
                }
                lenf += lens - overlap;
                lenb -= lens;
            }
            for i in 0..lenf {
                patch
                    .diff
                    .push(at_new(lastscan + i).wrapping_sub(at_old(lastpos + i)));
            }
            let extra_start = (lastscan + lenf) as usize;
            let extra_end = (scan - lenb) as usize;
            patch.extra.extend_from_slice(&new[extra_start..extra_end]);
            patch.controls.push(Control {
                add: lenf as u64,
                copy: (extra_end - extra_start) as u64,
                seek: (pos - lenb) - (lastpos + lenf),
            });
            lastscan = scan - lenb;
            lastpos = pos - lenb;
            lastoffset = pos - scan;
        }
    }
    // An entry that writes nothing only moves the cursor: fold its move into
    // the entry before it. Only a leading one stays (the format allows that).
    let mut controls: Vec<Control> = Vec::with_capacity(patch.controls.len());
    for c in patch.controls.drain(..) {
        match controls.last_mut() {
            Some(prev) if c.add + c.copy == 0 => prev.seek += c.seek,
            _ => controls.push(c),
        }
    }
    if controls.len() == 1 && controls[0].add + controls[0].copy == 0 {
        controls.clear();
    }
    patch.controls = controls;
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use romdelta_format::ops::{decode_bsdiff, encode_bsdiff};

    fn round_trip(old: &[u8], new: &[u8]) {
        let patch = diff(old, new);
        let data = encode_bsdiff(&patch, 3);
        let mut out = vec![0; new.len()];
        decode_bsdiff(&data, old, &mut out).unwrap();
        assert_eq!(out, new);
    }

    #[test]
    fn round_trips() {
        let old: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut new = old.clone();
        new.splice(1000..1000, b"inserted bytes".iter().copied());
        new.drain(30_000..30_500);
        for b in new.iter_mut().skip(10_000).step_by(97).take(50) {
            *b = b.wrapping_add(3);
        }
        round_trip(&old, &new);
        round_trip(&old, &[]);
        round_trip(&old, b"x");
        round_trip(b"a", &old);
        round_trip(&old[..100], &old[50..]);
    }
}
