//! `lock_many`: one global order, one deadline, release on drop; two processes locking
//! overlapping sets listed in opposite orders never deadlock.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, child, child_role, param, say, unique_name};
use shmstream::{Dtype, Error, Stream, lock_many};

/// Rounds each process runs at least; each also keeps going until the other has done as
/// many, so the two loops overlap for at least ROUNDS rounds.
const ROUNDS: i64 = 1000;

/// One round: lock the set, bump the shared counter in `counter` (read and written under
/// the locks), and record this process's progress in `mine`.
fn bump(set: &[&Stream], counter: &str, mine: &str, round: i64) {
    let held = lock_many(set, Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
    let g = held.get(counter).expect("counter stream is in the set");
    let now = g.live::<i64>().unwrap()[[0]];
    g.write_slice(&[now + 1]).unwrap();
    for s in set.iter().filter(|s| s.name() != counter) {
        // Through the stream itself: the lock is reentrant.
        let v = if s.name() == mine { round + 1 } else { round };
        s.write_slice(&[v]).unwrap();
    }
}

/// Runs rounds until this process did ROUNDS and the other process (progress in `other`)
/// did too. Returns the rounds done.
fn run_rounds(set: &[&Stream], counter: &str, mine: &str, other: &Stream) -> i64 {
    let mut round = 0;
    while round < ROUNDS || other.read::<i64>().unwrap()[[0]] < ROUNDS {
        bump(set, counter, mine, round);
        round += 1;
    }
    round
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Locks [d, c, b] (the reverse of the parent's [a, b, c], overlapping on b and c).
        "locker" => {
            let names: Vec<String> = ["a", "b", "c", "d"]
                .iter()
                .map(|k| param::<String>(k))
                .collect();
            let s: Vec<Stream> = names.iter().map(|n| Stream::open(n).unwrap()).collect();
            say("ready");
            common::block_on_stdin();
            let done = run_rounds(&[&s[3], &s[2], &s[1]], &names[1], &names[3], &s[0]);
            say(&format!("done {done}"));
        }
        // Holds one stream's lock until told to let go.
        "holder" => {
            let s = Stream::open(&param::<String>("name")).unwrap();
            let g = s.lock(Some(Duration::from_secs(10))).unwrap();
            say("holding");
            common::block_on_stdin();
            drop(g);
            say("released");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn two_processes_locking_overlapping_sets_in_opposite_orders_both_finish() {
    let base = unique_name("many");
    let names: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| format!("{base}-{k}"))
        .collect();
    let _c = Cleanup::new(names.iter());
    let s: Vec<Stream> = names
        .iter()
        .map(|n| Stream::create(n, &[1], Dtype::I64).unwrap())
        .collect();
    for st in &s {
        st.write_slice(&[0i64]).unwrap();
    }

    let mut peer = child("child_entry", "locker")
        .param("a", &names[0])
        .param("b", &names[1])
        .param("c", &names[2])
        .param("d", &names[3])
        .spawn();
    peer.expect_line("ready", common::LONG);
    let started = Instant::now();
    peer.send_line("go");
    let mine = run_rounds(&[&s[0], &s[1], &s[2]], &names[1], &names[0], &s[3]);
    let theirs: i64 = peer
        .expect_line("done", Duration::from_secs(60))
        .parse()
        .unwrap();
    peer.wait_success(common::LONG);
    assert!(mine >= ROUNDS && theirs >= ROUNDS);
    // Mutual exclusion held: no increment of the shared counter was lost.
    assert_eq!(s[1].read::<i64>().unwrap()[[0]], mine + theirs);
    eprintln!("{mine} + {theirs} rounds in {:?}", started.elapsed());
}

#[test]
fn locks_are_taken_by_name_once_per_name_and_released_on_drop() {
    let base = unique_name("many-order");
    let (x, y) = (format!("{base}-x"), format!("{base}-y"));
    let _c = Cleanup::new([&x, &y]);
    let sy = Stream::create(&y, &[2], Dtype::U8).unwrap();
    let sx = Stream::create(&x, &[2], Dtype::U8).unwrap();
    let sx2 = Stream::open(&x).unwrap();
    {
        let held = lock_many(&[&sy, &sx2, &sx], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            held.names(),
            vec![x.as_str(), y.as_str()],
            "sorted by name, same-name handles once"
        );
        assert_eq!(held.len(), 2);
        assert!(!held.is_empty());
        let guarded: Vec<&str> = held.guards().iter().map(|g| g.stream().name()).collect();
        assert_eq!(guarded, held.names(), "the guards, in acquisition order");
        assert!(held.get("other").is_none());
        held.get(&y).unwrap().write_slice(&[1u8, 2]).unwrap();
        // Another thread cannot take either lock while the guard lives.
        std::thread::scope(|t| {
            t.spawn(|| {
                let ox = Stream::open(&x).unwrap();
                assert!(matches!(
                    ox.lock(Some(Duration::ZERO)),
                    Err(Error::Timeout { .. })
                ));
            });
        });
    }
    std::thread::scope(|t| {
        t.spawn(|| {
            for n in [&x, &y] {
                let o = Stream::open(n).unwrap();
                assert!(o.lock(Some(Duration::ZERO)).is_ok(), "{n} released on drop");
            }
        });
    });
    assert_eq!(sy.read::<u8>().unwrap().as_slice().unwrap(), &[1, 2]);
    assert!(lock_many(&[], None).unwrap().is_empty());
    // Of a stream's handles, one that may lock it is kept, whatever comes first.
    let rx = Stream::open_readonly(&x).unwrap();
    let closed = Stream::open(&x).unwrap();
    closed.close();
    let held = lock_many(&[&rx, &closed, &sx], Some(Duration::from_secs(5))).unwrap();
    assert_eq!(held.names(), vec![x.as_str()]);
}

#[test]
fn one_deadline_and_partial_locks_are_released_on_failure() {
    let base = unique_name("many-deadline");
    let (p, q) = (format!("{base}-p"), format!("{base}-q"));
    let _c = Cleanup::new([&p, &q]);
    let sp = Stream::create(&p, &[1], Dtype::F32).unwrap();
    let sq = Stream::create(&q, &[1], Dtype::F32).unwrap();
    let mut holder = child("child_entry", "holder").param("name", &q).spawn();
    holder.expect_line("holding", common::LONG);

    let t0 = Instant::now();
    let err = lock_many(&[&sq, &sp], Some(Duration::from_millis(200))).unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(&err, Error::Timeout { name, .. } if name == &q),
        "{err}"
    );
    assert!(err.to_string().contains("lock_many"), "{err}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // `p` (taken first, by name order) was released when `q` timed out.
    std::thread::scope(|t| {
        t.spawn(|| assert!(Stream::open(&p).unwrap().lock(Some(Duration::ZERO)).is_ok()));
    });

    holder.send_line("go");
    holder.expect_line("released", common::LONG);
    holder.wait_success(common::LONG);
    let held = lock_many(&[&sq, &sp], Some(Duration::from_secs(5))).unwrap();
    assert_eq!(held.len(), 2);
    drop(held);

    // A read-only handle cannot be locked; nothing stays held.
    let ro = Stream::open_readonly(&q).unwrap();
    assert!(matches!(
        lock_many(&[&sp, &ro], None),
        Err(Error::ReadOnly { .. })
    ));
    std::thread::scope(|t| {
        t.spawn(|| assert!(Stream::open(&p).unwrap().lock(Some(Duration::ZERO)).is_ok()));
    });
}

#[test]
fn a_held_lock_after_one_not_held_is_refused_and_a_held_first_one_is_taken_again() {
    let base = unique_name("many-held");
    let (a, b) = (format!("{base}-a"), format!("{base}-b"));
    let _c = Cleanup::new([&a, &b]);
    let sa = Stream::create(&a, &[1], Dtype::U8).unwrap();
    let sb = Stream::create(&b, &[1], Dtype::U8).unwrap();
    {
        // Holding `b`, then asking for `a` too: `a` would be taken after `b`.
        let _held = sb.lock(Some(Duration::from_secs(5))).unwrap();
        let t0 = Instant::now();
        let err = lock_many(&[&sa, &sb], Some(Duration::from_secs(30))).unwrap_err();
        assert!(
            matches!(&err, Error::Unsupported { name, what } if name == &b && what.contains(&a)),
            "{err}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "refused without waiting"
        );
        // Nothing was taken: another thread gets `a` at once.
        std::thread::scope(|t| {
            t.spawn(|| assert!(Stream::open(&a).unwrap().lock(Some(Duration::ZERO)).is_ok()));
        });
    }
    // Holding `a` (first in the order): the set is taken, `a` again.
    let _held = sa.lock(Some(Duration::from_secs(5))).unwrap();
    let both = lock_many(&[&sb, &sa], Some(Duration::from_secs(5))).unwrap();
    assert_eq!(both.names(), vec![a.as_str(), b.as_str()]);
}
