//! `NotFound` for a name that has no stream, with its hint: the streams that do exist
//! ([`not_found`]), and whether a creation of the name is still at work, so the error says
//! "unfinished" rather than "create it first".

use crate::error::Error;
use crate::format::{self, META_BYTES};
use crate::{catalog, name, sys};

pub(crate) fn not_found(name: &str) -> Error {
    Error::NotFound {
        name: name.to_owned(),
        known: known_streams(name),
        unfinished: false,
    }
}

/// The streams [`not_found`] names as a hint (`except` left out), sorted: each `_meta` of
/// ours that [`hinted`] names, those that may settle looked at again after one pause for all
/// ([`catalog::settled`]). Reads only: no mapping, no lock taken, no lock file made, no
/// stamp cleared. It runs in waits' polling loops and under other names' locks, so it must
/// cost little and change nothing of other streams (`list` clears such stamps).
fn known_streams(except: &str) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let Ok(dir) = std::fs::read_dir(sys::SHM_DIR) else {
        return Vec::new();
    };
    let ids: Vec<String> = dir
        .filter_map(|e| {
            let file = e.ok()?.file_name();
            let id = file.to_str()?.strip_suffix("_meta")?;
            name::looks_like_segment_id(id).then(|| id.to_owned())
        })
        .collect();
    // Each look reads the `_meta` afresh: none is held open across the pause.
    let look = |id: &String, last: bool| {
        let read = || {
            let meta_id = format!("{id}_meta");
            let file = sys::shm_open(&meta_id, libc::O_RDONLY | crate::trust::OPEN_FLAGS).ok()?;
            crate::trust::check_file(&file, &crate::segment::path(&meta_id)).ok()?;
            let mut b = vec![0u8; META_BYTES];
            file.read_exact_at(&mut b, 0).ok().map(|()| b)
        };
        Ok::<_, std::convert::Infallible>(hinted(id, last, read))
    };
    let Ok(looked) = catalog::settled(&ids, look);
    let mut known: Vec<String> = looked
        .into_iter()
        .flatten()
        .filter(|k| k != except)
        .collect();
    known.sort();
    known
}

/// One look of the not-found hint at the `_meta` under segment id `id`, whose header `read`
/// reads: its stored name, when that hashes back to `id` and the header is valid, or valid
/// but for lock stamps (a dead writer's, which `open` clears, or a live one's between its
/// two stores). [`catalog::Look::Again`] when it fails with an error that may settle (a
/// pyshmem creation in progress) and this is not the `last` look.
fn hinted(
    id: &str,
    last: bool,
    read: impl FnOnce() -> Option<Vec<u8>>,
) -> catalog::Look<Option<String>> {
    use catalog::Look;
    let Some(bytes) = read() else {
        return Look::Final(None);
    };
    let Some(stored) = format::stored_name(&bytes).filter(|s| name::segment_id(s) == id) else {
        return Look::Final(None);
    };
    Look::Final(match format::decode(&bytes, Some(&stored)) {
        Ok(h) => Some(h.name),
        Err(rule) if format::valid_but_for_lock_stamps(&bytes, Some(&stored), &rule) => {
            Some(stored)
        }
        Err(rule) if !last && catalog::may_settle(&rule) => return Look::Again,
        Err(_) => None,
    })
}

/// `NotFound` for a name without `_meta`: `unfinished` when its payload is there (a regular
/// file of ours), which a pyshmem creator makes before its `_meta` and leaves when it is
/// killed in between, or while a creator of ours is at work ([`creation_at_work`]).
/// `create` calls the name taken, so "create it first" would mislead.
pub(super) fn meta_not_found(name: &str) -> Error {
    let payload = crate::segment::path(&name::segment_id(name));
    let ours = std::fs::symlink_metadata(&payload)
        .is_ok_and(|m| crate::trust::check_metadata(&m, &payload).is_ok());
    match ours || creation_at_work(name) {
        true => Error::NotFound {
            name: name.to_owned(),
            known: Vec::new(),
            unfinished: true,
        },
        false => not_found(name),
    }
}

