//! A bsdiff matcher over a suffix array built by libsais.
//!
//! The scan is Colin Percival's bsdiff algorithm: walk the new bytes, find
//! the longest exact match in the old bytes through the suffix array, and
//! emit an entry whenever the match found is clearly better than simply
//! continuing the current alignment; each entry's approximate match is
//! extended forwards and backwards so that small edits (changed pointers,
//! shifted offsets) become near-zero diff bytes that compress well.

use romdelta_format::ops::{BsdiffPatch, Control};

/// Texts from this length on get three-byte buckets (a 64 MiB table that
/// saves eight more cache-missing steps of every search of a kernel-sized
/// text); shorter ones two-byte buckets (256 KiB).
const WIDE_BUCKETS_FROM: usize = 32 << 20;

/// A suffix array over `old`, built once and searched many times.
pub struct SuffixIndex<'a> {
    old: &'a [u8],
    sa: Vec<i32>,
    /// Bytes of the prefix the buckets sort by: 2 or 3.
    width: usize,
    /// `buckets[k]..buckets[k + 1]` is the range of the suffix array whose
    /// suffixes start with the `width` bytes `k` (big-endian); it narrows
    /// each binary search by 16 or 24 steps, the ones that miss the cache
    /// most.
    buckets: Vec<u32>,
}

impl<'a> SuffixIndex<'a> {
    /// Builds the suffix array of `old` (which must be shorter than 2 GiB).
    pub fn new(old: &'a [u8]) -> Self {
        Self::with_width(old, if old.len() >= WIDE_BUCKETS_FROM { 3 } else { 2 })
    }

    /// Builds the suffix array of `old` with buckets of `width` (2 or 3)
    /// bytes.
    fn with_width(old: &'a [u8], width: usize) -> Self {
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
        let key = |w: &[u8]| w.iter().fold(0usize, |k, &b| k << 8 | b as usize);
        let n = 1usize << (8 * width);
        let mut buckets = vec![0u32; n + 1];
        for w in old.windows(width) {
            buckets[key(w) + 1] += 1;
        }
        // The suffixes shorter than `width` (the last `width - 1`) each sort
        // before every longer suffix they are a prefix of: a suffix of
        // length m lands just before the bucket of its bytes padded with
        // zeros, after any shorter one landing there.
        let short: Vec<usize> = (1..width)
            .filter(|&m| m <= old.len())
            .map(|m| key(&old[old.len() - m..]) << (8 * (width - m)))
            .collect();
        let mut start = 0u32;
        for k in 0..n {
            start += short.iter().filter(|&&at| at == k).count() as u32;
            let count = buckets[k + 1];
            buckets[k] = start;
            start += count;
        }
        buckets[n] = start;
        debug_assert_eq!(start as usize, sa.len());
        SuffixIndex {
            old,
            sa,
            width,
            buckets,
        }
    }

