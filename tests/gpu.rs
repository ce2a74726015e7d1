//! GPU streams on a real device: cross-process CUDA IPC reads and writes, both modes, every
//! supported dtype, the per-process registry, in-place writes and device views, producer
//! death, and a torn-read torture on the device.
//!
//! Every test that needs a GPU prints a skip reason and returns when no driver or device is
//! present (CI machines), so this file never fails there. Built only with the `cuda`
//! feature (a default one).
#![cfg(feature = "cuda")]

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Cleanup, LONG, block_on_stdin, child, child_role, param, say, unique_name};
use shmstream::gpu::cudarc::driver::{CudaSlice, CudaViewMut, DeviceRepr};
use shmstream::{
    Complex32, Complex64, Dtype, Element, Error, Stream, StreamOptions, WaitStrategy, f16,
};

/// The tests in this binary run one at a time: they share one device, and several count
/// reads that took longer than a bound (CI machines have 2 cores). The child entry, which
/// runs alone in its own process, does not take it.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn gpu_or_skip(test: &str) -> bool {
    if shmstream::gpu_available() {
        return true;
    }
    eprintln!(
        "SKIP {test}: no GPU ({})",
        shmstream::gpu::unavailable_reason().unwrap_or_default()
    );
    false
}

/// Deterministic test values per type.
trait Val: Element + PartialEq {
    fn val(i: usize) -> Self;
}
macro_rules! val_int {
    ($($t:ty),*) => {$(impl Val for $t { fn val(i: usize) -> Self { (i % 100) as $t } })*};
}
val_int!(i8, i16, i32, i64, u8);
impl Val for f32 {
    fn val(i: usize) -> Self {
        i as f32 * 0.5
    }
}
impl Val for f64 {
    fn val(i: usize) -> Self {
        i as f64 * 0.25
    }
}
impl Val for f16 {
    fn val(i: usize) -> Self {
        f16::from_f32((i % 64) as f32)
    }
}
impl Val for bool {
    fn val(i: usize) -> Self {
        i.is_multiple_of(3)
    }
}
impl Val for Complex32 {
    fn val(i: usize) -> Self {
        Complex32::new(i as f32, -(i as f32))
    }
}
impl Val for Complex64 {
    fn val(i: usize) -> Self {
        Complex64::new(i as f64, 2.0 * i as f64)
    }
}

fn data<T: Val>(n: usize, salt: usize) -> Vec<T> {
    (0..n).map(|i| T::val(i + salt)).collect()
}

const SHAPE: [usize; 2] = [3, 5];

/// Options for a GPU stream on cuda:0 (callers add the mirror, notify, ...).
fn cuda0(name: &str, shape: &[usize], dtype: Dtype) -> StreamOptions {
    let mut o = StreamOptions::new(name);
    o.shape(shape).dtype(dtype).gpu_device(0);
    o
}

/// Host paths of one dtype in one mode, with a second handle in this process.
fn host_roundtrip<T: Val + std::fmt::Debug>(mirror: bool) {
    let name = unique_name(&format!("gpu-{}-{}", T::DTYPE, mirror));
    let _c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &SHAPE, T::DTYPE)
        .cpu_mirror(mirror)
        .create()
        .unwrap();
    assert!(s.gpu_enabled() && s.gpu_attached() && s.cpu_mirror() == mirror);
    let n = s.len();
    let v: Vec<T> = data(n, 1);
    s.write_device_from_host(&v).unwrap();
    let mut back = vec![T::val(0); n];
    let info = s.read_device_to_host(&mut back).unwrap();
    assert_eq!(info.count, 1);
    assert_eq!(back, v, "{} mirror={mirror}", T::DTYPE);
    // A second handle in this process shares the attachment (CUDA refuses a second IPC open).
    let r = Stream::open(&name).unwrap();
    assert_eq!(s.gpu_attachment_refs(), 2);
    let mut back2 = vec![T::val(0); n];
    r.read_device_to_host(&mut back2).unwrap();
    assert_eq!(back2, v);
    if mirror {
        assert_eq!(
            r.read::<T>().unwrap().as_slice().unwrap(),
            &v[..],
            "CPU read of the mirror"
        );
        // A CPU write of a mirrored stream reaches the device too.
        let w: Vec<T> = data(n, 7);
        r.write_slice(&w).unwrap();
        s.read_device_to_host(&mut back).unwrap();
        assert_eq!(back, w, "CPU write uploaded to the device");
    } else {
        let e = r.read::<T>().unwrap_err().to_string();
        assert!(e.contains("no CPU mirror"), "{e}");
    }
    drop(r);
    assert_eq!(s.gpu_attachment_refs(), 1);
}

/// Device paths (device to device, in place, device view) of one dtype.
fn device_roundtrip<T: Val + DeviceRepr + std::fmt::Debug>(mirror: bool) {
    let name = unique_name(&format!("gpud-{}-{}", T::DTYPE, mirror));
    let _c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &SHAPE, T::DTYPE)
        .cpu_mirror(mirror)
        .create()
        .unwrap();
    let st = s.cuda_stream().unwrap();
    let n = s.len();
    let v: Vec<T> = data(n, 3);
    let src = st.clone_htod(&v).unwrap();
    s.write_device(&src).unwrap();
    let mut dst: CudaSlice<T> = st.clone_htod(&data::<T>(n, 50)).unwrap();
    s.read_device_into(&mut dst).unwrap();
    assert_eq!(
        st.clone_dtoh(&dst).unwrap(),
        v,
        "{} D2D mirror={mirror}",
        T::DTYPE
    );
    if mirror {
        assert_eq!(
            s.read::<T>().unwrap().as_slice().unwrap(),
            &v[..],
            "mirror follows a device write"
        );
    }
    // In place, then a borrowed device view under the lock.
    let w: Vec<T> = data(n, 11);
    s.write_device_in_place(|view| -> Result<(), Error> {
        view.with_slice_mut::<T, _>(|buf| view_stream_copy(buf, &w))?;
        Ok(())
    })
    .unwrap();
    let g = s.lock(Some(LONG)).unwrap();
    let view = g.device_view().unwrap();
    let got = view
        .with_slice::<T, _>(|buf| view.stream().clone_dtoh(buf).unwrap())
        .unwrap();
    assert_eq!(got, w, "in-place write seen through the device view");
    drop(g);
    if mirror {
        assert_eq!(s.read::<T>().unwrap().as_slice().unwrap(), &w[..]);
    }
}

/// A bool stream goes to the device as u8 (nonzero = true), never as bool: its device bytes
/// may be any value a foreign writer stored (a mask of 255s), which a `CudaSlice<bool>` would
/// carry to the host as a `bool` no bool may hold. The host read maps such a byte to true.
fn device_bool_as_u8(mirror: bool) {
    let name = unique_name(&format!("gpud-bool-{mirror}"));
    let _c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &SHAPE, Dtype::Bool)
        .cpu_mirror(mirror)
        .create()
        .unwrap();
    let st = s.cuda_stream().unwrap();
    let n = s.len();
    let v: Vec<bool> = data(n, 3);
    s.write_device(&st.clone_htod(&v).unwrap()).unwrap();
    let mut as_bool: CudaSlice<bool> = st.clone_htod(&vec![false; n]).unwrap();
    let refused = s.read_device_into(&mut as_bool);
    assert!(
        matches!(refused, Err(Error::Unsupported { .. })),
        "{refused:?}"
    );
    let mut bytes: CudaSlice<u8> = st.clone_htod(&vec![7u8; n]).unwrap();
    s.read_device_into(&mut bytes).unwrap();
    let want: Vec<u8> = v.iter().map(|&b| u8::from(b)).collect();
    assert_eq!(st.clone_dtoh(&bytes).unwrap(), want, "bool D2D as u8");
    // A foreign writer's 255, stored through the in-place view as u8 over a false.
    assert!(!v[1]);
    let mut planted = want.clone();
    planted[1] = 255;
    s.write_device_in_place(|view| -> Result<(), Error> {
        view.with_slice_mut::<u8, _>(|buf| view_stream_copy(buf, &planted))?;
        Ok(())
    })
    .unwrap();
    s.read_device_into(&mut bytes).unwrap();
    assert_eq!(st.clone_dtoh(&bytes).unwrap()[1], 255, "the plant landed");
    let mut host = vec![false; n];
    s.read_device_to_host(&mut host).unwrap();
    let mut expected = v.clone();
    expected[1] = true;
    assert_eq!(host, expected, "a byte of 255 reads as true on the host");
    assert_eq!(
        u8::from(host[1]),
        1,
        "stored in the bool as 1, not as the byte"
    );
}