/// Whether a running process (this one included) is building `name`'s segments under their
/// private ids (`<id>.creating-<pid>`, regular files of ours): a creation at work, which holds
/// the name's lock for its whole build (seconds for a large or GPU stream) and publishes
/// nothing before its end. A dead creator's are abandoned ([`crate::purge()`] removes them).
/// Lists `/dev/shm` where the name has a lock file: for paths that already failed or waited.
pub(super) fn creation_at_work(name: &str) -> bool {
    // A creator makes the name's lock file before it builds: without one, no listing (an
    // open polling for a stream not made yet pays a `stat`, not a `readdir`).
    if std::fs::symlink_metadata(name::lock_path(name)).is_err() {
        return false;
    }
    let id = name::segment_id(name);
    let Ok(dir) = std::fs::read_dir(sys::SHM_DIR) else {
        return false;
    };
    dir.filter_map(|e| e.ok()).any(|e| {
        let path = e.path();
        e.file_name()
            .to_str()
            .and_then(crate::segment::abandoned_creation)
            .is_some_and(|(of, pid)| of == id && sys::is_self_or_running(pid))
            && std::fs::symlink_metadata(&path)
                .is_ok_and(|m| crate::trust::check_metadata(&m, &path).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use crate::stream::Stream;

    /// The not-found hint reads the other streams without touching them: a dead writer's
    /// stamps left in a header are not cleared and no lock file is made for it (the hint
    /// scanned as `list` does, which clears them, in waits' loops and under other locks).
    #[test]
    fn a_not_found_hint_leaves_other_streams_untouched() {
        use std::os::unix::fs::FileExt;
        let planted = format!("hint-planted-{}", sys::pid());
        let _ = catalog::unlink(&planted);
        drop(Stream::create(&planted, &[4], Dtype::U8).unwrap());
        let lock = name::lock_path(&planted);
        std::fs::remove_file(&lock).unwrap();
        let meta = crate::segment::path(&name::meta_id(&planted));
        // A writer killed between its two stamps: its pid stored, the depth not.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&meta)
            .unwrap()
            .write_all_at(
                &4_000_000i64.to_le_bytes(),
                format::offset::LOCK_OWNER_PID as u64,
            )
            .unwrap();
        let before = std::fs::read(&meta).unwrap();
        let missing = format!("hint-missing-{}", sys::pid());
        match Stream::open(&missing) {
            Err(Error::NotFound {
                known,
                unfinished: false,
                ..
            }) => assert!(known.contains(&planted), "{known:?}"),
            other => panic!("{:?}", other.map(drop)),
        }
        assert_eq!(
            std::fs::read(&meta).unwrap(),
            before,
            "the hint wrote a header"
        );
        assert!(!lock.exists(), "the hint made another stream's lock file");
        catalog::unlink(&planted).unwrap();
    }

    /// Review item: the hint decodes a header as a scan does: a pyshmem stream caught
    /// between its CRC flag and its CRC (stored 0) is looked at again (after the scan's
    /// pause) and named (the hint decoded each header once and left it out); dead lock
    /// stamps alone are overlooked; a bad CRC is not.
    #[test]
    fn the_hint_names_a_pyshmem_stream_caught_mid_crc() {
        use catalog::Look;
        let stream = "hint-mid-crc";
        let id = name::segment_id(stream);
        let valid = catalog::tests::header(stream).to_vec();
        let named = Look::Final(Some(stream.to_owned()));
        let mut creating = valid.clone();
        creating[format::offset::HEADER_CRC..][..4].fill(0);
        assert_eq!(hinted(&id, false, || Some(creating.clone())), Look::Again);
        assert_eq!(hinted(&id, true, || Some(valid.clone())), named);
        assert_eq!(
            hinted(&id, true, || Some(creating.clone())),
            Look::Final(None)
        );
        // A dead writer's stamps are named at the first look: no second one after a pause,
        // which every not-found paid for each such leftover on the host (a poller at every
        // poll).
        let mut stamped = valid.clone();
        stamped[format::offset::LOCK_OWNER_PID] = 9;
        assert_eq!(hinted(&id, false, || Some(stamped.clone())), named);
        let mut corrupt = valid.clone();
        corrupt[format::offset::HEADER_CRC] ^= 1;
        assert_eq!(
            hinted(&id, false, || Some(corrupt.clone())),
            Look::Final(None)
        );
        // Under another name's id: not this stream's.
        assert_eq!(
            hinted(&name::segment_id("other"), false, || Some(valid.clone())),
            Look::Final(None)
        );
    }
}