    /// Length of the common prefix of `a` and `b`, eight bytes at a time.
    fn common_prefix(a: &[u8], b: &[u8]) -> usize {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut i = 0;
        for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
            let y = u64::from_le_bytes(y.try_into().expect("8 bytes"));
            if x != y {
                return i + ((x ^ y).trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        i + a[i..]
            .iter()
            .zip(&b[i..])
            .take_while(|(x, y)| x == y)
            .count()
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
        if needle.len() >= self.width {
            let k = needle[..self.width]
                .iter()
                .fold(0usize, |k, &b| k << 8 | b as usize);
            let (b, e) = (self.buckets[k] as usize, self.buckets[k + 1] as usize);
            if e > b {
                // Every suffix in the bucket shares `width` bytes with the
                // needle, and no suffix outside it shares as many.
                (lo, hi) = (b, e);
            } else if self.width == 3 {
                // No suffix shares three bytes: those sharing two, if any.
                let k2 = k >> 8 << 8;
                let (b, e) = (self.buckets[k2] as usize, self.buckets[k2 + 256] as usize);
                if e > b {
                    (lo, hi) = (b, e);
                }
            }
        }
        // Every suffix between `lo` and `hi` shares with the needle at
        // least the shorter of their common prefixes with it (the suffixes
        // are sorted), so each comparison starts there: a long match costs
        // its length once, not once per step.
        let lcp = |i: usize, from: usize| {
            let suf = &old[sa[i] as usize..];
            from + Self::common_prefix(
                &suf[from.min(suf.len())..],
                &needle[from.min(needle.len())..],
            )
        };
        let mut lcp_lo = lcp(lo, 0);
        let mut lcp_hi = if hi < sa.len() { lcp(hi, 0) } else { 0 };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let suf = &old[sa[mid] as usize..];
            let l = lcp(mid, lcp_lo.min(lcp_hi));
            // `suf[..n] <= needle[..n]`, n the shorter length, from the first difference.
            let n = needle.len().min(suf.len());
            if l >= n || suf[l] < needle[l] {
                lo = mid;
                lcp_lo = l;
            } else {
                hi = mid;
                lcp_hi = l;
            }
        }
        let mut best = (0usize, 0usize);
        for (i, l) in [(lo, lcp_lo), (hi, lcp_hi)] {
            if i < sa.len() && l > best.1 {
                best = (sa[i] as usize, l);
            }
        }
        best
    }
}

/// Match length from which the scan, stepping one byte on, takes the rest
/// of the match as the longest match there instead of searching again.
///
/// Where a long match is barely better than the current alignment (a
/// kernel's code, shifted, with a changed displacement every few hundred
/// bytes), the scan steps through it byte by byte and each search
/// compares the whole rest of the match again: quadratic, 38 GB of
/// comparisons for a 66 MB kernel. A longer match starting inside a long
/// one is rare, and the scan searches again once the rest is short; on
/// that kernel the patch is the same byte for byte, found in 5.4 s
/// instead of 13.9 s.
const LONG_MATCH: i64 = 512;

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
        let mut first = true;
        while scan < newsize {
            // One byte on from a long match, its rest is taken as the
            // longest match without a search (see `LONG_MATCH`).
            if first || len < LONG_MATCH {
                let (p, l) = index.longest_match(&new[scan as usize..]);
                pos = p as i64;
                len = l as i64;
            } else {
                pos += 1;
                len -= 1;
            }
            first = false;
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

/// One piece of a patch's alignment, in the order of the new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// `len` new bytes made by adding diff bytes to the old bytes at `src`.
    Add {
        /// First old byte.
        src: u64,
        /// Bytes.
        len: u64,
    },
    /// `len` new bytes copied literally.
    Copy {
        /// Bytes.
        len: u64,
    },
}

impl Run {
    fn len(&self) -> u64 {
        match *self {
            Run::Add { len, .. } | Run::Copy { len } => len,
        }
    }
}

/// The runs of a patch's `controls`, or `None` when they read before the
/// old bytes' start.
pub fn runs(controls: &[Control]) -> Option<Vec<Run>> {
    let mut out = Vec::with_capacity(controls.len() * 2);
    let mut old = 0i64;
    for c in controls {
        if c.add > 0 {
            out.push(Run::Add {
                src: u64::try_from(old).ok()?,
                len: c.add,
            });
        }
        if c.copy > 0 {
            out.push(Run::Copy { len: c.copy });
        }
        old = old
            .checked_add(i64::try_from(c.add).ok()?)?
            .checked_add(c.seek)?;
    }
    Some(out)
}

/// The part of `runs` (covering new bytes from 0) that covers new bytes
/// `lo..hi`.
fn clip(runs: &[Run], lo: u64, hi: u64) -> Vec<Run> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for r in runs {
        let (a, b) = (at.max(lo), (at + r.len()).min(hi));
        if a < b {
            out.push(match *r {
                Run::Add { src, .. } => Run::Add {
                    src: src + (a - at),
                    len: b - a,
                },
                Run::Copy { .. } => Run::Copy { len: b - a },
            });
        }
        at += r.len();
        if at >= hi {
            break;
        }
    }
    out
}

