//! The float32 matrix-vector kernel `y = A·x` over a block of rows (row-major `A`).
//!
//! One portable body, written so that LLVM vectorizes it (independent lane
//! accumulators, four rows sharing each load of `x`), is compiled twice: for the
//! baseline target and with AVX2+FMA. [`sgemv_rows`] picks the best at run time.
//! Row parallelism (rayon) is the caller's job; this is the single-thread inner loop.
//!
//! Cache blocking: each block of [`ROWS`] rows reads `x` once per lane chunk, and for
//! wide matrices the columns are walked in blocks of [`COL_BLOCK`] floats so that the
//! `x` block stays in L1 while every row of the caller's chunk streams past it.

use std::sync::OnceLock;

/// Rows per register block.
pub const ROWS: usize = 4;
/// Independent accumulator lanes per row (two AVX registers).
const LANES: usize = 16;
/// Column block (floats) used when a row is wider than `2 * COL_BLOCK`.
pub const COL_BLOCK: usize = 4096;

/// Which compiled variant [`sgemv_rows`] uses on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelIsa {
    /// Baseline x86-64 (SSE2) or non-x86 code.
    Baseline,
    /// AVX2 with fused multiply-add.
    Avx2Fma,
}

impl KernelIsa {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelIsa::Baseline => "baseline",
            KernelIsa::Avx2Fma => "avx2+fma",
        }
    }
}

/// The variant chosen for this CPU (detected once).
pub fn isa() -> KernelIsa {
    static ISA: OnceLock<KernelIsa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return KernelIsa::Avx2Fma;
            }
        }
        KernelIsa::Baseline
    })
}

/// `y[i] = Σ_j a[i*cols + j] * x[j]` for every `i < y.len()`.
///
/// # Panics
/// If `x.len() != cols` or `a.len() != y.len() * cols`.
pub fn sgemv_rows(a: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    assert_eq!(
        x.len(),
        cols,
        "x has {} elements, the matrix {cols} columns",
        x.len()
    );
    assert_eq!(a.len(), y.len() * cols, "matrix block is not rows*cols");
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2Fma only after `is_x86_feature_detected!`
        // confirmed both AVX2 and FMA on this CPU, which is the only precondition of
        // calling a `#[target_feature(enable = "avx2,fma")]` function.
        KernelIsa::Avx2Fma => unsafe { sgemv_avx2_fma(a, cols, x, y) },
        _ => body::<false>(a, cols, x, y),
    }
}

