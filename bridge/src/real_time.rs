//! Real-time scheduling of the bridge process (`--rt-priority`).

use crate::BridgeError;

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1-99); threads it starts
/// afterwards inherit the policy, Zenoh's runtime threads among them when this thread opens
/// the process's first session (the binary calls it first thing for `--rt-priority`).
///
/// A bridge that shares a core with the writer it serves then runs as soon as a frame
/// wakes it, ahead of the writer's own return to sleep: the frame's hop loses the writer's
/// tail, and the writer loses its core for every frame (measured in
/// `docs/bridge-performance.md`, *Under `SCHED_FIFO`*).
pub fn run_real_time(priority: u8) -> Result<(), BridgeError> {
    if !(1..=99).contains(&priority) {
        return Err(BridgeError::Usage(format!(
            "--rt-priority {priority}: a SCHED_FIFO priority is 1 to 99"
        )));
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid `sched_param` that the call only reads; pid 0 is the
    // calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return Ok(());
    }
    Err(BridgeError::Usage(format!(
        "--rt-priority {priority}: SCHED_FIFO was refused ({}); it needs root, CAP_SYS_NICE \
         or `ulimit -r` >= {priority}: run with one of them or drop --rt-priority",
        std::io::Error::last_os_error()
    )))
}
