//! File rotation: one stream's cube files, the one being filled and the one before it being
//! finished on a thread of its own, opened and finished in turn as each fills up.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shmstream::Stream;

use super::files::{cube_path, file_stem};
use super::progress::Progress;
use super::{CubeSink, Finished, Format, Plan, both, fits, frame_file, npy_cube};
use crate::Fallible;

/// One stream's cube files: the one being filled, and the one before it being finished.
/// Dropped (a recorder thread that panicked), it finishes them, ignoring their errors.
pub(super) struct Cubes<'a> {
    s: &'a Stream,
    plan: &'a Plan,
    p: &'a Progress,
    /// The file being filled (read in place by the recorder loop).
    pub(super) current: Option<Box<dyn CubeSink + Send>>,
    /// Index of the next file to open.
    next: usize,
    /// The thread finishing the last file closed.
    finishing: Option<std::thread::JoinHandle<Finished>>,
    /// With `--fsync`, the directory whose entries are put on the disk with each file.
    dir: Option<Arc<frame_file::Directory>>,
    /// The stream's lost frames when its last file was closed.
    lost_before: u64,
}

impl<'a> Cubes<'a> {
    /// `s`'s cube files, none opened yet: the first is opened by [`Cubes::current`].
    pub(super) fn new(
        s: &'a Stream,
        plan: &'a Plan,
        p: &'a Progress,
        dir: Option<Arc<frame_file::Directory>>,
    ) -> Cubes<'a> {
        Cubes {
            s,
            plan,
            p,
            current: None,
            next: 0,
            finishing: None,
            dir,
            lost_before: 0,
        }
    }

    /// The file being filled, opening the next one if none is.
    pub(super) fn current(&mut self) -> Fallible<&mut (dyn CubeSink + Send + 'static)> {
        let k = match self.current.take() {
            Some(k) => k,
            None => {
                let k = open_sink(self.s, self.plan, self.next)?;
                self.next += 1;
                self.p.files.fetch_add(1, Ordering::Relaxed);
                k
            }
        };
        Ok(&mut **self.current.insert(k))
    }

    /// Finishes the current file on a thread of its own (here if none starts) once the one
    /// before it is finished: closing it (a network file system writes it back then) and
    /// with `--fsync` putting it on the disk take a while, and the stream does not wait.
    /// Fails with the errors of the files finished by then. `complete`: whether the
    /// recording goes on, or ended without an error (see [`CubeSink::ending`]).
    pub(super) fn close(&mut self, complete: bool) -> Fallible {
        let Some(mut k) = self.current.take() else {
            return Ok(());
        };
        // Only this stream's thread counts its lost frames: none are counted meanwhile.
        let lost = self.p.lost.load(Ordering::Relaxed);
        k.ending(lost.saturating_sub(self.lost_before), complete);
        self.lost_before = lost;
        let before = self.join();
        let (file, to_finish) = std::sync::mpsc::sync_channel::<Box<dyn CubeSink + Send>>(1);
        let on_thread = self.dir.clone();
        let thread = std::thread::Builder::new().spawn(move || match to_finish.recv() {
            Ok(mut k) => finish_file(&mut *k, on_thread.as_deref()),
            Err(_) => Finished::new(0, Vec::new()),
        });
        // A thread that did not start dropped its end: the file comes back.
        let here = match file.send(k) {
            Ok(()) => {
                self.finishing = thread.ok();
                Ok(())
            }
            Err(std::sync::mpsc::SendError(mut k)) => {
                self.count(finish_file(&mut *k, self.dir.as_deref()))
            }
        };
        both(before, here)
    }

    /// Once the last file closed is finished, counts its frames and fails with its errors
    /// (as the next [`Self::close`] would): a failed close (a network file system's quota)
    /// stops the recording at once, not a whole file later. Cheap: called after each frame.
    pub(super) fn check_finished(&mut self) -> Fallible {
        if self.finishing.as_ref().is_some_and(|h| h.is_finished()) {
            return self.join();
        }
        Ok(())
    }

    /// Waits until the last file closed is finished, counting its frames.
    fn join(&mut self) -> Fallible {
        let Some(h) = self.finishing.take() else {
            return Ok(());
        };
        let done = h.join().unwrap_or_else(|_| {
            Finished::new(0, vec!["a thread finishing a file panicked".into()])
        });
        self.count(done)
    }

    /// Counts the frames of a finished file; fails with its error.
    fn count(&self, done: Finished) -> Fallible {
        self.p.kept.fetch_add(done.frames as u64, Ordering::Relaxed);
        done.result.map_err(Into::into)
    }

    /// Closes the current file and waits until every file is finished; `complete`: whether
    /// the recording ended without an error.
    pub(super) fn finish_all(&mut self, complete: bool) -> Fallible {
        let closed = self.close(complete);
        both(closed, self.join())
    }
}

