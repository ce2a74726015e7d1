//! The reads documented as "no allocation" make none, counted by this binary's allocator on
//! the reading thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{Cleanup, gettid, unique_name, wait_parked_on_stream};
use shmstream::{Dtype, Stream, StreamOptions, WaitStrategy};

/// The system allocator, counting this thread's allocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is a const-initialised
// thread-local `Cell` (no allocation, no reentrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// `read_into` (an array view) and `read_into_slice` allocate nothing once warm:
/// `read_into` copied the view's shape into a `Vec` on every call.
#[test]
fn reads_into_caller_memory_allocate_nothing() {
    let name = unique_name("noalloc");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4, 8], Dtype::F32).unwrap();
    s.write_slice(&[1.5f32; 32]).unwrap();
    let mut array = shmstream::ndarray::Array2::<f32>::zeros((4, 8));
    let mut flat = [0f32; 32];
    // Warm: first reads may set up per-handle state.
    s.read_into(&mut array.view_mut()).unwrap();
    s.read_into_slice(&mut flat).unwrap();
    let before = allocations();
    for _ in 0..100 {
        s.read_into(&mut array.view_mut()).unwrap();
        s.read_into_slice(&mut flat).unwrap();
    }
    let made = allocations() - before;
    assert_eq!(made, 0, "allocations in 100 reads of each kind");
    assert!(array.iter().chain(&flat).all(|&v| v == 1.5));
}

/// A wait that finds a live writer inside its bracket looks whether that writer died (a try
/// of the write lock, which fails) and allocates nothing for it: the failed try built a
/// `Timeout` error naming the stream (a `String`) that the look threw away. Here a parking
/// reader arrives at another thread's open bracket, looks at once, parks, and is woken by
/// the frame.
#[test]
fn a_look_for_a_dead_writer_that_finds_it_alive_allocates_nothing() {
    let name = unique_name("noalloc-look");
    let _c = Cleanup::new([&name]);
    let w = StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::U8)
        .notify(true)
        .create()
        .unwrap();
    w.write_slice(&[1u8; 4]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    r.set_wait_strategy(WaitStrategy::Park);
    let mut buf = [0u8; 4];
    // Warm: first reads may set up per-handle state.
    r.read_into_slice(&mut buf).unwrap();
    let reader = gettid() as u32;
    let (inside_tx, inside_rx) = std::sync::mpsc::channel();
    let made = std::thread::scope(|scope| {
        scope.spawn(|| {
            w.write_view(|b: &mut [u8]| {
                inside_tx.send(()).unwrap();
                // The reader has looked (the lock was held) and parked.
                wait_parked_on_stream(std::process::id(), reader, &name, true);
                b.fill(2);
                Ok::<_, std::convert::Infallible>(())
            })
            .unwrap();
        });
        inside_rx.recv().unwrap();
        let before = allocations();
        r.read_into_slice(&mut buf).unwrap();
        allocations() - before
    });
    assert_eq!(buf, [2u8; 4]);
    assert_eq!(
        made, 0,
        "allocations in a wait behind a live writer's bracket"
    );
}
