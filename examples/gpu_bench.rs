//! GPU stream measurements (written before the harness's GPU cases, which now measure these
//! rows too; kept for the figures it gave in `reports/gpu-h100/` and `reports/gpu-h200/`):
//!
//! - `roundtrip`: 64 KiB cross-process ping-pong on two GPU streams (the child echoes each
//!   frame back), device-side (device→device writes, reads into device buffers) and host-side
//!   (writes from host slices, reads into host memory), mirror off and on.
//! - `mvm`: y = A·x with A (n×n f32) resident in a GPU stream, computed by a second process
//!   with cuBLAS sgemv: **host-upload** (x from host each iteration, y back to host) and
//!   **device-resident** (x produced on the GPU, y read into a device buffer). Also the bare
//!   sgemv in one process, as the floor.
//!
//! `cargo run --release --example gpu_bench -- [OUT.json]`; prints one JSON object per row.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmstream::gpu::cudarc::cublas::{CudaBlas, Gemv, GemvConfig, sys as blas_sys};
use shmstream::gpu::cudarc::driver::{CudaSlice, CudaStream};
use shmstream::{Dtype, Stream, StreamOptions, WaitStrategy};

const TO: Option<Duration> = Some(Duration::from_secs(30));

fn stats(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    (
        q(0.5),
        q(0.99),
        v.iter().sum::<f64>() / v.len() as f64,
        v[0],
    )
}

fn spawn_child(role: &str, args: &[(&str, String)]) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env("GPU_BENCH_ROLE", role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in args {
        c.env(format!("GPU_BENCH_{k}"), v);
    }
    c.spawn().unwrap()
}

fn wait_ready(child: &mut std::process::Child) {
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "child said {line:?}");
}

fn env(k: &str) -> String {
    std::env::var(format!("GPU_BENCH_{k}")).unwrap()
}

fn gpu_stream(name: &str, shape: &[usize], mirror: bool) -> Stream {
    let _ = shmstream::unlink(name);
    StreamOptions::new(name)
        .shape(shape)
        .dtype(Dtype::F32)
        .gpu_device(0)
        .cpu_mirror(mirror)
        .notify(true)
        .create()
        .unwrap()
}

// ----- roundtrip -----

fn roundtrip(mode: &str, mirror: bool, iters: usize) -> serde_json::Value {
    let n = 16 * 1024;
    let (a, b) = (
        format!("gb-ping-{}", std::process::id()),
        format!("gb-pong-{}", std::process::id()),
    );
    let sa = gpu_stream(&a, &[n], mirror);
    let sb = gpu_stream(&b, &[n], mirror);
    sb.set_wait_strategy(WaitStrategy::Spin);
    let total = iters + 200;
    let mut kid = spawn_child(
        "echo",
        &[
            ("A", a.clone()),
            ("B", b.clone()),
            ("MODE", mode.into()),
            ("N", total.to_string()),
        ],
    );
    wait_ready(&mut kid);
    let st = sa.cuda_stream().unwrap();
    let host: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let src = st.clone_htod(&host).unwrap();
    let mut dst: CudaSlice<f32> = st.alloc_zeros(n).unwrap();
    let mut back = vec![0f32; n];
    let mut lat = Vec::with_capacity(iters);
    for i in 0..total {
        let t = Instant::now();
        if mode == "device" {
            sa.write_device(&src).unwrap();
            sb.read_device_new_into(&mut dst, TO).unwrap();
        } else {
            sa.write_device_from_host(&host).unwrap();
            sb.read_device_to_host_new(&mut back, TO).unwrap();
        }
        if i >= 200 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    if mode == "device" {
        back = st.clone_dtoh(&dst).unwrap();
    }
    assert_eq!(back, host, "echo mismatch");
    kid.wait().unwrap();
    let (p50, p99, mean, min) = stats(lat);
    let _ = (shmstream::unlink(&a), shmstream::unlink(&b));
    serde_json::json!({"case": format!("gpu-roundtrip-{mode}-{}", if mirror {"mirror"} else {"nomirror"}), "bytes": n * 4, "iters": iters,
        "p50_us": p50, "p99_us": p99, "mean_us": mean, "min_us": min, "target_p50_us": 30.0})
}

fn echo_child() {
    let (a, b, mode, n) = (
        env("A"),
        env("B"),
        env("MODE"),
        env("N").parse::<usize>().unwrap(),
    );
    let sa = Stream::open(&a).unwrap();
    let sb = Stream::open(&b).unwrap();
    sa.set_wait_strategy(WaitStrategy::Spin);
    let st = sa.cuda_stream().unwrap();
    let mut dev: CudaSlice<f32> = st.alloc_zeros(sa.len()).unwrap();
    let mut host = vec![0f32; sa.len()];
    let g = sb.lock(TO).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    for _ in 0..n {
        if mode == "device" {
            sa.read_device_new_into(&mut dev, TO).unwrap();
            g.write_device(&dev).unwrap();
        } else {
            sa.read_device_to_host_new(&mut host, TO).unwrap();
            g.write_device_from_host(&host).unwrap();
        }
    }
}

// ----- mvm -----

fn sgemv(
    blas: &CudaBlas,
    n: usize,
    a: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
) {
    // Row-major A (n×n) is column-major Aᵀ: y = A·x is gemv with op T.
    let cfg = GemvConfig {
        trans: blas_sys::cublasOperation_t::CUBLAS_OP_T,
        m: n as i32,
        n: n as i32,
        alpha: 1.0f32,
        lda: n as i32,
        incx: 1,
        beta: 0.0f32,
        incy: 1,
    };
    // SAFETY: a is n×n, x and y have n elements, all on the blas handle's device.
    unsafe { blas.gemv(cfg, a, x, y) }.unwrap();
}

fn matrix(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| ((i % 1013) as f32 - 506.0) / 1013.0)
        .collect()
}

