//! The reads documented as "no allocation" make none, counted by this binary's allocator on
//! the reading thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{Cleanup, unique_name};
use shmstream::{Dtype, Stream};

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