/// The patch whose alignment is `runs` from `old` to `new`: its diff bytes
/// `new - old` along each add run, its extra bytes the copied ones. `None`
/// when a run reads past `old` or the runs do not cover exactly `new`.
pub fn from_runs(runs: &[Run], old: &[u8], new: &[u8]) -> Option<BsdiffPatch> {
    let mut patch = BsdiffPatch::default();
    let (mut cursor, mut at) = (0u64, 0usize);
    for r in runs {
        let len = usize::try_from(r.len()).ok()?;
        let dst = new.get(at..at.checked_add(len)?)?;
        at += len;
        match *r {
            Run::Add { src, len } => {
                let from = usize::try_from(src).ok()?;
                let o = old.get(from..from.checked_add(dst.len())?)?;
                patch
                    .diff
                    .extend(dst.iter().zip(o).map(|(d, s)| d.wrapping_sub(*s)));
                match patch.controls.last_mut() {
                    // The last entry's seek is always still 0 here.
                    Some(l) if l.copy == 0 && cursor == src => l.add += len,
                    last => {
                        let seek = i64::try_from(src).ok()? - i64::try_from(cursor).ok()?;
                        match last {
                            Some(l) => l.seek = seek,
                            None if seek != 0 => patch.controls.push(Control {
                                add: 0,
                                copy: 0,
                                seek,
                            }),
                            None => {}
                        }
                        patch.controls.push(Control {
                            add: len,
                            copy: 0,
                            seek: 0,
                        });
                    }
                }
                cursor = src + len;
            }
            Run::Copy { len } => {
                patch.extra.extend_from_slice(dst);
                match patch.controls.last_mut() {
                    Some(l) => l.copy += len,
                    None => patch.controls.push(Control {
                        add: 0,
                        copy: len,
                        seek: 0,
                    }),
                }
            }
        }
    }
    (at == new.len()).then_some(patch)
}