fn mvm(pipeline: &str, n: usize, iters: usize) -> serde_json::Value {
    let pid = std::process::id();
    let (ma, xa, ya) = (
        format!("gb-A-{pid}"),
        format!("gb-x-{pid}"),
        format!("gb-y-{pid}"),
    );
    let sm = gpu_stream(&ma, &[n, n], false);
    let sx = gpu_stream(&xa, &[n], false);
    let sy = gpu_stream(&ya, &[n], false);
    sy.set_wait_strategy(WaitStrategy::Spin);
    let a = matrix(n);
    sm.write_device_from_host(&a).unwrap();
    let total = iters + 20;
    let mut kid = spawn_child(
        "mvm",
        &[
            ("A", ma.clone()),
            ("X", xa.clone()),
            ("Y", ya.clone()),
            ("N", total.to_string()),
        ],
    );
    wait_ready(&mut kid);
    let st = sx.cuda_stream().unwrap();
    let xs: Vec<Vec<f32>> = (0..2)
        .map(|k| (0..n).map(|i| ((i + k) % 7) as f32 - 3.0).collect())
        .collect();
    let xd: Vec<CudaSlice<f32>> = xs.iter().map(|x| st.clone_htod(x).unwrap()).collect();
    let mut yd: CudaSlice<f32> = st.alloc_zeros(n).unwrap();
    let mut yh = vec![0f32; n];
    let mut lat = Vec::with_capacity(iters);
    for i in 0..total {
        let t = Instant::now();
        if pipeline == "device-resident" {
            sx.write_device(&xd[i % 2]).unwrap();
            sy.read_device_new_into(&mut yd, TO).unwrap();
        } else {
            sx.write_device_from_host(&xs[i % 2]).unwrap();
            sy.read_device_to_host_new(&mut yh, TO).unwrap();
        }
        if i >= 20 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    if pipeline == "device-resident" {
        yh = st.clone_dtoh(&yd).unwrap();
    }
    kid.wait().unwrap();
    // Check the last product (x = xs[(total-1) % 2]) on a few rows.
    let x = &xs[(total - 1) % 2];
    let mut max_err = 0f64;
    for r in (0..n).step_by(n / 7 + 1) {
        let want: f64 = (0..n).map(|c| a[r * n + c] as f64 * x[c] as f64).sum();
        max_err = max_err.max((want - yh[r] as f64).abs() / want.abs().max(1.0));
    }
    let (p50, p99, mean, min) = stats(lat);
    let flops = 2.0 * (n as f64) * (n as f64);
    for s in [&ma, &xa, &ya] {
        let _ = shmstream::unlink(s);
    }
    serde_json::json!({"case": format!("gpu-mvm-{pipeline}"), "n": n, "iters": iters, "p50_us": p50, "p99_us": p99, "mean_us": mean, "min_us": min,
        "tflops_p50": flops / (p50 * 1e-6) / 1e12, "tflops_best": flops / (min * 1e-6) / 1e12, "max_rel_err": max_err,
        "target_tflops": if pipeline == "device-resident" { 1.2 } else { 0.0 }})
}

fn mvm_child() {
    let (ma, xa, ya, total) = (
        env("A"),
        env("X"),
        env("Y"),
        env("N").parse::<usize>().unwrap(),
    );
    let sm = Stream::open(&ma).unwrap();
    let sx = Stream::open(&xa).unwrap();
    let sy = Stream::open(&ya).unwrap();
    sx.set_wait_strategy(WaitStrategy::Spin);
    let n = sx.len();
    let st: Arc<CudaStream> = sy.cuda_stream().unwrap();
    // The matrix is copied once into this process's buffer (a controller keeps its matrix).
    let mut a: CudaSlice<f32> = st.alloc_zeros(n * n).unwrap();
    sm.read_device_into(&mut a).unwrap();
    let mut x: CudaSlice<f32> = st.alloc_zeros(n).unwrap();
    let mut y: CudaSlice<f32> = st.alloc_zeros(n).unwrap();
    let blas = CudaBlas::new(st.clone()).unwrap();
    let g = sy.lock(TO).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    for _ in 0..total {
        sx.read_device_new_into(&mut x, TO).unwrap();
        sgemv(&blas, n, &a, &x, &mut y);
        g.write_device(&y).unwrap();
    }
}

fn sgemv_floor(n: usize, iters: usize) -> serde_json::Value {
    let ctx = shmstream::gpu::cudarc::driver::CudaContext::new(0).unwrap();
    let st = ctx.new_stream().unwrap();
    let a = st.clone_htod(&matrix(n)).unwrap();
    let x = st.clone_htod(&vec![1.0f32; n]).unwrap();
    let mut y: CudaSlice<f32> = st.alloc_zeros(n).unwrap();
    let blas = CudaBlas::new(st.clone()).unwrap();
    for _ in 0..20 {
        sgemv(&blas, n, &a, &x, &mut y);
    }
    st.synchronize().unwrap();
    let mut lat = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        sgemv(&blas, n, &a, &x, &mut y);
        st.synchronize().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let t = Instant::now();
    for _ in 0..iters {
        sgemv(&blas, n, &a, &x, &mut y);
    }
    st.synchronize().unwrap();
    let pipelined = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
    let (p50, p99, mean, min) = stats(lat);
    let flops = 2.0 * (n as f64) * (n as f64);
    serde_json::json!({"case": "gpu-mvm-floor-sgemv", "n": n, "iters": iters, "p50_us": p50, "p99_us": p99, "mean_us": mean, "min_us": min,
        "tflops_p50": flops / (p50 * 1e-6) / 1e12, "pipelined_us": pipelined, "tflops_pipelined": flops / (pipelined * 1e-6) / 1e12,
        "hbm_gbs_p50": (n * n * 4) as f64 / (p50 * 1e-6) / 1e9})
}

fn main() {
    match std::env::var("GPU_BENCH_ROLE").as_deref() {
        Ok("echo") => return echo_child(),
        Ok("mvm") => return mvm_child(),
        _ => {}
    }
    if !shmstream::gpu_available() {
        println!(
            "SKIP gpu_bench: {}",
            shmstream::gpu::unavailable_reason().unwrap_or_default()
        );
        return;
    }
    let out = std::env::args().nth(1);
    let mut rows = Vec::new();
    let mut emit = |v: serde_json::Value| {
        println!("{v}");
        rows.push(v);
    };
    for (mode, mirror) in [
        ("device", false),
        ("host", false),
        ("device", true),
        ("host", true),
    ] {
        emit(roundtrip(mode, mirror, 3000));
    }
    // SAFETY: only probes whether libcublas can be dlopen'ed.
    if unsafe { shmstream::gpu::cudarc::cublas::sys::is_culib_present() } {
        let n = 10_000;
        emit(sgemv_floor(n, 200));
        emit(mvm("device-resident", n, 300));
        emit(mvm("host-upload", n, 300));
    } else {
        println!("SKIP mvm: libcublas not loadable (set LD_LIBRARY_PATH)");
    }
    if let Some(p) = out {
        std::fs::write(p, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    }
}