impl Drop for Cubes<'_> {
    fn drop(&mut self) {
        // Nothing left after `finish_all`; after a panic, the files keep their frames.
        let _ = self.finish_all(false);
    }
}

/// Finishes `k`; with `--fsync` (`dir`) puts it on the disk, and then its entry in `dir`
/// (created with it, and not on the disk until the directory is synced too).
fn finish_file(k: &mut dyn CubeSink, dir: Option<&frame_file::Directory>) -> Finished {
    let mut done = k.finish(dir.is_some());
    let Some(dir) = dir else { return done };
    if let Err(e) = dir.sync() {
        done.result = Err(match done.result {
            Ok(()) => e,
            Err(before) => format!("{before}; {e}"),
        });
    }
    done
}

fn open_sink(s: &Stream, plan: &Plan, index: usize) -> Fallible<Box<dyn CubeSink + Send>> {
    let path = cube_path(plan, &file_stem(s.name()), index);
    Ok(match plan.format {
        Format::Fits => Box::new(fits::FitsCube::create(
            &path,
            s.name(),
            s.dtype(),
            s.shape(),
            plan.per_file,
        )?),
        Format::Npy => Box::new(npy_cube::NpyCube::create(
            &path,
            s.dtype(),
            s.shape(),
            s.size_bytes(),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FrameMeta;

    /// A recorder thread that panics (a bug) leaves both its files finished, their frames
    /// counted: the one being filled and the one being finished.
    #[test]
    fn a_recorder_that_panics_leaves_its_files_finished() {
        let name = format!("t-rec-unit-panic-{}", std::process::id());
        let _w = shmstream::scratch(&name, &[2], shmstream::Dtype::U16).unwrap();
        let s = Stream::open_readonly(&name).unwrap();
        let plan = Plan {
            names: vec![name.clone()],
            frames: Some(3),
            per_file: 2,
            ..Plan::for_test(Format::Npy, std::env::temp_dir().join(&name))
        };
        std::fs::create_dir_all(&plan.out).unwrap();
        let p = Progress::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cubes = Cubes::new(&s, &plan, &p, None);
            for i in 0..3 {
                let meta = FrameMeta {
                    frame_id: i,
                    count: i + 1,
                    write_time: 1.0,
                    record_time: 2.0,
                };
                let k = cubes.current().unwrap();
                k.push(&mut [1, 0, 2, 0], meta).unwrap();
                if k.frames() >= plan.per_file {
                    cubes.close(true).unwrap();
                }
            }
            panic!("a bug in the recorder");
        }));
        let headers = [0, 1].map(|i| {
            let bytes = std::fs::read(cube_path(&plan, &file_stem(&name), i)).unwrap();
            let end = bytes.iter().position(|&b| b == b'\n').unwrap();
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        });
        let _ = std::fs::remove_dir_all(&plan.out);
        assert!(panicked.is_err());
        assert!(headers[0].contains("'shape': (2, 2)"), "{}", headers[0]);
        assert!(headers[1].contains("'shape': (1, 2)"), "{}", headers[1]);
        assert_eq!(p.kept.load(Ordering::Relaxed), 3);
    }
}
