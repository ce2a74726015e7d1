//! A thread per stream: each stream of a bridge is carried on a thread of its own, named
//! for it, and the first failure stops them all ([`per_stream`], [`Stop`]).

use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::BridgeError;

/// When the threads of [`per_stream`] stop: when one of the caller's flags is set (the
/// bridge is stopping; the subscriber's session is to be opened anew), or once one of them
/// has failed (a bridge that cannot carry one of its streams says so and exits, rather than
/// carrying the others as if nothing were wrong).
pub(crate) struct Stop<'a> {
    asked: &'a [&'a AtomicBool],
    failed: AtomicBool,
}

impl<'a> Stop<'a> {
    /// Set by any of `asked`, or by a thread of [`per_stream`] failing.
    pub(crate) fn new(asked: &'a [&'a AtomicBool]) -> Stop<'a> {
        Stop {
            asked,
            failed: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.asked.iter().any(|a| a.load(Ordering::Relaxed)) || self.failed.load(Ordering::Relaxed)
    }
}

/// Runs `each` for every name on a thread of its own, named `ROLE NAME` (Rust's panic
/// message names it; the name escaped, as a thread's name cannot hold a NUL, which the
/// library API lets through), and waits for them all: they stop when one of `asked` is set,
/// and the first failure stops the others and is the result.
pub(crate) fn per_stream(
    names: &[String],
    role: &str,
    asked: &[&AtomicBool],
    each: impl Fn(&str, &Stop) -> Result<(), BridgeError> + Sync,
) -> Result<(), BridgeError> {
    let stop = Stop::new(asked);
    let failed: std::sync::Mutex<Option<BridgeError>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for name in names {
            let (each, stop, failed) = (&each, &stop, &failed);
            let fail = move |e: BridgeError| {
                let mut first = failed.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert(e);
                stop.failed.store(true, Ordering::Relaxed);
            };
            let spawned = std::thread::Builder::new()
                .name(format!("{role} {}", name.escape_debug()))
                .spawn_scoped(scope, move || {
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| each(name, stop)))
                            .unwrap_or_else(|_| {
                                Err(BridgeError::Usage(format!(
                                    "stream '{name}': its {role} thread panicked, a bug: report \
                                     it with the message above"
                                )))
                            });
                    if let Err(e) = r {
                        fail(e);
                    }
                });
            if let Err(e) = spawned {
                fail(BridgeError::Usage(format!(
                    "stream '{name}': starting its {role} thread failed ({e})"
                )));
            }
        }
    });
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rust's panic message names the thread, `ROLE NAME`; the bridge's error names the
    /// stream and says it is a bug.
    #[test]
    fn a_panicked_stream_thread_is_named_and_its_error_names_the_stream() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let asked = AtomicBool::new(false);
        let r = per_stream(&names(&["cam0"]), "publisher", &[&asked], |_, _| {
            let me = std::thread::current().name().map(str::to_owned);
            Err(BridgeError::Usage(format!("{me:?}")))
        });
        match r {
            Err(BridgeError::Usage(m)) => assert_eq!(m, r#"Some("publisher cam0")"#),
            other => panic!("{other:?}"),
        }
        let r = per_stream(&names(&["dm0"]), "subscriber", &[&asked], |_, _| {
            panic!("on purpose")
        });
        match r {
            Err(BridgeError::Usage(m)) => assert_eq!(
                m,
                "stream 'dm0': its subscriber thread panicked, a bug: report it with the \
                 message above"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A thread whose name holds a NUL cannot be spawned (Rust panics): its name is escaped;
    /// the error names the stream as given.
    #[test]
    fn a_stream_name_holding_a_nul_gets_a_thread_named_with_it_escaped() {
        let names = vec!["cam\0 1".to_owned()];
        let asked = AtomicBool::new(false);
        let r = per_stream(&names, "publisher", &[&asked], |_, _| {
            let me = std::thread::current().name().map(str::to_owned);
            Err(BridgeError::Usage(format!("{me:?}")))
        });
        match r {
            Err(BridgeError::Usage(m)) => assert_eq!(m, r#"Some("publisher cam\\0 1")"#),
            other => panic!("{other:?}"),
        }
        let r = per_stream(&names, "publisher", &[&asked], |_, _| panic!("on purpose"));
        match r {
            Err(BridgeError::Usage(m)) => {
                assert!(
                    m.starts_with("stream 'cam\0 1': its publisher thread"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
