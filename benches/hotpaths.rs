//! Hot paths of generation and application, with the bsdiff alternatives
//! that were measured against the chosen matcher kept as baselines.
//!
//! Inputs are a 2 MiB region of the synthetic `system` partition (old and
//! new build): executables with shifted code and changed pointers, text,
//! and blobs, as a changed region of a real ROM looks.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use romdelta_format::ops;
use std::hint::black_box;

fn region_pair() -> (Vec<u8>, Vec<u8>) {
    let (old, new) = romdelta_synth::rom_pair(1, 1);
    let find =
        |rom: &romdelta_synth::SynthRom| rom.iter().find(|(n, _)| n == "system").unwrap().1.clone();
    let (o, n) = (find(&old), find(&new));
    let at = 8 << 20;
    (
        o[at..at + (2 << 20)].to_vec(),
        n[at..at + (2 << 20)].to_vec(),
    )
}

fn hashing(c: &mut Criterion) {
    let (old, _) = region_pair();
    let mut g = c.benchmark_group("block_hash");
    g.throughput(Throughput::Bytes(old.len() as u64));
    g.bench_function("xxh3_per_block", |b| {
        b.iter(|| {
            old.chunks(4096)
                .map(xxhash_rust::xxh3::xxh3_64)
                .fold(0u64, |a, h| a ^ h)
        })
    });
    g.bench_function("sha256_whole", |b| {
        b.iter(|| romdelta_format::sha256(black_box(&old)))
    });
    g.finish();
}

fn suffix_sort(c: &mut Criterion) {
    let (old, _) = region_pair();
    let mut g = c.benchmark_group("suffix_sort");
    g.throughput(Throughput::Bytes(old.len() as u64));
    g.sample_size(10);
    g.bench_function("libsais_i32", |b| {
        b.iter(|| romdelta_diff::bsdiff::SuffixIndex::new(black_box(&old)))
    });
    g.finish();
}

fn bsdiff_encoders(c: &mut Criterion) {
    let (old, new) = region_pair();
    let mut g = c.benchmark_group("bsdiff_encode_2MiB");
    g.throughput(Throughput::Bytes(new.len() as u64));
    g.sample_size(10);
    // The chosen one: libsais suffix array + bsdiff scan, streams zstd -19
    // with the diff stream as zero runs and literals (SOURCE_BSDIFF_SPARSE);
    // and the same with the plain diff stream (SOURCE_BSDIFF).
    g.bench_function("romdelta_libsais_sparse", |b| {
        b.iter(|| ops::encode_bsdiff_sparse(&romdelta_diff::bsdiff::diff(&old, &new), 19))
    });
    g.bench_function("romdelta_libsais", |b| {
        b.iter(|| ops::encode_bsdiff(&romdelta_diff::bsdiff::diff(&old, &new), 19))
    });
    g.bench_function("romdelta_libsais_match_only", |b| {
        b.iter(|| romdelta_diff::bsdiff::diff(black_box(&old), black_box(&new)))
    });
    // Baselines: qbsdiff (BSDIFF40, bzip2) and the bsdiff crate (raw stream).
    g.bench_function("qbsdiff_1.4", |b| {
        b.iter(|| {
            let mut patch = Vec::new();
            qbsdiff::Bsdiff::new(&old, &new)
                .parallel_scheme(qbsdiff::ParallelScheme::Never)
                .compare(std::io::Cursor::new(&mut patch))
                .unwrap();
            patch
        })
    });
    g.bench_function("bsdiff_crate_0.2", |b| {
        b.iter(|| {
            let mut patch = Vec::new();
            bsdiff::diff(&old, &new, &mut patch).unwrap();
            patch
        })
    });
    g.finish();
}

fn zstd_prefix(c: &mut Criterion) {
    let (old, new) = region_pair();
    let mut g = c.benchmark_group("zstd_prefix_2MiB");
    g.throughput(Throughput::Bytes(new.len() as u64));
    g.sample_size(10);
    for level in [3, 19] {
        g.bench_with_input(BenchmarkId::new("encode", level), &level, |b, &l| {
            b.iter(|| ops::encode_source_zstd(&old, &new, l))
        });
    }
    let data = ops::encode_source_zstd(&old, &new, 19);
    let mut out = vec![0; new.len()];
    g.bench_function("decode", |b| {
        b.iter(|| ops::decode_source_zstd(&data, &old, &mut out).unwrap())
    });
    g.finish();
}

fn apply_ops(c: &mut Criterion) {
    let (old, new) = region_pair();
    let mut g = c.benchmark_group("apply_op_2MiB");
    g.throughput(Throughput::Bytes(new.len() as u64));
    let replace = ops::encode_replace(&new, 19);
    let source_zstd = ops::encode_source_zstd(&old, &new, 19);
    let patch = romdelta_diff::bsdiff::diff(&old, &new);
    let bsdiff = ops::encode_bsdiff(&patch, 19);
    let sparse = ops::encode_bsdiff_sparse(&patch, 19);
    let mut out = vec![0; new.len()];
    g.bench_function("REPLACE", |b| {
        b.iter(|| ops::decode_replace(&replace, &mut out).unwrap())
    });
    g.bench_function("SOURCE_ZSTD", |b| {
        b.iter(|| ops::decode_source_zstd(&source_zstd, &old, &mut out).unwrap())
    });
    g.bench_function("SOURCE_BSDIFF", |b| {
        b.iter(|| ops::decode_bsdiff(&bsdiff, &old, &mut out).unwrap())
    });
    g.bench_function("SOURCE_BSDIFF_SPARSE", |b| {
        b.iter(|| ops::decode_bsdiff_sparse(&sparse, &old, &mut out).unwrap())
    });
    g.bench_function("SOURCE_COPY_sha256_and_copy", |b| {
        b.iter(|| {
            let h = romdelta_format::sha256(&old);
            out.copy_from_slice(&old);
            h
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    hashing,
    suffix_sort,
    bsdiff_encoders,
    zstd_prefix,
    apply_ops
);
criterion_main!(benches);