fn view_stream_copy<T: DeviceRepr>(buf: &mut CudaViewMut<'_, T>, host: &[T]) {
    let st = shmstream::gpu::cudarc::driver::DeviceSlice::stream(buf).clone();
    st.memcpy_htod(host, buf).unwrap();
}

#[test]
fn gpu_probe_never_panics() {
    let _serial = serial();
    let n = shmstream::device_count();
    assert_eq!(shmstream::gpu_available(), n > 0);
    eprintln!("device_count = {n}");
}

#[test]
fn gpu_create_without_a_driver_is_a_clear_error() {
    let _serial = serial();
    if shmstream::gpu_available() {
        return;
    }
    // A tag that no expected word contains: every message names the stream.
    let name = unique_name("gpu-none");
    let e = StreamOptions::new(&name)
        .device("cuda:0")
        .create()
        .unwrap_err();
    let said = match &e {
        Error::Gpu { name: n, reason } => {
            *n == name && reason.ends_with("GPU streams need an NVIDIA driver")
        }
        Error::Unsupported { name: n, what } => {
            !cfg!(feature = "cuda") && *n == name && what.contains("enable the `cuda` feature")
        }
        _ => false,
    };
    assert!(said, "{e:?}");
    assert!(
        matches!(shmstream::stat(&name), Err(Error::NotFound { .. })),
        "nothing left behind"
    );
}

#[test]
fn gpu_every_supported_dtype_both_modes() {
    let _serial = serial();
    if !gpu_or_skip("gpu_every_supported_dtype_both_modes") {
        return;
    }
    for mirror in [false, true] {
        host_roundtrip::<i8>(mirror);
        host_roundtrip::<i16>(mirror);
        host_roundtrip::<i32>(mirror);
        host_roundtrip::<i64>(mirror);
        host_roundtrip::<u8>(mirror);
        host_roundtrip::<f16>(mirror);
        host_roundtrip::<f32>(mirror);
        host_roundtrip::<f64>(mirror);
        host_roundtrip::<bool>(mirror);
        host_roundtrip::<Complex32>(mirror);
        host_roundtrip::<Complex64>(mirror);
        device_roundtrip::<i8>(mirror);
        device_roundtrip::<i16>(mirror);
        device_roundtrip::<i32>(mirror);
        device_roundtrip::<i64>(mirror);
        device_roundtrip::<u8>(mirror);
        device_roundtrip::<f16>(mirror);
        device_roundtrip::<f32>(mirror);
        device_roundtrip::<f64>(mirror);
        device_bool_as_u8(mirror);
    }
    assert_eq!(shmstream::GPU_SUPPORTED_DTYPES.len(), 11);
    let e = StreamOptions::new(&unique_name("gpu-u32"))
        .dtype(Dtype::U32)
        .gpu_device(0)
        .create()
        .unwrap_err();
    assert!(e.to_string().contains("uint32"), "{e}");
}

