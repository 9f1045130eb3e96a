//! Group commit: with `sync=always`, concurrent durable writers share fdatasyncs.
//!
//! The fsyncs are counted through the fault seam. Timing cannot force writers to overlap on a
//! loaded machine, so the test makes them overlap: every fsync under the data directory is
//! held (`fault::hold`) while a round of N writers runs, until one writer is inside its fsync
//! and all N records are appended to the engine's buffer (seen in `Stats::bytes_written`).
//! Then the fsync goes on. A correct group commit now needs at most one more fsync for the
//! whole round (the next leader writes out every buffered record and syncs once), and at
//! least one (every acknowledged write is durable). So over R rounds of N writers, whatever
//! the scheduling: `R <= fsyncs <= 2R` while writes = N * R. An fsync per write gives N * R.

mod claims_support;

use std::sync::{Arc, Barrier};

use bytes::Bytes;
use claims_support::{ENGINES, options, value, wait_until};
use hoardhaven::engine::fault::{self, Op, Plan};
use hoardhaven::engine::{PutOptions, SyncPolicy};

const WRITERS: usize = 8;
const ROUNDS: u64 = 20;

fn key(t: usize, r: u64) -> Vec<u8> {
    format!("w{t:02}-r{r:04}").into_bytes()
}

#[test]
fn concurrent_durable_writers_share_fsyncs() {
    for kind in ENGINES {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        // Big files: no rotation (its fsync runs under the writer lock) during the rounds.
        let mut opts = options(kind, &dir, SyncPolicy::Always);
        opts.bitcask.max_file_size = 256 << 20;
        let e = hoardhaven::engine::open(&opts).expect("open");
        // One write first: it preallocates bitcask's active file (an fsync of its own) and
        // gives the size one record adds to `bytes_written`.
        let b0 = e.stats().expect("stats").bytes_written;
        e.put(
            &key(99, 0),
            Bytes::from(value(&key(99, 0), 0, 40)),
            PutOptions::default(),
        )
        .expect("first put");
        let rec = e.stats().expect("stats").bytes_written - b0;
        assert!(rec > 0, "{kind}: a put adds to bytes_written");

        let syncs = fault::arm(Plan::count(&dir, &[Op::Sync]));
        let hold = fault::hold(&dir, Op::Sync);
        let start = Arc::new(Barrier::new(WRITERS + 1));
        let end = Arc::new(Barrier::new(WRITERS + 1));
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (e, start, end) = (e.clone(), start.clone(), end.clone());
                std::thread::spawn(move || {
                    for r in 0..ROUNDS {
                        start.wait();
                        let k = key(t, r);
                        // Sequence 100.. so every record has the size measured above.
                        e.put(
                            &k,
                            Bytes::from(value(&k, 100 + r, 40)),
                            PutOptions::default(),
                        )
                        .expect("durable put");
                        end.wait();
                    }
                })
            })
            .collect();
        for r in 0..ROUNDS {
            hold.close();
            let before = e.stats().expect("stats").bytes_written;
            start.wait();
            // A leader is inside its fdatasync...
            hold.wait_blocked(1);
            // ...and every writer of the round has appended its record.
            wait_until(&format!("{kind}: round {r}: all records appended"), || {
                e.stats().expect("stats").bytes_written >= before + WRITERS as u64 * rec
            });
            hold.open();
            end.wait();
        }
        for w in writers {
            w.join().expect("writer");
        }
        let n = syncs.calls();
        let writes = WRITERS as u64 * ROUNDS;
        eprintln!("{kind}: {writes} durable writes, {n} fdatasyncs");
        assert!(
            (ROUNDS..=2 * ROUNDS).contains(&n),
            "{kind}: {writes} writes in {ROUNDS} rounds of {WRITERS} took {n} fsyncs; \
             group commit needs between {ROUNDS} and {}",
            2 * ROUNDS
        );
        drop(hold);
        drop(syncs);
        for t in 0..WRITERS {
            for r in 0..ROUNDS {
                assert!(e.get(&key(t, r)).expect("get").is_some(), "{kind}: lost");
            }
        }
        e.close().expect("close");
    }
}
