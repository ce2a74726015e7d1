//! cuBLAS for the GPU MVM cases: `sgemv` on a row-major float32 matrix, behind a safe API
//! that checks every length before the (unsafe) cuBLAS call, and a presence probe for
//! `libcublas` (cudarc loads it on first use and panics when it is missing).

use std::sync::Arc;

use shmstream::gpu::cudarc::cublas::{CudaBlas, Gemv, GemvConfig, sys as blas_sys};
use shmstream::gpu::cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};

/// Whether `libcublas` can be loaded (never panics).
pub fn cublas_available() -> bool {
    // SAFETY: only tries to dlopen the library by its known names; no cuBLAS call is made.
    unsafe { blas_sys::is_culib_present() }
}

/// y = A·x for one row-major `rows × cols` float32 matrix, on one CUDA stream.
#[derive(Debug)]
pub struct Sgemv {
    blas: CudaBlas,
    rows: usize,
    cols: usize,
}

impl Sgemv {
    /// A cuBLAS handle bound to `stream` (check [`cublas_available`] first: this loads it).
    pub fn new(stream: Arc<CudaStream>, rows: usize, cols: usize) -> Result<Self, String> {
        if !cublas_available() {
            return Err("libcublas cannot be loaded (add its folder to LD_LIBRARY_PATH)".into());
        }
        if i32::try_from(rows.max(cols)).is_err() {
            return Err(format!("{rows}x{cols} is too large for cuBLAS sgemv"));
        }
        let blas = CudaBlas::new(stream).map_err(|e| format!("cublasCreate: {e:?}"))?;
        Ok(Self { blas, rows, cols })
    }

    /// Enqueues y = A·x on the handle's stream (no host wait).
    pub fn run(
        &self,
        a: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        if a.len() != self.rows * self.cols || x.len() != self.cols || y.len() != self.rows {
            return Err(format!(
                "sgemv shapes: A has {} elements, x {}, y {}; want {}x{}",
                a.len(),
                x.len(),
                y.len(),
                self.rows,
                self.cols
            ));
        }
        // Row-major A (rows × cols) is the column-major matrix Aᵀ (cols × rows, lda = cols):
        // y = A·x is gemv with op T, m = cols, n = rows.
        let cfg = GemvConfig {
            trans: blas_sys::cublasOperation_t::CUBLAS_OP_T,
            m: self.cols as i32,
            n: self.rows as i32,
            alpha: 1.0f32,
            lda: self.cols as i32,
            incx: 1,
            beta: 0.0f32,
            incy: 1,
        };
        // SAFETY: the lengths were checked above (A holds rows·cols elements, x cols, y rows),
        // the dimensions fit in i32 (checked in `new`), and cudarc orders the three buffers on
        // the handle's stream (it waits for their pending work and records this use).
        unsafe { self.blas.gemv(cfg, a, x, y) }.map_err(|e| format!("cublasSgemv: {e:?}"))
    }
}

/// `len` zeroed values of page-locked host memory (`cuMemHostAlloc`, flags 0, as the
/// library's staging buffers), for floors and stages that move host data across the bus
/// as DMA.
pub fn pinned_zeroed<T: DeviceRepr + ValidAsZeroBits + Default + Copy>(
    ctx: &Arc<CudaContext>,
    len: usize,
) -> Result<PinnedHostSlice<T>, String> {
    // SAFETY: the memory is uninitialized after the call; it is filled below before anyone
    // can read it (the only access is through this function's return value), and every
    // `T` used here (f32, u16) is valid for any bit pattern anyway.
    let mut p = unsafe { ctx.alloc_pinned_with_flags::<T>(len, 0) }
        .map_err(|e| format!("cuMemHostAlloc of {len} values: {e:?}"))?;
    p.as_mut_slice()
        .map_err(|e| format!("mapping pinned memory: {e:?}"))?
        .fill(T::default());
    Ok(p)
}
