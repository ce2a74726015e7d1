//! The CPU MVM kernel as the cases run it: row-parallel over the cores with rayon, each
//! row block through `harness_sys::kernel::sgemv_rows` (vectorized, cache-blocked).
//!
//! The pool's threads are pinned, thread 0 to the compute core and the others to the
//! remaining cores in order. Small matrices run on one thread: waking a sleeping
//! worker costs more than the whole product.

use rayon::ThreadPool;

use crate::error::{Context, Result};
use crate::spawn::pin_to;

/// Below this many matrix elements the kernel runs on the calling thread only
/// (1 Mi floats take ~100 µs on one core; a worker wake-up costs 5–20 µs).
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

/// Row blocks per worker: the calling thread starts on the first block at once and a
/// worker that wakes late steals what is left, so a slow wake-up costs part of a block,
/// not half the product.
const CHUNKS_PER_THREAD: usize = 8;

/// The kernel for one matrix shape and thread count.
#[derive(Debug)]
pub struct MvmKernel {
    pool: ThreadPool,
    rows: usize,
    cols: usize,
    threads: usize,
    chunk_rows: usize,
}

/// Whether a `rows × cols` product with `threads` threads runs row-parallel.
pub fn is_parallel(rows: usize, cols: usize, threads: usize) -> bool {
    threads > 1 && rows >= 2 * harness_sys::kernel::ROWS && rows * cols >= PARALLEL_MIN_ELEMENTS
}

