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
    /// `buckets[k]..buckets[k + 1]` is the range of the suffix array whose
    /// suffixes start with the two bytes `k = b0 << 8 | b1`; it narrows each
    /// binary search by 16 steps, the ones that miss the cache most.
    buckets: Vec<u32>,
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
        let mut buckets = vec![0u32; 65537];
        for &p in &sa {
            let p = p as usize;
            if p + 1 < old.len() {
                buckets[((old[p] as usize) << 8 | old[p + 1] as usize) + 1] += 1;
            }
        }
        // Suffixes of one byte sort before every two-byte suffix that starts
        // with the same byte: account for the (single) last suffix.
        let mut start = 0u32;
        let last = old.last().map(|&b| b as usize);
        for k in 0..65536 {
            if last == Some(k >> 8) && k & 0xff == 0 {
                start += 1;
            }
            let count = buckets[k + 1];
            buckets[k] = start;
            start += count;
        }
        buckets[65536] = start;
        SuffixIndex { old, sa, buckets }
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
        if needle.len() >= 2 {
            let k = (needle[0] as usize) << 8 | needle[1] as usize;
            let (b, e) = (self.buckets[k] as usize, self.buckets[k + 1] as usize);
            if e > b {
                // Every suffix in the bucket shares two bytes with the needle,
                // and no suffix outside it shares more than one.
                (lo, hi) = (b, e);
            }
        }
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
    fn longest_match_equals_brute_force() {
        // Small alphabet, so that two-byte buckets are crowded and empty ones exist.
        let mut x = 12345u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let old: Vec<u8> = (0..3000).map(|_| b"abcab"[(next() % 5) as usize]).collect();
        let index = SuffixIndex::new(&old);
        for _ in 0..500 {
            let len = 1 + (next() % 12) as usize;
            let needle: Vec<u8> = (0..len).map(|_| b"abcdz"[(next() % 5) as usize]).collect();
            let brute = (0..old.len())
                .map(|p| SuffixIndex::common_prefix(&old[p..], &needle))
                .max()
                .unwrap();
            let (pos, got) = index.longest_match(&needle);
            assert_eq!(got, brute, "needle {needle:?}");
            assert_eq!(&old[pos..pos + got], &needle[..got]);
        }
        // The last suffix is a single byte.
        let one = SuffixIndex::new(b"ba");
        assert_eq!(one.longest_match(b"a").1, 1);
        assert_eq!(one.longest_match(b"ab").1, 1);
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