/// The portable body compiled for the baseline target only (for tests and reports).
pub fn sgemv_rows_baseline(a: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), cols);
    assert_eq!(a.len(), y.len() * cols);
    body::<false>(a, cols, x, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sgemv_avx2_fma(a: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    if cols > 2 * COL_BLOCK {
        // Long rows: the column-blocked body keeps the x block in cache.
        return body::<true>(a, cols, x, y);
    }
    // Rows short enough for x to stay in L1/L2: whole rows, four at a time.
    for (yb, ab) in y.chunks_mut(ROWS).zip(a.chunks(ROWS * cols)) {
        if yb.len() == ROWS {
            let (r0, rest) = ab.split_at(cols);
            let (r1, rest) = rest.split_at(cols);
            let (r2, r3) = rest.split_at(cols);
            // SAFETY: this function runs only after `isa()` detected AVX2 and FMA; each row
            // is exactly `cols == x.len()` long.
            yb.copy_from_slice(&unsafe { dot4_avx2_fma([r0, r1, r2, r3], x) });
        } else {
            for (yi, row) in yb.iter_mut().zip(ab.chunks(cols)) {
                *yi = dot1::<true>(row, x);
            }
        }
    }
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn body<const FMA: bool>(a: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let block = if cols > 2 * COL_BLOCK {
        COL_BLOCK
    } else {
        cols
    };
    let mut c0 = 0;
    while c0 < cols {
        let c1 = (c0 + block).min(cols);
        let first = c0 == 0;
        let xb = &x[c0..c1];
        let mut rows = y.chunks_mut(ROWS).zip(a.chunks(ROWS * cols));
        for (yb, ab) in &mut rows {
            if yb.len() == ROWS {
                let r0 = &ab[c0..c1];
                let r1 = &ab[cols + c0..cols + c1];
                let r2 = &ab[2 * cols + c0..2 * cols + c1];
                let r3 = &ab[3 * cols + c0..3 * cols + c1];
                let s = dot4::<FMA>([r0, r1, r2, r3], xb);
                for (yi, si) in yb.iter_mut().zip(s) {
                    *yi = if first { si } else { *yi + si };
                }
            } else {
                for (i, yi) in yb.iter_mut().enumerate() {
                    let s = dot1::<FMA>(&ab[i * cols + c0..i * cols + c1], xb);
                    *yi = if first { s } else { *yi + s };
                }
            }
        }
        c0 = c1;
    }
}

#[inline(always)]
fn hsum(v: &[f32; LANES]) -> f32 {
    // Pairwise, so the compiler can keep it in registers.
    let mut h = [0.0f32; LANES / 2];
    for i in 0..LANES / 2 {
        h[i] = v[i] + v[i + LANES / 2];
    }
    let mut q = [0.0f32; LANES / 4];
    for i in 0..LANES / 4 {
        q[i] = h[i] + h[i + LANES / 4];
    }
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Four dot products with AVX2 + FMA intrinsics: two 8-lane accumulators per row, so eight
/// independent FMA chains hide the FMA latency (the portable form below reaches ~60 % of
/// this at n = 100). A ragged tail (`n` not a multiple of 8) is one masked load per row,
/// and the four rows reduce together (three horizontal adds and one add give all four
/// sums): at n = 100 the scalar tail and four separate reductions took a fifth of the time.
///
/// # Safety
/// The CPU must support AVX2 and FMA; every row must be at least `x.len()` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2_fma(r: [&[f32]; ROWS], x: &[f32]) -> [f32; ROWS] {
    use std::arch::x86_64::*;
    let n = x.len();
    debug_assert!(r.iter().all(|row| row.len() >= n));
    let (xp, p) = (
        x.as_ptr(),
        [r[0].as_ptr(), r[1].as_ptr(), r[2].as_ptr(), r[3].as_ptr()],
    );
    let mut s = [_mm256_setzero_ps(); 8];
    let mut j = 0;
    // SAFETY: every load reads 8 floats at offset `j`, `j + 8 <= n` (16 for the pair), and
    // each row and `x` are at least `n` long (contract); unaligned loads need no alignment.
    // The masked loads read only the `n - j < 8` lanes whose mask is set, all below `n`.
    unsafe {
        while j + 16 <= n {
            let (xa, xb) = (_mm256_loadu_ps(xp.add(j)), _mm256_loadu_ps(xp.add(j + 8)));
            for k in 0..ROWS {
                s[k] = _mm256_fmadd_ps(_mm256_loadu_ps(p[k].add(j)), xa, s[k]);
                s[k + 4] = _mm256_fmadd_ps(_mm256_loadu_ps(p[k].add(j + 8)), xb, s[k + 4]);
            }
            j += 16;
        }
        if j + 8 <= n {
            let xa = _mm256_loadu_ps(xp.add(j));
            for k in 0..ROWS {
                s[k] = _mm256_fmadd_ps(_mm256_loadu_ps(p[k].add(j)), xa, s[k]);
            }
            j += 8;
        }
        if j < n {
            // Lane i is loaded when i < n - j (its mask word's sign bit is set).
            let left = (n - j) as i32;
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(left),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let xa = _mm256_maskload_ps(xp.add(j), mask);
            for k in 0..ROWS {
                s[k + 4] = _mm256_fmadd_ps(_mm256_maskload_ps(p[k].add(j), mask), xa, s[k + 4]);
            }
        }
    }
    let v: [__m256; ROWS] = std::array::from_fn(|k| _mm256_add_ps(s[k], s[k + 4]));
    // hadd(v0, v1) = [v0 pairs, v1 pairs | v0 pairs, v1 pairs] per 128-bit half; a second
    // hadd with (v2, v3) leaves each row's two half-sums in lane k of each half.
    let h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    let sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    let mut out = [0.0f32; ROWS];
    // SAFETY: `out` is 4 floats, what an unaligned 128-bit store writes.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), sums) };
    out
}

#[inline(always)]
fn dot4<const FMA: bool>(r: [&[f32]; ROWS], x: &[f32]) -> [f32; ROWS] {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: `FMA = true` is only instantiated inside `sgemv_avx2_fma`, which runs only
        // after `isa()` detected AVX2 and FMA; `body` slices every row to `x.len()`.
        return unsafe { dot4_avx2_fma(r, x) };
    }
    // Fixed-size chunks: no bounds checks inside, so LLVM turns each 16-lane update
    // into two vector FMAs per row; 4 rows × 2 registers = 8 independent chains.
    let (xc, tail_x) = x.as_chunks::<LANES>();
    let (c0, t0) = r[0].as_chunks::<LANES>();
    let (c1, t1) = r[1].as_chunks::<LANES>();
    let (c2, t2) = r[2].as_chunks::<LANES>();
    let (c3, t3) = r[3].as_chunks::<LANES>();
    let n = xc
        .len()
        .min(c0.len())
        .min(c1.len())
        .min(c2.len())
        .min(c3.len());
    let (mut s0, mut s1, mut s2, mut s3) = (
        [0.0f32; LANES],
        [0.0f32; LANES],
        [0.0f32; LANES],
        [0.0f32; LANES],
    );
    for i in 0..n {
        let (xv, a0, a1, a2, a3) = (&xc[i], &c0[i], &c1[i], &c2[i], &c3[i]);
        for l in 0..LANES {
            s0[l] = madd::<FMA>(a0[l], xv[l], s0[l]);
            s1[l] = madd::<FMA>(a1[l], xv[l], s1[l]);
            s2[l] = madd::<FMA>(a2[l], xv[l], s2[l]);
            s3[l] = madd::<FMA>(a3[l], xv[l], s3[l]);
        }
    }
    let mut out = [hsum(&s0), hsum(&s1), hsum(&s2), hsum(&s3)];
    for (k, t) in [t0, t1, t2, t3].into_iter().enumerate() {
        for (a, b) in t.iter().zip(tail_x) {
            out[k] = madd::<FMA>(*a, *b, out[k]);
        }
    }
    out
}

#[inline(always)]
fn dot1<const FMA: bool>(r: &[f32], x: &[f32]) -> f32 {
    let (xc, tx) = x.as_chunks::<LANES>();
    let (rc, tr) = r.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (xv, av) in xc.iter().zip(rc) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(av[l], xv[l], acc[l]);
        }
    }
    let mut s = hsum(&acc);
    for (a, b) in tr.iter().zip(tx) {
        s = madd::<FMA>(*a, *b, s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], cols: usize, x: &[f32]) -> Vec<f64> {
        a.chunks(cols)
            .map(|r| {
                r.iter()
                    .zip(x)
                    .map(|(p, q)| f64::from(*p) * f64::from(*q))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn every_variant_matches_a_f64_reference_on_odd_shapes() {
        for &(rows, cols) in &[
            (1, 1),
            (3, 5),
            (4, 16),
            (7, 33),
            (13, 100),
            (9, 8200),
            (5, 10001),
        ] {
            let a: Vec<f32> = (0..rows * cols)
                .map(|i| ((i % 7) as f32) * 0.25 - 0.5)
                .collect();
            let x: Vec<f32> = (0..cols).map(|i| ((i % 5) as f32) * 0.5 - 1.0).collect();
            let want = reference(&a, cols, &x);
            let mut y = vec![f32::NAN; rows];
            sgemv_rows(&a, cols, &x, &mut y);
            let mut yb = vec![f32::NAN; rows];
            sgemv_rows_baseline(&a, cols, &x, &mut yb);
            for i in 0..rows {
                let tol = 1e-4 * (cols as f64).max(1.0);
                assert!(
                    (f64::from(y[i]) - want[i]).abs() <= tol,
                    "{rows}x{cols} row {i}: {} vs {}",
                    y[i],
                    want[i]
                );
                assert!((f64::from(yb[i]) - want[i]).abs() <= tol);
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p harness --lib -- --ignored --nocapture kernel_speed`
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn kernel_speed() {
        for n in [100usize, 1000] {
            let a: Vec<f32> = (0..n * n).map(|i| ((i % 7) as f32) * 0.25).collect();
            let x: Vec<f32> = (0..n).map(|i| ((i % 5) as f32) * 0.5).collect();
            let mut y = vec![0.0f32; n];
            for (name, f) in [
                (
                    "dispatch",
                    sgemv_rows as fn(&[f32], usize, &[f32], &mut [f32]),
                ),
                ("baseline", sgemv_rows_baseline),
            ] {
                let reps = (200_000_000 / (n * n)).max(10);
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    f(
                        std::hint::black_box(&a),
                        n,
                        std::hint::black_box(&x),
                        &mut y,
                    );
                }
                let s = t.elapsed().as_secs_f64();
                println!(
                    "n={n} {name}: {:.2} GFLOP/s ({:.3} us/op)",
                    2.0 * (n * n) as f64 * reps as f64 / s / 1e9,
                    s / reps as f64 * 1e6
                );
            }
        }
    }
}