/// A patch from `old` to `new` that follows the alignment of `controls`
/// (a patch between bytes of these lengths) except inside `new_ranges`,
/// where it is matched afresh against the old bytes of `old_ranges` only.
///
/// For bytes transformed in place (branch displacements, relocation
/// fields) the plain alignment holds wherever the transform did not
/// change the bytes' shape, so only the ranges it rewrote need a second
/// match, and against their own kind. Ranges are `(offset, len)`, sorted
/// and disjoint.
pub fn rematch(
    controls: &[Control],
    old: &[u8],
    new: &[u8],
    old_ranges: &[(u64, u64)],
    new_ranges: &[(u64, u64)],
) -> Option<BsdiffPatch> {
    let plain = runs(controls)?;
    let mut sub = Vec::new();
    let mut starts = Vec::with_capacity(old_ranges.len());
    for &(o, l) in old_ranges {
        starts.push((sub.len() as u64, o));
        let o = usize::try_from(o).ok()?;
        sub.extend_from_slice(old.get(o..o.checked_add(usize::try_from(l).ok()?)?)?);
    }
    let index = SuffixIndex::new(&sub);
    let mut out = Vec::new();
    let mut done = 0u64;
    for &(a, l) in new_ranges {
        let b = a.checked_add(l)?;
        if a < done || b > new.len() as u64 {
            return None;
        }
        out.extend(clip(&plain, done, a));
        let patch = diff_with_index(&index, &new[a as usize..b as usize]);
        for r in runs(&patch.controls)? {
            let Run::Add { mut src, mut len } = r else {
                out.push(r);
                continue;
            };
            // Back to `old`'s offsets, split where the ranges were joined.
            while len > 0 {
                let i = starts.partition_point(|&(s, _)| s <= src) - 1;
                let (s, o) = starts[i];
                let end = starts.get(i + 1).map_or(sub.len() as u64, |n| n.0);
                let n = len.min(end - src);
                out.push(Run::Add {
                    src: o + (src - s),
                    len: n,
                });
                (src, len) = (src + n, len - n);
            }
        }
        done = b;
    }
    out.extend(clip(&plain, done, new.len() as u64));
    from_runs(&out, old, new)
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
        for (index, _) in [2, 3]
            .map(|w| (SuffixIndex::with_width(&old, w), w))
            .iter()
            .flat_map(|x| std::iter::repeat_n(x, 250))
        {
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
        // The last suffixes are shorter than the buckets' width.
        for w in [2, 3] {
            let one = SuffixIndex::with_width(b"ba", w);
            assert_eq!(one.longest_match(b"a").1, 1);
            assert_eq!(one.longest_match(b"ab").1, 1);
            assert_eq!(one.longest_match(b"bab").1, 2);
            let two = SuffixIndex::with_width(b"aaa", w);
            assert_eq!(two.longest_match(b"aab").1, 2);
            assert_eq!(two.longest_match(b"aaaa").1, 3);
        }
    }

    #[test]
    fn long_matches_with_scattered_edits_round_trip() {
        // Matches far longer than `LONG_MATCH`, barely better than the
        // shifted alignment: the scan steps through them without searching.
        let old: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let mut new = old[7..].to_vec();
        for i in (0..new.len()).step_by(3001) {
            new[i] ^= 0x55;
        }
        new.splice(50_000..50_000, old[120_000..125_000].iter().copied());
        round_trip(&old, &new);
    }

    #[test]
    fn patches_built_from_runs_decode_to_their_target() {
        let mut x = 99u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let old: Vec<u8> = (0..20_000).map(|_| next() as u8).collect();
        let mut new = old[100..9000].to_vec();
        new.extend((0..700).map(|_| next() as u8));
        new.extend_from_slice(&old[3000..12_000]);
        for b in new.iter_mut().step_by(37) {
            *b = b.wrapping_add(1);
        }
        let plain = diff(&old, &new);
        let decode = |p: &BsdiffPatch| {
            let mut out = vec![0; new.len()];
            decode_bsdiff(&encode_bsdiff(p, 3), &old, &mut out).map(|_| out)
        };
        // The plain alignment's runs give the same bytes back.
        let again = from_runs(&runs(&plain.controls).unwrap(), &old, &new).unwrap();
        assert_eq!(decode(&again).unwrap(), new);
        // Rematched in ranges, against ranges of the old bytes.
        let patch = rematch(
            &plain.controls,
            &old,
            &new,
            &[(0, 500), (2900, 4000), (15_000, 5000)],
            &[
                (10, 1000),
                (8000, 3000),
                (18_000, new.len() as u64 - 18_000),
            ],
        )
        .unwrap();
        assert_eq!(decode(&patch).unwrap(), new);
        // Runs that read past the old bytes or miss new bytes are refused.
        let past = [
            Run::Add {
                src: 19_999,
                len: 2,
            },
            Run::Copy {
                len: new.len() as u64 - 2,
            },
        ];
        assert!(from_runs(&past, &old, &new).is_none());
        assert!(from_runs(&[Run::Copy { len: 5 }], &old, &new).is_none());
        assert!(rematch(&plain.controls, &old, &new, &[], &[(5, new.len() as u64)]).is_none());
        // A leading seek, and copies before any add.
        let lead = [
            Run::Copy { len: 3 },
            Run::Add { src: 500, len: 10 },
            Run::Add { src: 510, len: 10 },
            Run::Add {
                src: 0,
                len: new.len() as u64 - 23,
            },
        ];
        let p = from_runs(&lead, &old, &new).unwrap();
        assert_eq!(p.controls.len(), 3, "the two adjacent adds joined");
        assert_eq!(decode(&p).unwrap(), new);
        let seek = [Run::Add {
            src: 40,
            len: new.len() as u64,
        }];
        assert_eq!(decode(&from_runs(&seek, &old, &new).unwrap()).unwrap(), new);
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