impl MvmKernel {
    /// A kernel for `rows × cols`, with `threads` workers pinned to `cpus` in order.
    pub fn new(rows: usize, cols: usize, threads: usize, cpus: Vec<usize>) -> Result<Self> {
        let threads = if is_parallel(rows, cols, threads) {
            threads
        } else {
            1
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mvm-{i}"))
            .start_handler(move |i| {
                if let Some(&c) = cpus.get(i % cpus.len().max(1)) {
                    pin_to(c);
                }
            })
            .build()
            .context("building the MVM thread pool")?;
        let per = rows.div_ceil(threads * CHUNKS_PER_THREAD);
        let chunk_rows = per.div_ceil(harness_sys::kernel::ROWS) * harness_sys::kernel::ROWS;
        Ok(Self {
            pool,
            rows,
            cols,
            threads,
            chunk_rows,
        })
    }

    /// Threads the product uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// `y = A·x`. Call it from inside [`MvmKernel::on_first_worker`] so that the split
    /// costs no cross-pool injection.
    pub fn run(&self, a: &[f32], x: &[f32], y: &mut [f32]) {
        debug_assert_eq!(a.len(), self.rows * self.cols);
        if self.threads == 1 {
            harness_sys::kernel::sgemv_rows(a, self.cols, x, y);
            return;
        }
        use rayon::prelude::*;
        let cols = self.cols;
        self.pool.install(|| {
            y.par_chunks_mut(self.chunk_rows)
                .zip(a.par_chunks(self.chunk_rows * cols))
                .for_each(|(yb, ab)| harness_sys::kernel::sgemv_rows(ab, cols, x, yb));
        });
    }

    /// Runs `f` on pool thread 0 (pinned to the compute core) and returns its result;
    /// the other workers stay free to take the other row blocks.
    pub fn on_first_worker<R: Send>(&self, f: impl Fn() -> R + Sync) -> R {
        let mut out = self
            .pool
            .broadcast(|ctx| if ctx.index() == 0 { Some(f()) } else { None });
        out.swap_remove(0).expect("broadcast ran index 0")
    }
}

/// The matrix and vector the MVM cases use (deterministic, cheap to check).
pub fn test_matrix(rows: usize, cols: usize) -> Vec<f32> {
    let mut a = vec![0.0; rows * cols];
    fill_test_matrix(&mut a);
    a
}

/// Writes [`test_matrix`]'s values into `a` (a row-major matrix of any shape), in place:
/// a page-aligned buffer gets them without a temporary copy of the whole matrix.
pub fn fill_test_matrix(a: &mut [f32]) {
    for (i, v) in a.iter_mut().enumerate() {
        *v = ((i % 7) as f32) * 0.25 - 0.5;
    }
}

/// Vector `i` (five distinct ones, `i` mod 5): the pipelines publish 0, 1 and 2 by turns and
/// check a product of 3, which none of their timed iterations published.
pub fn fill_vector(x: &mut [f32], i: u64) {
    let shift = (i % 5) as usize;
    for (j, v) in x.iter_mut().enumerate() {
        *v = (((j + shift) % 5) as f32) * 0.5 - 1.0;
    }
}

/// Largest relative difference between `y` and a single-thread reference product; infinite
/// where an element is NaN (`f64::max` would drop it, and a y left unwritten would pass).
pub fn max_rel_error(a: &[f32], cols: usize, x: &[f32], y: &[f32]) -> f64 {
    let mut want = vec![0.0f32; y.len()];
    harness_sys::kernel::sgemv_rows_baseline(a, cols, x, &mut want);
    let scale = cols.max(1) as f64;
    y.iter()
        .zip(&want)
        .map(|(g, w)| {
            let e = (f64::from(*g) - f64::from(*w)).abs() / scale;
            if e.is_nan() { f64::INFINITY } else { e }
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parallel_kernel_matches_the_reference() {
        let (rows, cols) = (700, 600);
        let sut = MvmKernel::new(rows, cols, 2, vec![0, 1]).unwrap();
        assert_eq!(sut.threads(), 2);
        let a = test_matrix(rows, cols);
        let mut x = vec![0.0; cols];
        fill_vector(&mut x, 1);
        let mut y = vec![f32::NAN; rows];
        sut.on_first_worker(|| ());
        sut.run(&a, &x, &mut y);
        assert!(max_rel_error(&a, cols, &x, &y) < 1e-5);
        assert_eq!(
            max_rel_error(&a, cols, &x, &vec![f32::NAN; rows]),
            f64::INFINITY,
            "a y left unwritten passes the check"
        );
    }

    /// Small products, and those of fewer than two of the kernel's row groups whatever
    /// their size, run on one thread.
    #[test]
    fn small_products_run_on_one_thread() {
        assert!(!is_parallel(100, 100, 2));
        assert!(is_parallel(1000, 1000, 2));
        assert!(!is_parallel(1000, 1000, 1));
        let rows = 2 * harness_sys::kernel::ROWS;
        assert!(is_parallel(rows, 1 << 16, 2));
        assert!(!is_parallel(rows - 1, 1 << 16, 2));
    }

    /// The test matrix cycles through seven values along its row-major elements, -0.5 to
    /// 1.0 in steps of 0.25; vector `i` is one of five (`i` mod 5), each the last shifted
    /// by one element, through -1.0 to 1.0 in steps of 0.5, so that a stale product shows.
    #[test]
    fn the_test_matrix_and_vectors_hold_their_values() {
        assert_eq!(
            test_matrix(2, 4),
            [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, -0.5]
        );
        let v = |i| {
            let mut x = vec![9.0f32; 6];
            fill_vector(&mut x, i);
            x
        };
        assert_eq!(v(0), [-1.0, -0.5, 0.0, 0.5, 1.0, -1.0]);
        assert_eq!(v(1), [-0.5, 0.0, 0.5, 1.0, -1.0, -0.5]);
        assert_eq!(v(7), v(2));
        for i in 0..5 {
            for j in 0..i {
                assert_ne!(v(i), v(j), "vectors {i} and {j}");
            }
        }
    }

    /// The error is each element's difference from the reference, relative to the number
    /// of columns summed into it.
    #[test]
    fn the_error_is_relative_to_the_columns_summed() {
        let (rows, cols) = (4, 6);
        let a = test_matrix(rows, cols);
        let mut x = vec![0.0; cols];
        fill_vector(&mut x, 2);
        let mut y = vec![0.0; rows];
        harness_sys::kernel::sgemv_rows_baseline(&a, cols, &x, &mut y);
        assert_eq!(max_rel_error(&a, cols, &x, &y), 0.0);
        y[2] += 0.75;
        let e = max_rel_error(&a, cols, &x, &y);
        assert!((e - 0.75 / 6.0).abs() < 1e-6, "{e}");
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p harness --bin harness -- --ignored --nocapture mvm_kernel_speed`
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn mvm_kernel_speed() {
        for (n, threads) in [(1000, 1), (1000, 2), (100, 1)] {
            let k = MvmKernel::new(n, n, threads, vec![1, 0]).unwrap();
            let a = test_matrix(n, n);
            let mut x = vec![0.0; n];
            fill_vector(&mut x, 1);
            let secs = k.on_first_worker(|| {
                let mut y = vec![0.0; n];
                for _ in 0..100 {
                    k.run(&a, &x, &mut y);
                }
                let reps = (400_000_000 / (n * n)).max(10);
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    k.run(&a, std::hint::black_box(&x), &mut y);
                }
                t.elapsed().as_secs_f64() / reps as f64
            });
            println!(
                "n={n} threads={} {:.2} GFLOP/s ({:.2} us)",
                k.threads(),
                2.0 * (n * n) as f64 / secs / 1e9,
                secs * 1e6
            );
        }
    }
}