#[test]
fn gpu_child_entry() {
    let Some(role) = child_role() else { return };
    let name: String = param("name");
    match role.as_str() {
        // Echo: read each new frame of `name` on the device, check it, write it to `reply`.
        "echo" => {
            let reply: String = param("reply");
            let rounds: u64 = param("rounds");
            let mirror: bool = param("mirror");
            let late_after = parked_late_after();
            let a = Stream::open(&name).unwrap();
            let b = Stream::open(&reply).unwrap();
            assert!(a.gpu_attached(), "child attaches over IPC");
            if late_after.is_some() {
                a.set_wait_strategy(WaitStrategy::Park);
            }
            let st = a.cuda_stream().unwrap();
            let mut dev: CudaSlice<f32> = st.alloc_zeros(a.len()).unwrap();
            say("ready");
            let mut late = 0u64;
            for k in 0..rounds {
                let t = Instant::now();
                a.read_device_new_into(&mut dev, Some(LONG))
                    .unwrap_or_else(|e| panic!("frame {k}: {e}"));
                if k > 0 && late_after.is_some_and(|d| t.elapsed() > d) {
                    late += 1;
                }
                let host = st.clone_dtoh(&dev).unwrap();
                assert!(
                    host.iter()
                        .enumerate()
                        .all(|(i, &x)| x == (i as u64 + k) as f32),
                    "frame {k} wrong"
                );
                if mirror {
                    assert_eq!(a.read::<f32>().unwrap().as_slice().unwrap(), &host[..]);
                }
                b.write_device(&dev).unwrap();
            }
            say(&format!("done {late}"));
        }
        // Writes uniform frames from prefilled device buffers (device to device, no host wait
        // without a mirror) until told to stop: a write every ~2 ms, or with `back_to_back`
        // one after another, saying "warm" after its first 12.
        "torture_writer" => {
            let back_to_back = common::param_opt::<bool>("back_to_back").unwrap_or(false);
            let s = Stream::open(&name).unwrap();
            let st = s.cuda_stream().unwrap();
            let bufs: Vec<CudaSlice<i32>> = (1..=8)
                .map(|k| st.clone_htod(&vec![k; s.len()]).unwrap())
                .collect();
            let g = s.lock(Some(LONG)).unwrap();
            say("ready");
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            std::thread::spawn(move || {
                block_on_stdin();
                stop2.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                g.write_device(&bufs[i % bufs.len()]).unwrap();
                i += 1;
                if back_to_back {
                    if i == 12 {
                        say("warm");
                    }
                    continue;
                }
                // Leave readers windows (a seqlock reader retries while writes overlap its
                // copy; without MPS each process's device work also waits for a GPU context
                // switch, ~150 us): a write every ~2 ms, each one a 4 MiB device copy.
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
            }
            say(&format!("wrote {i}"));
        }
        // Creates a stream, writes a frame, then either exits holding it (dies) or closes
        // its handle first (releases).
        "producer" => {
            let release: bool = param("release");
            let s = cuda0(&name, &[1024], Dtype::F32).create().unwrap();
            s.write_device_from_host(&vec![3.0f32; 1024]).unwrap();
            say("ready");
            block_on_stdin();
            if release {
                drop(s);
                say("released");
                block_on_stdin();
            }
            std::process::exit(0);
        }
        // Writes frames 1..=frames, frame k all k (from the host, through the pinned stage).
        "ack_writer" => {
            let frames: i32 = param("frames");
            let s = Stream::open(&name).unwrap();
            s.set_default_timeout(LONG);
            let mut v = vec![0i32; s.len()];
            say("ready");
            for k in 1..=frames {
                v.fill(k);
                s.write_device_from_host(&v)
                    .unwrap_or_else(|e| panic!("frame {k}: {e}"));
            }
            say("wrote all");
        }
        // Becomes the GPU consumer, takes one frame, then stops consuming (the writer's next
        // frames wait for acknowledgements that never come) until killed.
        "stalled_consumer" => {
            let s = Stream::open(&name).unwrap();
            let mut c = s.gpu_consumer().unwrap();
            let mut dev: CudaSlice<i32> = c.cuda_stream().alloc_zeros(s.len()).unwrap();
            c.enqueue_next_into(&mut dev).unwrap();
            say("ready");
            block_on_stdin();
        }
        // Consumes frame after frame on the GPU, checking each is whole, until a frame does
        // not come within `wait_ms`; then reports how many it got and the error.
        "checking_consumer" => {
            let wait = Duration::from_millis(param("wait_ms"));
            let s = Stream::open(&name).unwrap();
            // Bounds the drop's wait for frames that will not come.
            s.set_default_timeout(wait);
            let mut c = s.gpu_consumer().unwrap();
            let st = c.cuda_stream().clone();
            let mut dev: CudaSlice<i32> = st.alloc_zeros(s.len()).unwrap();
            let mut host = vec![0i32; s.len()];
            say("ready");
            let mut got = 0u64;
            let err = loop {
                c.enqueue_next_into(&mut dev).unwrap();
                if let Err(e) = c.synchronize(wait) {
                    break e;
                }
                st.memcpy_dtoh(&dev, &mut host).unwrap();
                assert!(
                    host.iter().all(|&x| x == host[0]),
                    "torn frame {got} on the GPU consumer: mixes {} and others",
                    host[0]
                );
                got += 1;
                if got == 10 {
                    say("got 10");
                }
            };
            say(&format!("stopped after {got}: {err}"));
        }
        // Drops a handle whose CUDA stream waits for a frame that never comes (its GPU
        // consumer forgotten, so nothing releases the wait; no device buffer keeps the CUDA
        // stream alive), then opens another stream, `other`.
        "reopen_after_busy_drop" => {
            let other: String = param("other");
            let r = Stream::open(&name).unwrap();
            let mut dev: CudaSlice<i32> = r.cuda_stream().unwrap().alloc_zeros(r.len()).unwrap();
            let mut c = r.gpu_consumer().unwrap();
            c.enqueue_next_into(&mut dev).unwrap(); // never written while this process lives
            std::mem::forget(c);
            let _ = dev.leak(); // the device memory the wait's copy targets stays allocated
            drop(r);
            say("dropped");
            // Read-only: opening registers no host memory, which would wait for that stream.
            let y = Stream::open_readonly(&other).unwrap();
            assert!(y.gpu_attached(), "{:?}", y.gpu_publish_path());
            say("reopened");
            block_on_stdin();
        }
        // Records a stale driver error on the context (as an unrelated drop does), then
        // asks for the publication path, probing the device after it.
        "stale_error_probe" => {
            let r = Stream::open_readonly(&name).unwrap();
            stale_driver_error(&r);
            say(&format!("path {}", shmstream::gpu::publish_path(0).path));
        }
        // Tries to become the GPU consumer (run with `SHMSTREAM_GPU_IPC_EVENT=1`).
        "event_mode_consumer" => {
            let s = Stream::open(&name).unwrap();
            match s.gpu_consumer() {
                Ok(_) => say("consumer accepted"),
                Err(e) => say(&format!("consumer refused: {e:?}")),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// In the parked echo tests (`park_ms` set), the time past which a read is late: half the
/// longest futex park (50 ms), so a GPU-side publication that did not wake a parked reader
/// makes its round late, as it would nearly every round.
fn parked_late_after() -> Option<Duration> {
    common::param_opt::<u64>("park_ms").map(Duration::from_millis)
}

const PARK_MS: u64 = 25;
/// The share of late reads (per side, in percent) a parked echo tolerates: reads wait up
/// to [`LONG`], and a stall of the host or the driver makes a round late, not the test fail.
const LATE_PERCENT: u64 = 10;

fn cross_process(mirror: bool, park: bool) {
    let (a, b) = (unique_name("gpu-xa"), unique_name("gpu-xb"));
    let _c = Cleanup::new([a.clone(), b.clone()]);
    let n = 16 * 1024; // 64 KiB of f32
    let sa = cuda0(&a, &[n], Dtype::F32)
        .cpu_mirror(mirror)
        .notify(true)
        .create()
        .unwrap();
    let sb = cuda0(&b, &[n], Dtype::F32)
        .cpu_mirror(mirror)
        .notify(true)
        .create()
        .unwrap();
    let rounds = 200u64;
    let mut kid = child("gpu_child_entry", "echo")
        .param("name", &a)
        .param("reply", &b)
        .param("rounds", rounds)
        .param("mirror", mirror);
    if park {
        kid = kid.param("park_ms", PARK_MS);
        sb.set_wait_strategy(WaitStrategy::Park);
    }
    let mut kid = kid.spawn();
    kid.expect_line("ready", LONG);
    let mut back = vec![0f32; n];
    let mut late = 0u64;
    let t = Instant::now();
    for k in 0..rounds {
        let v: Vec<f32> = (0..n).map(|i| (i as u64 + k) as f32).collect();
        sa.write_device_from_host(&v).unwrap();
        let read_at = Instant::now();
        let info = sb
            .read_device_to_host_new(&mut back, Some(LONG))
            .unwrap_or_else(|e| panic!("echo {k}: {e}"));
        if park && k > 0 && read_at.elapsed() > Duration::from_millis(PARK_MS) {
            late += 1;
        }
        assert_eq!(info.count, k + 1);
        assert_eq!(back, v, "echo of frame {k}");
        if mirror {
            assert_eq!(sb.read::<f32>().unwrap().as_slice().unwrap(), &v[..]);
        }
    }
    let per_round_us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let child_late: u64 = kid.expect_line("done", LONG).parse().unwrap();
    kid.wait_success(LONG);
    eprintln!(
        "cross-process 64 KiB echo, mirror={mirror}, parked={park} ({}): {per_round_us:.1} us per round trip (incl. checks), reads over {PARK_MS} ms: {late} here, {child_late} in the child",
        sa.gpu_publish_path()
            .map(|p| p.path.to_string())
            .unwrap_or_default(),
    );
    if park {
        for (side, late) in [("this process", late), ("the child", child_late)] {
            assert!(
                late * 100 <= rounds * LATE_PERCENT,
                "mirror={mirror}: {late} of {rounds} parked reads in {side} took over {PARK_MS} ms: publications do not wake parked readers"
            );
        }
    }
}

#[test]
fn gpu_cross_process_ipc_no_mirror() {
    let _serial = serial();
    if gpu_or_skip("gpu_cross_process_ipc_no_mirror") {
        cross_process(false, false);
    }
}

#[test]
fn gpu_cross_process_ipc_mirror() {
    let _serial = serial();
    if gpu_or_skip("gpu_cross_process_ipc_mirror") {
        cross_process(true, false);
    }
}

/// Issue #11: readers parked on the futex wake when a writer's CUDA stream publishes (the
/// stream's host function wakes them): few reads (at most [`LATE_PERCENT`]) may take more
/// than half the longest park, which a missed wake makes nearly every read take.
#[test]
fn gpu_side_publication_wakes_parked_readers() {
    let _serial = serial();
    if gpu_or_skip("gpu_side_publication_wakes_parked_readers") {
        cross_process(false, true);
        cross_process(true, true);
    }
}

/// Issue #11: a handle's writes use the device's publication path (no history, no event
/// ordering here), and back-to-back writes each wait for the last to land: the last frame
/// and the count arrive whole, on the device and in the CPU mirror.
#[test]
fn gpu_publish_path_per_handle_and_back_to_back_writes() {
    let _serial = serial();
    if !gpu_or_skip("gpu_publish_path_per_handle_and_back_to_back_writes") {
        return;
    }
    for mirror in [false, true] {
        let name = unique_name("gpu-b2b");
        let _c = Cleanup::new([name.clone()]);
        let n = 1 << 18; // 1 MiB of f32
        let s = cuda0(&name, &[n], Dtype::F32)
            .cpu_mirror(mirror)
            .create()
            .unwrap();
        let p = s
            .gpu_publish_path()
            .expect("an attached GPU stream has a path");
        assert_eq!(p.path, shmstream::gpu::publish_path(0).path, "{p}");
        eprintln!("mirror={mirror}: handle publication path {p}");
        let st = s.cuda_stream().unwrap();
        let bufs: Vec<CudaSlice<f32>> = (1..=4)
            .map(|k| st.clone_htod(&vec![k as f32; n]).unwrap())
            .collect();
        for k in 0..64 {
            s.write_device(&bufs[k % 4]).unwrap();
        }
        let mut host = vec![0f32; n];
        let info = s.read_device_to_host(&mut host).unwrap();
        assert_eq!(info.count, 64);
        assert!(host.iter().all(|&x| x == 4.0), "device frame {}", host[0]);
        if mirror {
            let m = s.read::<f32>().unwrap();
            assert!(m.iter().all(|&x| x == 4.0), "mirror frame");
        }
    }
    let cpu = Stream::create(&unique_name("gpu-b2b-cpu"), &[4], Dtype::F32).unwrap();
    assert!(
        cpu.gpu_publish_path().is_none(),
        "a CPU stream has no GPU path"
    );
    let _ = shmstream::unlink(cpu.name());
}

/// Issue #11: a writer killed while it publishes (on the GPU path, its last frame may still
/// be landing or its bracket left odd) neither hangs the next writer nor hands a reader a
/// torn frame: the next write recovers and is read whole. Writers that write back to back
/// are killed until a kill lands inside a publication (the sequence left odd, or a read
/// reporting the abandoned write), which must happen at least once.
#[test]
fn gpu_writer_killed_while_publishing_is_recovered() {
    let _serial = serial();
    if !gpu_or_skip("gpu_writer_killed_while_publishing_is_recovered") {
        return;
    }
    let name = unique_name("gpu-killed");
    let _c = Cleanup::new([name.clone()]);
    let n = 1 << 20;
    let s = cuda0(&name, &[n], Dtype::I32)
        .notify(true)
        .create()
        .unwrap();
    s.write_device_from_host(&vec![1i32; n]).unwrap();
    let mut host = vec![0i32; n];
    const TRIES: i32 = 20;
    let (mut kills, mut inside) = (0, 0);
    while kills < TRIES && inside == 0 {
        kills += 1;
        let mut w = child("gpu_child_entry", "torture_writer")
            .param("name", &name)
            .param("back_to_back", true)
            .spawn();
        w.expect_line("ready", LONG);
        // Killed once it has written a few frames of its own, while it writes more.
        w.expect_line("warm", LONG);
        w.kill();
        let seq = s.write_sequence();
        let read = s.read_device_to_host(&mut host);
        let landed = match read {
            Ok(_) => {
                assert!(
                    host.iter().all(|&x| x == host[0]),
                    "kill {kills}: torn frame after the kill"
                );
                false
            }
            Err(Error::Inconsistent { .. }) => true,
            Err(e) => panic!("kill {kills}: {e:?}"),
        };
        if landed || seq < 0 || seq & 1 == 1 {
            inside += 1;
        }
        let last = s.count();
        let t = Instant::now();
        let v = 99 + kills;
        s.write_device_from_host(&vec![v; n]).unwrap();
        assert!(
            t.elapsed() < LONG,
            "kill {kills}: the next write waited out its timeout"
        );
        let info = s.read_device_to_host(&mut host).unwrap();
        assert!(
            host.iter().all(|&x| x == v),
            "kill {kills}: recovered frame {}",
            host[0]
        );
        assert!(
            info.count > last,
            "kill {kills}: count {} after {last}",
            info.count
        );
    }
    eprintln!("{kills} kills, {inside} inside a publication");
    assert!(
        inside > 0,
        "none of {kills} kills landed inside a publication"
    );
}

#[test]
fn gpu_torn_read_torture_on_the_device() {
    let _serial = serial();
    if gpu_or_skip("gpu_torn_read_torture_on_the_device") {
        torn_read_torture(false);
    }
}

/// The torture with a CPU mirror: CPU readers (`read_into_slice` of the mirror, on threads
/// of their own) check every frame whole while the device reads run beside them.
#[test]
fn gpu_torn_read_torture_with_a_cpu_mirror() {
    let _serial = serial();
    if gpu_or_skip("gpu_torn_read_torture_with_a_cpu_mirror") {
        torn_read_torture(true);
    }
}

/// A child writes uniform frames device to device (each write the device copy and, with
/// `mirror`, the device→host copy into the mirror) while this process reads them back on the
/// device and, with `mirror`, from the mirror on two CPU threads: no read may be torn.
fn torn_read_torture(mirror: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let name = unique_name("gpu-torture");
    let _c = Cleanup::new([name.clone()]);
    let n = 1 << 20; // 4 MiB of i32: copies long enough to overlap some writes
    let s = cuda0(&name, &[n], Dtype::I32)
        .cpu_mirror(mirror)
        .create()
        .unwrap();
    s.write_device_from_host(&vec![1i32; n]).unwrap();
    let mut w = child("gpu_child_entry", "torture_writer")
        .param("name", &name)
        .spawn();
    w.expect_line("ready", LONG);
    let stop = AtomicBool::new(false);
    let cpu_reader = || {
        let r = Stream::open(&name).unwrap();
        let mut host = vec![0i32; n];
        let (mut reads, mut seen) = (0u64, std::collections::BTreeSet::new());
        while !stop.load(Ordering::Relaxed) {
            r.read_into_slice(&mut host).unwrap();
            assert!(
                host.iter().all(|&x| x == host[0]),
                "torn CPU read of the mirror: frame mixes {} and others",
                host[0]
            );
            seen.insert(host[0]);
            reads += 1;
        }
        (reads, seen)
    };
    let st = s.cuda_stream().unwrap();
    let mut dev: CudaSlice<i32> = st.alloc_zeros(n).unwrap();
    let mut host = vec![0i32; n];
    let mut seen = std::collections::BTreeSet::new();
    let (mut reads, t) = (0u64, Instant::now());
    let cpu = std::thread::scope(|sc| {
        let cpu: Vec<_> = (0..if mirror { 2 } else { 0 })
            .map(|_| sc.spawn(cpu_reader))
            .collect();
        // The CPU readers' asserts end the scope with their panic; stop them on ours too.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stopper = Stop(&stop);
        while t.elapsed() < Duration::from_secs(3) {
            s.read_device_into(&mut dev).unwrap();
            let h = st.clone_dtoh(&dev).unwrap();
            assert!(
                h.iter().all(|&x| x == h[0]),
                "torn device read: frame mixes {} and others",
                h[0]
            );
            seen.insert(h[0]);
            s.read_device_to_host(&mut host).unwrap();
            assert!(
                host.iter().all(|&x| x == host[0]),
                "torn host read: frame mixes {} and others",
                host[0]
            );
            seen.insert(host[0]);
            reads += 2;
        }
        drop(stopper);
        cpu.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    w.send_line("stop");
    let wrote = w.expect_line("wrote", LONG);
    w.wait_success(LONG);
    eprintln!(
        "torture, mirror={mirror}: {reads} verified device reads, {wrote} frames, values seen {seen:?}"
    );
    assert!(seen.len() > 2, "the writer must have overlapped the reads");
    for (reads, seen) in cpu {
        eprintln!("  CPU reader: {reads} verified reads, values seen {seen:?}");
        assert!(
            seen.len() > 2,
            "the writer must have overlapped the CPU reads"
        );
    }
}

/// A handle's first read on a thread that never bound the CUDA context works (fails on a GPU
/// without the fix: its first read allocated the pinned staging buffer before binding the
/// context, `CUDA_ERROR_INVALID_CONTEXT` on every call).
#[test]
fn gpu_a_handles_first_read_on_another_thread_binds_the_context() {
    let _serial = serial();
    if !gpu_or_skip("gpu_a_handles_first_read_on_another_thread_binds_the_context") {
        return;
    }
    let name = unique_name("gpu-thread-read");
    let _c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &[1024], Dtype::F32).create().unwrap();
    let v: Vec<f32> = data(1024, 3);
    s.write_device_from_host(&v).unwrap();
    let r = Stream::open(&name).unwrap();
    let got = std::thread::spawn(move || {
        let mut back = vec![0f32; r.len()];
        r.read_device_to_host(&mut back)
            .map(|info| (info.count, back))
    })
    .join()
    .unwrap();
    let (count, back) = got.unwrap_or_else(|e| panic!("first read on a fresh thread: {e}"));
    assert_eq!(count, 1);
    assert_eq!(back, v);
}

/// A read of a handle that waits for a new frame with no timeout does not hold up another
/// thread's read of the same handle (fails on a GPU without the fix: the waiting read held the
/// handle's pinned read buffer, and the other read waited for it past its timeout).
#[test]
fn gpu_a_read_waiting_for_a_new_frame_does_not_hold_up_another_threads_read() {
    let _serial = serial();
    if !gpu_or_skip("gpu_a_read_waiting_for_a_new_frame_does_not_hold_up_another_threads_read") {
        return;
    }
    let name = unique_name("gpu-two-reads");
    let _c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &[1024], Dtype::F32)
        .notify(true)
        .create()
        .unwrap();
    let v1: Vec<f32> = data(1024, 1);
    s.write_device_from_host(&v1).unwrap();
    let r = std::sync::Arc::new(Stream::open(&name).unwrap());
    r.set_wait_strategy(WaitStrategy::Park);
    let timeout = Duration::from_secs(5);
    r.set_default_timeout(timeout);
    // A first read here, where the context is bound: the handle's pinned read buffer exists.
    let mut back = vec![0f32; r.len()];
    r.read_device_to_host(&mut back).unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiting = {
        let r = r.clone();
        std::thread::spawn(move || {
            tid_tx.send(common::gettid()).unwrap();
            let mut back = vec![0f32; r.len()];
            r.read_device_to_host_new(&mut back, None)
                .map(|info| (info.count, back))
        })
    };
    let tid = tid_rx.recv().unwrap();
    common::wait_parked_on_stream(std::process::id(), tid as u32, &name, true);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let other = {
        let r = r.clone();
        std::thread::spawn(move || {
            let mut back = vec![0f32; r.len()];
            let t = Instant::now();
            let got = r
                .read_device_to_host(&mut back)
                .map(|info| (info.count, back));
            let _ = done_tx.send((got, t.elapsed()));
        })
    };
    let other_read = done_rx.recv_timeout(timeout + LONG);
    // Releases the waiting read whatever happened (without the fix, also the other one).
    let v2: Vec<f32> = data(1024, 2);
    s.write_device_from_host(&v2).unwrap();
    let (got, took) = other_read.expect("the other read waited behind the waiting one");
    let (count, back) = got.unwrap_or_else(|e| panic!("the other read: {e}"));
    assert!(took < timeout, "the other read took {took:?}");
    assert_eq!((count, back), (1, v1));
    other.join().unwrap();
    let (count, back) = waiting.join().unwrap().unwrap();
    assert_eq!((count, back), (2, v2));
}

#[test]
fn gpu_producer_death_is_an_error_not_a_crash() {
    let _serial = serial();
    if !gpu_or_skip("gpu_producer_death_is_an_error_not_a_crash") {
        return;
    }
    // 1. The producer dies while we are attached, then we open again.
    let name = unique_name("gpu-dies");
    let _c = Cleanup::new([name.clone()]);
    let mut p = child("gpu_child_entry", "producer")
        .param("name", &name)
        .param("release", false)
        .spawn();
    p.expect_line("ready", LONG);
    let r = Stream::open(&name).unwrap();
    let mut back = vec![0f32; 1024];
    r.read_device_to_host(&mut back).unwrap();
    assert_eq!(back[0], 3.0);
    p.send_line("exit");
    p.wait_timeout(LONG);
    match r.read_device_to_host(&mut back) {
        Ok(_) => eprintln!(
            "attached reader after producer death: read still succeeds (driver kept the mapping)"
        ),
        Err(e) => {
            eprintln!("attached reader after producer death: {e}");
            assert!(matches!(e, Error::Gpu { .. }), "{e:?}");
        }
    }
    drop(r);
    let r = Stream::open(&name).unwrap();
    assert!(!r.gpu_attached());
    assert_eq!(r.shape(), &[1024], "metadata still works");
    let e = r.read_device_to_host(&mut back).unwrap_err().to_string();
    assert!(e.contains("exited") && e.contains("producer"), "{e}");
    drop(r);

    // 2. The producer closes its handle (releases) but keeps running.
    // A tag without the word the check looks for: every message names the stream.
    let name = unique_name("gpu-let-go");
    let _c2 = Cleanup::new([name.clone()]);
    let mut p = child("gpu_child_entry", "producer")
        .param("name", &name)
        .param("release", true)
        .spawn();
    p.expect_line("ready", LONG);
    p.send_line("release");
    p.expect_line("released", LONG);
    let r = Stream::open(&name).unwrap();
    let e = r.read_device_to_host(&mut back).unwrap_err();
    assert!(
        matches!(&e, Error::Gpu { reason: why, .. } | Error::Unsupported { what: why, .. }
            if why.contains("released")),
        "{e:?}"
    );
    p.send_line("exit");
    p.wait_timeout(LONG);
}

/// A read-only handle that is the creating process's last handle marks the buffer released
/// when it drops (its `_gpu` record was mapped read-only, and that store faulted the process).
#[test]
fn gpu_a_read_only_last_handle_of_the_creator_releases_the_buffer() {
    let _serial = serial();
    if !gpu_or_skip("gpu_a_read_only_last_handle_of_the_creator_releases_the_buffer") {
        return;
    }
    let name = unique_name("gpu-ro-last");
    let _c = Cleanup::new([name.clone()]);
    let w = cuda0(&name, &[1024], Dtype::F32).create().unwrap();
    w.write_device_from_host(&vec![5f32; 1024]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    drop(w);
    let mut back = vec![0f32; 1024];
    r.read_device_to_host(&mut back).unwrap();
    assert_eq!(back[0], 5.0);
    drop(r);
    let again = Stream::open_readonly(&name).unwrap();
    let e = again
        .read_device_to_host(&mut back)
        .unwrap_err()
        .to_string();
    assert!(e.contains("released"), "{e}");
}

/// Issue #11: the publication-path probe never panics, also without a driver, and always
/// says why it chose its path.
#[test]
fn publish_path_probe_never_panics_and_gives_a_reason() {
    let _serial = serial();
    use shmstream::gpu::probe::PublishPath;
    let c = shmstream::gpu::publish_path(0);
    assert!(!c.reason.is_empty(), "{c:?}");
    if !shmstream::gpu_available() {
        assert_eq!(c.path, PublishPath::HostSync, "{c}");
    }
    // A device that does not exist never gets the GPU-side path.
    let none = shmstream::gpu::publish_path(4096);
    assert_eq!(none.path, PublishPath::HostSync, "{none}");
    eprintln!("publication path cuda:0: {c}");
}

/// Issue #11, on a GPU: a device reporting attributes 122/99/19 passes the trial stream write
/// (`cuStreamWriteValue64_v2` into registered host memory), so the memop primitives work there.
#[test]
fn publish_path_trial_write_passes_on_a_capable_device() {
    let _serial = serial();
    use shmstream::gpu::probe::PublishPath;
    if !gpu_or_skip("publish_path_trial_write_passes_on_a_capable_device") {
        return;
    }
    if std::env::var(shmstream::gpu::probe::PUBLISH_ENV).is_ok_and(|v| v == "sync") {
        eprintln!("SKIP: {}=sync", shmstream::gpu::probe::PUBLISH_ENV);
        return;
    }
    let c = shmstream::gpu::publish_path(0);
    eprintln!("publication path cuda:0: {c}");
    if c.path == PublishPath::HostSync {
        assert!(
            c.reason.contains("is 0"),
            "the device has the attributes but the trial failed: {c}"
        );
    }
}

/// Issue #11: a GPU consumer (its CUDA stream waits for each frame, copies it, acknowledges
/// it) gets every frame a writer in another process publishes, whole and in order, while a
/// CPU-side reader of the same stream keeps its seqlock checks; the host enqueues all the
/// consumer's frames before the writer starts and waits once.
#[test]
fn gpu_consumer_gets_every_frame_whole_beside_seqlock_readers() {
    let _serial = serial();
    if !gpu_or_skip("gpu_consumer_gets_every_frame_whole_beside_seqlock_readers") {
        return;
    }
    let name = unique_name("gpu-consumer");
    let _c = Cleanup::new([name.clone()]);
    let (n, frames) = (1usize << 18, 240usize); // 1 MiB frames
    let s = cuda0(&name, &[n], Dtype::I32).create().unwrap();
    let r = Stream::open(&name).unwrap();
    // The seqlock reader's handle, opened and used before the consumer's waits are enqueued:
    // registering host memory (which opening a writable handle does) or allocating the pinned
    // staging buffer (its first read) would wait behind them, until the last frame.
    let h = Stream::open_readonly(&name).unwrap();
    h.read_device_to_host(&mut vec![0i32; n]).unwrap();
    let mut c = r.gpu_consumer().unwrap();
    assert!(
        Stream::open(&name).unwrap().gpu_consumer().is_err(),
        "a second consumer of the same stream is refused"
    );
    let st = c.cuda_stream().clone();
    let mut all: CudaSlice<i32> = st.alloc_zeros(n * frames).unwrap();
    let first = c.next_frame();
    for k in 0..frames {
        let mut dst = all.slice_mut(k * n..(k + 1) * n);
        assert_eq!(c.enqueue_next_into(&mut dst).unwrap(), first + k as u64);
    }
    let mut w = child("gpu_child_entry", "ack_writer")
        .param("name", &name)
        .param("frames", frames)
        .spawn();
    w.expect_line("ready", LONG);
    // A seqlock reader on the device, meanwhile, until it reads the last frame.
    let reader = std::thread::spawn(move || {
        let mut host = vec![0i32; n];
        let (mut reads, t) = (0u64, Instant::now());
        loop {
            h.read_device_to_host(&mut host).unwrap();
            assert!(host.iter().all(|&x| x == host[0]), "torn seqlock read");
            if host[0] > 0 {
                reads += 1;
            }
            if host[0] == frames as i32 || t.elapsed() > LONG {
                return (reads, host[0]);
            }
        }
    });
    c.synchronize(LONG).unwrap();
    w.expect_line("wrote all", LONG);
    w.wait_success(LONG);
    let (reads, last) = reader.join().unwrap();
    assert!(
        reads > 0 && last == frames as i32,
        "the seqlock reader read {reads} written frames, the last {last}"
    );
    let host = st.clone_dtoh(&all).unwrap();
    for k in 0..frames {
        let f = &host[k * n..(k + 1) * n];
        assert!(
            f.iter().all(|&x| x == k as i32 + 1),
            "frame {k}: expected all {}, got {} .. {}",
            k + 1,
            f[0],
            f[n - 1]
        );
    }
    eprintln!(
        "GPU consumer: {frames} frames of 1 MiB whole and in order ({}), {reads} seqlock reads of written frames beside",
        s.gpu_publish_path()
            .map(|p| p.path.to_string())
            .unwrap_or_default()
    );
}

/// Frames of the stalled-consumer tests: 16 Ki `i32`.
const STALLED_N: usize = 16 * 1024;

/// A GPU stream (timeout [`LONG`]) whose GPU consumer, a child process, takes frame 1,
/// acknowledges it and then stalls (frame 3 waits for an ack of frame 2 that never comes).
fn stream_with_a_stalled_consumer(tag: &str) -> (String, Cleanup, Stream, common::Proc) {
    let name = unique_name(tag);
    let c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &[STALLED_N], Dtype::I32).create().unwrap();
    s.set_default_timeout(LONG);
    let mut k = child("gpu_child_entry", "stalled_consumer")
        .param("name", &name)
        .spawn();
    k.expect_line("ready", LONG);
    (name, c, s, k)
}

/// Writes frames `1..=last` (every value `v` in frame `v`) through a handle of its own on a
/// thread, which returns the handle.
fn write_frames_on_a_thread(name: &str, last: i32) -> std::thread::JoinHandle<Stream> {
    let name = name.to_owned();
    std::thread::spawn(move || {
        let w = Stream::open(&name).unwrap();
        w.set_default_timeout(LONG);
        for v in 1..=last {
            w.write_device_from_host(&vec![v; STALLED_N])
                .unwrap_or_else(|e| panic!("frame {v}: {e}"));
        }
        w
    })
}

/// Waits (up to [`LONG`]) until the writer of a stalled-consumer stream is blocked on the
/// consumer's ack of frame 2, which never comes: on the GPU-side path frame 3 was enqueued
/// behind that ack (its count stamped, its sequence still odd: it cannot land without it); on
/// the synchronize path the writer waits on the host, holding the lock with frame 2 the last
/// published (a lock attempt times out meanwhile).
fn wait_until_the_writer_waits_for_the_ack(s: &Stream) {
    use shmstream::gpu::probe::PublishPath;
    let gpu_side = s
        .gpu_publish_path()
        .is_some_and(|p| p.path == PublishPath::GpuStream);
    let t = Instant::now();
    loop {
        let (count, seq) = (s.count(), s.write_sequence());
        let blocked = if gpu_side {
            count == 3 && seq & 1 == 1
        } else {
            count == 2
                && seq & 1 == 0
                && matches!(
                    s.lock(Some(Duration::from_millis(100))),
                    Err(Error::Timeout { .. })
                )
                && s.count() == 2
        };
        if blocked {
            return;
        }
        assert!(
            t.elapsed() < LONG,
            "the writer never blocked on the consumer's ack (gpu-side {gpu_side}): count {count}, sequence {seq}"
        );
        std::thread::yield_now();
    }
}

/// The stream's device payload holds frame `v` whole.
fn assert_last_frame(s: &Stream, v: i32) {
    let mut host = vec![0i32; STALLED_N];
    s.read_device_to_host(&mut host).unwrap();
    assert!(host.iter().all(|&x| x == v), "last frame {}", host[0]);
}

/// Issue #11: a GPU consumer killed while the writer waits for its acknowledgement does not
/// stall the writer: it notices the dead consumer, releases the stream and publishes; a new
/// consumer may then take the stream.
#[test]
fn gpu_consumer_killed_while_the_writer_waits_for_its_ack() {
    let _serial = serial();
    if !gpu_or_skip("gpu_consumer_killed_while_the_writer_waits_for_its_ack") {
        return;
    }
    consumer_killed_while_the_writer_waits("gpu-ack-kill", |k| {
        k.kill();
    });
}

/// As above with the killed consumer left a zombie (its parent has not reaped it): kill(2)
/// still finds it, and it used to stall the writer for its whole timeout.
#[test]
fn gpu_consumer_killed_and_unreaped_while_the_writer_waits_for_its_ack() {
    let _serial = serial();
    if !gpu_or_skip("gpu_consumer_killed_and_unreaped_while_the_writer_waits_for_its_ack") {
        return;
    }
    consumer_killed_while_the_writer_waits("gpu-ack-zombie", common::Proc::kill_unreaped);
}

/// Kills (with `kill`) a stalled GPU consumer while the writer waits for its ack; asserts
/// the writer goes on well before its timeout and a new consumer may take the stream.
fn consumer_killed_while_the_writer_waits(tag: &str, kill: impl FnOnce(&mut common::Proc)) {
    let (name, _c, s, mut k) = stream_with_a_stalled_consumer(tag);
    let t = Instant::now();
    // Frame 1 is the consumer's; frame 2 overwrites it after its ack; frame 3 would
    // overwrite frame 2, never acknowledged; frame 4 waits for frame 3 to land.
    let writer = write_frames_on_a_thread(&name, 4);
    wait_until_the_writer_waits_for_the_ack(&s);
    assert_eq!(s.gpu_consumer_pid(), Some(i64::from(k.pid())));
    kill(&mut k);
    writer.join().expect("the writer finished");
    assert!(
        t.elapsed() < LONG,
        "the writer waited out its timeout ({:?}) instead of noticing the dead consumer",
        t.elapsed()
    );
    assert_last_frame(&s, 4);
    let again = Stream::open(&name).unwrap();
    assert!(
        again.gpu_consumer().is_ok(),
        "the dead consumer's claim was released"
    );
}

/// A GPU consumer killed while one writer handle's CUDA stream waits for its ack is released
/// by the next write through *another* handle: a release acknowledges every published frame,
/// so the waiting stream proceeds too (it used to store only the releasing handle's own
/// awaited ack, and both writes waited out their timeouts).
#[test]
fn gpu_consumer_killed_while_another_handles_stream_waits_is_released_by_the_next_writer() {
    let _serial = serial();
    if !gpu_or_skip(
        "gpu_consumer_killed_while_another_handles_stream_waits_is_released_by_the_next_writer",
    ) {
        return;
    }
    let (name, _c, s, mut k) = stream_with_a_stalled_consumer("gpu-ack-kill2");
    // Opened before any CUDA stream of this process waits: registering host memory (which
    // opening a writable handle does) waits for the work in flight, that wait included
    // (`docs/format-gpu.md`, "Ordering caveat").
    let second = Stream::open(&name).unwrap();
    second.set_default_timeout(LONG);
    let t = Instant::now();
    // Frame 3 waits for the ack of frame 2, which the stalled consumer never sends (on the
    // GPU-side path its CUDA stream waits; the host returns).
    let first = write_frames_on_a_thread(&name, 3);
    wait_until_the_writer_waits_for_the_ack(&s);
    assert_eq!(s.gpu_consumer_pid(), Some(i64::from(k.pid())));
    k.kill();
    second
        .write_device_from_host(&vec![4; STALLED_N])
        .expect("frame 4, through another handle");
    let first = first.join().expect("the first writer finished");
    assert!(
        t.elapsed() < LONG,
        "the writers waited out their timeout ({:?}) instead of releasing the dead consumer",
        t.elapsed()
    );
    assert_last_frame(&s, 4);
    drop(first);
}

/// Issue #11: a writer killed while a GPU consumer waits for its next frame is an error on
/// the consumer's host wait (a timeout), never a hang, and the consumer's process exits.
/// Also a torture of the consumer: every frame it took from the fast writer was whole.
#[test]
fn gpu_consumer_whose_writer_is_killed_gets_an_error_not_a_hang() {
    let _serial = serial();
    if !gpu_or_skip("gpu_consumer_whose_writer_is_killed_gets_an_error_not_a_hang") {
        return;
    }
    let name = unique_name("gpu-consumer-orphan");
    let _c = Cleanup::new([name.clone()]);
    let n = 1 << 18;
    let _s = cuda0(&name, &[n], Dtype::I32).create().unwrap();
    let mut c = child("gpu_child_entry", "checking_consumer")
        .param("name", &name)
        .param("wait_ms", 2000)
        .spawn();
    c.expect_line("ready", LONG);
    let mut w = child("gpu_child_entry", "torture_writer")
        .param("name", &name)
        .spawn();
    w.expect_line("ready", LONG);
    c.expect_line("got 10", LONG);
    w.kill();
    let end = c.expect_line("stopped after", LONG);
    assert!(end.contains("timed out"), "{end}");
    c.wait_success(LONG);
    eprintln!("GPU consumer of a killed writer: {end}");
}

/// A CPU write to a mirrored stream through the handle that holds its GPU consumer is
/// refused at once, as its device reads and writes are: its upload would queue behind the
/// consumer's waits on the handle's CUDA stream (a host-synchronized write then never
/// returned, holding the write lock).
#[test]
fn gpu_cpu_write_through_the_consumers_handle_is_refused_not_a_hang() {
    let _serial = serial();
    if !gpu_or_skip("gpu_cpu_write_through_the_consumers_handle_is_refused_not_a_hang") {
        return;
    }
    let name = unique_name("gpu-consumer-cpu-write");
    let _c = Cleanup::new([name.clone()]);
    let n = 1024;
    let s = cuda0(&name, &[n], Dtype::I32)
        .cpu_mirror(true)
        .history(4)
        .create()
        .unwrap();
    s.set_default_timeout(Duration::from_millis(300));
    let mut dev: CudaSlice<i32> = s.cuda_stream().unwrap().alloc_zeros(n).unwrap();
    let mut c = s.gpu_consumer().unwrap();
    c.enqueue_next_into(&mut dev).unwrap();
    let t = Instant::now();
    let e = s.write_slice(&vec![7i32; n]).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(t.elapsed() < LONG, "the refusal took {:?}", t.elapsed());
    assert_eq!(s.count(), 0, "the refused write published");
    drop(c);
    s.write_slice(&vec![7i32; n]).unwrap();
    assert_eq!(s.count(), 1);
}

/// A device view under the lock of the handle that holds the stream's GPU consumer is refused
/// at once, as its reads are: work on the view would queue on the handle's CUDA stream behind
/// the consumer's wait, whose frame the held lock keeps from being written (a hang).
#[test]
fn gpu_device_view_through_the_consumers_handle_is_refused_not_a_hang() {
    let _serial = serial();
    if !gpu_or_skip("gpu_device_view_through_the_consumers_handle_is_refused_not_a_hang") {
        return;
    }
    let name = unique_name("gpu-consumer-view");
    let _c = Cleanup::new([name.clone()]);
    let n = 1024;
    let s = cuda0(&name, &[n], Dtype::I32).create().unwrap();
    // The writer's first write (its pinned staging buffer) before any wait is enqueued.
    s.write_device_from_host(&vec![1i32; n]).unwrap();
    let r = Stream::open(&name).unwrap();
    let mut dev: CudaSlice<i32> = r.cuda_stream().unwrap().alloc_zeros(n).unwrap();
    let mut c = r.gpu_consumer().unwrap();
    c.enqueue_next_into(&mut dev).unwrap(); // frame 2
    let g = r.lock(Some(LONG)).unwrap();
    let e = g.device_view().unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    drop(g);
    // Another handle's view and writes work; the consumer gets the frame.
    let g = s.lock(Some(LONG)).unwrap();
    assert_eq!(g.device_view().unwrap().len(), n);
    drop(g);
    s.write_device_from_host(&vec![5i32; n]).unwrap();
    c.synchronize(LONG).unwrap();
    let host = r.cuda_stream().unwrap().clone_dtoh(&dev).unwrap();
    assert!(host.iter().all(|&x| x == 5), "got {}", host[0]);
}

/// Under `SHMSTREAM_GPU_IPC_EVENT=1` a device-side write is published before its copy is done
/// (readers order their copies on the interprocess event), so a GPU consumer, whose wait for
/// the frame is enqueued ahead of it, could copy a frame still being written: it is refused,
/// naming the variable.
#[test]
fn gpu_consumer_is_refused_under_ipc_event_ordering() {
    let _serial = serial();
    if !gpu_or_skip("gpu_consumer_is_refused_under_ipc_event_ordering") {
        return;
    }
    let name = unique_name("gpu-consumer-event");
    let _c = Cleanup::new([name.clone()]);
    let _s = cuda0(&name, &[1024], Dtype::I32).create().unwrap();
    let out = child("gpu_child_entry", "event_mode_consumer")
        .param("name", &name)
        .env("SHMSTREAM_GPU_IPC_EVENT", "1")
        .run(LONG);
    let line = out
        .iter()
        .find(|l| l.starts_with("consumer"))
        .unwrap_or_else(|| panic!("no verdict from the child: {out:?}"));
    assert!(
        line.starts_with("consumer refused: Unsupported")
            && line.contains("SHMSTREAM_GPU_IPC_EVENT"),
        "{line}"
    );
}

/// Issue #11: a GPU consumer dropped while its stream waits for a frame that is not written
/// releases its stream (bounded by the handle's timeout) and the stream; the next consumer
/// waits for a frame written after it (the released word does not let its wait pass early).
#[test]
fn gpu_consumer_dropped_with_frames_pending_releases_its_stream() {
    let _serial = serial();
    if !gpu_or_skip("gpu_consumer_dropped_with_frames_pending_releases_its_stream") {
        return;
    }
    let name = unique_name("gpu-consumer-drop");
    let _c = Cleanup::new([name.clone()]);
    let n = 16 * 1024;
    let short = Duration::from_millis(300);
    let s = cuda0(&name, &[n], Dtype::I32).create().unwrap();
    let r = Stream::open(&name).unwrap();
    r.set_default_timeout(short);
    let st = r.cuda_stream().unwrap();
    let mut dev: CudaSlice<i32> = st.alloc_zeros(n).unwrap();
    let mut c1 = r.gpu_consumer().unwrap();
    assert_eq!(r.gpu_consumer_pid(), Some(std::process::id() as i64));
    c1.enqueue_next_into(&mut dev).unwrap();
    c1.enqueue_next_into(&mut dev).unwrap(); // never written while c1 lives
    // The consumer's own handle reads and writes the payload only once the consumer is
    // dropped: its CUDA stream is queued behind the consumer's waits (refused at once, not a
    // wait past the timeout).
    let mut host = vec![0i32; n];
    let refused = [
        r.write_device_from_host(&vec![9i32; n]).unwrap_err(),
        r.read_device_to_host(&mut host).unwrap_err(),
    ];
    for e in refused {
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }
    s.write_device_from_host(&vec![1i32; n]).unwrap();
    let e = c1.synchronize(short).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let t = Instant::now();
    drop(c1);
    assert!(t.elapsed() < LONG, "the drop waited {:?}", t.elapsed());
    assert_eq!(
        r.gpu_consumer_pid(),
        None,
        "the dropped consumer let the stream go"
    );
    r.read_device_to_host(&mut host).unwrap();
    assert!(host.iter().all(|&x| x == 1), "got {}", host[0]);
    let mut c2 = r.gpu_consumer().unwrap();
    c2.enqueue_next_into(&mut dev).unwrap();
    assert!(
        c2.synchronize(short).is_err(),
        "the new consumer's wait passed before its frame was written"
    );
    s.write_device_from_host(&vec![2i32; n]).unwrap();
    c2.synchronize(LONG).unwrap();
    let host = st.clone_dtoh(&dev).unwrap();
    assert!(host.iter().all(|&x| x == 2), "got {}", host[0]);
}

/// Frames of the kept-claim tests.
const KEPT_N: usize = 1024;

/// Runs `then` with a GPU stream's handle `s` and a handle `r` whose GPU consumer was dropped
/// while `r`'s CUDA stream was held by the caller's own work (a wait on an event recorded
/// behind another stream's consumer, whose frame is not written yet), so it kept its claim;
/// the third argument writes that frame, letting `r`'s stream finish.
fn with_a_kept_claim(tag: &str, then: impl FnOnce(&Stream, Stream, &dyn Fn())) {
    let (name, other) = (unique_name(tag), unique_name(&format!("{tag}-other")));
    let _c = Cleanup::new([name.clone(), other.clone()]);
    let s = cuda0(&name, &[KEPT_N], Dtype::I32).create().unwrap();
    let o = cuda0(&other, &[KEPT_N], Dtype::I32).create().unwrap();
    let r = Stream::open(&name).unwrap();
    let q = Stream::open(&other).unwrap();
    r.set_default_timeout(Duration::from_millis(300));
    // The first writes and reads (their pinned staging buffers) before any wait is enqueued.
    s.write_device_from_host(&[1i32; KEPT_N]).unwrap();
    o.write_device_from_host(&[1i32; KEPT_N]).unwrap();
    r.read_device_to_host(&mut [0i32; KEPT_N]).unwrap();
    let mut dev: CudaSlice<i32> = q.cuda_stream().unwrap().alloc_zeros(KEPT_N).unwrap();
    let mut qc = q.gpu_consumer().unwrap();
    qc.enqueue_next_into(&mut dev).unwrap(); // frame 2 of `other`, not written yet
    let held = q.cuda_stream().unwrap().record_event(None).unwrap();
    let c = r.gpu_consumer().unwrap();
    r.cuda_stream().unwrap().wait(&held).unwrap();
    let t = Instant::now();
    drop(c);
    assert!(t.elapsed() < LONG, "the drop waited {:?}", t.elapsed());
    assert_eq!(
        r.gpu_consumer_pid(),
        Some(std::process::id() as i64),
        "the claim was kept while the consumer's stream was busy"
    );
    then(&s, r, &|| {
        o.write_device_from_host(&[2i32; KEPT_N]).unwrap();
        qc.synchronize(LONG).unwrap();
    });
    drop(held);
}

/// A claim a dropped GPU consumer kept while its handle's CUDA stream was busy is given up by
/// the handle's next IO once that stream is idle (it was never given up: the process's other
/// handles could not consume the stream, and writers waited for its ack, for the process's
/// life); until then that IO and new consumers are refused at once.
#[test]
fn gpu_a_kept_consumer_claim_is_given_up_by_the_next_io_once_the_stream_is_idle() {
    let _serial = serial();
    if !gpu_or_skip("gpu_a_kept_consumer_claim_is_given_up_by_the_next_io_once_the_stream_is_idle")
    {
        return;
    }
    with_a_kept_claim("gpu-kept-claim-io", |s, r, unblock| {
        let mut host = [0i32; KEPT_N];
        let e = r.read_device_to_host(&mut host).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let e = r.gpu_consumer().map(drop).unwrap_err();
        assert!(matches!(e, Error::Gpu { .. }), "{e:?}");
        let e = s.gpu_consumer().map(drop).unwrap_err();
        assert!(matches!(e, Error::Gpu { .. }), "{e:?}");
        unblock();
        r.cuda_stream().unwrap().synchronize().unwrap();
        r.read_device_to_host(&mut host).unwrap();
        assert!(host.iter().all(|&x| x == 1), "got {}", host[0]);
        assert_eq!(
            r.gpu_consumer_pid(),
            None,
            "the kept claim was not given up"
        );
        drop(s.gpu_consumer().unwrap());
    });
}

/// A claim a dropped GPU consumer kept is given up when its handle is dropped once the
/// handle's CUDA stream is idle: another handle may then consume the stream.
#[test]
fn gpu_a_kept_consumer_claim_is_given_up_when_its_handle_drops() {
    let _serial = serial();
    if !gpu_or_skip("gpu_a_kept_consumer_claim_is_given_up_when_its_handle_drops") {
        return;
    }
    with_a_kept_claim("gpu-kept-claim-drop", |s, r, unblock| {
        unblock();
        drop(r);
        assert_eq!(
            s.gpu_consumer_pid(),
            None,
            "the kept claim was not given up"
        );
        drop(s.gpu_consumer().unwrap());
    });
}

/// Records an error on the CUDA context of `s` as a failed cudarc drop does (`record_err`):
/// cudarc's next `bind_to_thread` or `attribute` on the context reports it, and clears it.
fn stale_driver_error(s: &Stream) {
    use shmstream::gpu::cudarc::driver::{DriverError, sys::CUresult};
    s.cuda_context()
        .unwrap()
        .record_err::<()>(Err(DriverError(CUresult::CUDA_ERROR_UNKNOWN)));
}

/// A handle dropped while its CUDA stream still has work queued (here a wait that never
/// passes) keeps that stream: opening another stream in the process then does not wait for
/// the leaked work (cudarc's `new_stream` synchronizes the whole context when the context's
/// count of its streams goes from 0 to 1, which dropping the last one did).
#[test]
fn gpu_opening_after_a_busy_handle_was_dropped_does_not_wait_for_its_work() {
    let _serial = serial();
    if !gpu_or_skip("gpu_opening_after_a_busy_handle_was_dropped_does_not_wait_for_its_work") {
        return;
    }
    let (name, other) = (
        unique_name("gpu-busy-drop"),
        unique_name("gpu-busy-drop-other"),
    );
    let _c = Cleanup::new([name.clone(), other.clone()]);
    let s = cuda0(&name, &[KEPT_N], Dtype::I32).create().unwrap();
    let o = cuda0(&other, &[KEPT_N], Dtype::I32).create().unwrap();
    s.write_device_from_host(&[1i32; KEPT_N]).unwrap();
    o.write_device_from_host(&[1i32; KEPT_N]).unwrap();
    let mut k = child("gpu_child_entry", "reopen_after_busy_drop")
        .param("name", &name)
        .param("other", &other)
        .spawn();
    // The drop waits 10 s (its settle bound) for the stream before it leaks its buffers.
    k.expect_line("dropped", LONG);
    if k.line_within(LONG).is_none() {
        panic!(
            "opening a stream waited {LONG:?} for the work a dropped handle left queued\n{}",
            k.diagnostics()
        );
    }
    k.kill();
}

/// An error a failed cudarc drop recorded on the context, reported by the next bind, is not
/// taken for a new handle's own: the handle attaches, and decides its publication path, as
/// without it (the first failure used to be kept for the handle's life).
#[test]
fn gpu_a_stale_driver_error_is_not_kept_as_a_new_handles_attachment_or_path() {
    let _serial = serial();
    if !gpu_or_skip("gpu_a_stale_driver_error_is_not_kept_as_a_new_handles_attachment_or_path") {
        return;
    }
    let name = unique_name("gpu-stale-err");
    let _c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &[KEPT_N], Dtype::I32).create().unwrap();
    let expected = s.gpu_publish_path().unwrap();
    stale_driver_error(&s);
    let r = Stream::open(&name).unwrap();
    assert!(
        r.gpu_attached(),
        "a stale error detached the new handle: {:?}",
        r.read_device_to_host(&mut [0i32; KEPT_N])
    );
    let got = r.gpu_publish_path().unwrap();
    assert_eq!(got.path, expected.path, "{got} (the creator's: {expected})");
    stale_driver_error(&s);
    r.write_device_from_host(&[4i32; KEPT_N]).unwrap();
    let mut host = [0i32; KEPT_N];
    s.read_device_to_host(&mut host).unwrap();
    assert!(host.iter().all(|&x| x == 4), "got {}", host[0]);
}

/// Borrowing the payload as a cudarc slice (`with_slice`, `with_slice_mut`) after a stale
/// driver error was recorded on the context returns, not panics (cudarc's slice upgrade
/// unwraps its event creation, which reports that error), and the slice works.
#[test]
fn gpu_borrowing_the_payload_as_a_slice_after_a_stale_driver_error_does_not_panic() {
    let _serial = serial();
    if !gpu_or_skip(
        "gpu_borrowing_the_payload_as_a_slice_after_a_stale_driver_error_does_not_panic",
    ) {
        return;
    }
    let name = unique_name("gpu-stale-slice");
    let _c = Cleanup::new([name.clone()]);
    let s = cuda0(&name, &[KEPT_N], Dtype::I32).create().unwrap();
    s.write_device_in_place(|v| {
        stale_driver_error(&s);
        v.with_slice_mut::<i32, _>(|buf| view_stream_copy(buf, &[6i32; KEPT_N]))
    })
    .unwrap();
    let g = s.lock(Some(LONG)).unwrap();
    let view = g.device_view().unwrap();
    stale_driver_error(&s);
    let host = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        view.with_slice::<i32, _>(|buf| view.stream().clone_dtoh(buf).unwrap())
    }))
    .expect("with_slice panicked after a stale driver error")
    .unwrap();
    assert!(host.iter().all(|&x| x == 6), "got {}", host[0]);
}

/// The device probe (attributes, trial write), made once per process, is not taken from a
/// stale error: a process whose first probe met one gets the path this one gets.
#[test]
fn gpu_a_stale_driver_error_is_not_kept_as_the_device_probe() {
    let _serial = serial();
    if !gpu_or_skip("gpu_a_stale_driver_error_is_not_kept_as_the_device_probe") {
        return;
    }
    let name = unique_name("gpu-stale-probe");
    let _c = Cleanup::new([name.clone()]);
    let _s = cuda0(&name, &[KEPT_N], Dtype::I32).create().unwrap();
    let expected = shmstream::gpu::publish_path(0);
    let out = child("gpu_child_entry", "stale_error_probe")
        .param("name", &name)
        .run(LONG);
    let line = out
        .iter()
        .find_map(|l| l.strip_prefix("path "))
        .unwrap_or_else(|| panic!("no path from the child: {out:?}"));
    assert_eq!(line, expected.path.to_string(), "this process: {expected}");
}
