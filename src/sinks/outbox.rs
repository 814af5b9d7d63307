//! The durable outbox: every event is committed to an embedded store (redb) before it is
//! delivered to Redis and PostgreSQL, and removed only once both have it.
//!
//! Durability contract: when `append` returns `Ok`, its entries are on disk (the write transaction
//! was committed with `Durability::Immediate`, which fsyncs), so neither a crash (SIGKILL) nor a
//! power loss loses them. What is pending is replayed oldest first: every entry gets a sequence
//! number that grows in append order and is never reused, even after a restart with everything
//! acknowledged, because the next number is stored with the entries. Delivery is idempotent by
//! event id, so an entry delivered but not yet acknowledged when the process died is simply
//! delivered again.
//!
//! The store is bounded by `max_events`. When it is full:
//! - `Reject`: the new events are refused; the caller counts them as dropped.
//! - `DropOldest`: the oldest undelivered events are discarded to make room, and counted.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

/// Pending entries by sequence number: `seq -> (key, payload)`.
const ENTRIES: TableDefinition<u64, (&str, &[u8])> = TableDefinition::new("entries");
/// Pending entries by key, to skip duplicates: `key -> seq`.
const BY_KEY: TableDefinition<&str, u64> = TableDefinition::new("by_key");
/// Counters that must outlive the entries: `NEXT_SEQ`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
/// redb's page cache: reads are of the oldest pending entries, so a small one is enough.
use crate::overflow::WhenFull;

const CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub path: PathBuf,
    pub max_events: u64,
    pub when_full: WhenFull,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {0}")]
    Store(String),
}

/// Maps a store error to `OutboxError::Store`, naming the operation and the step that failed.
fn store<E: std::fmt::Display>(operation: &'static str, step: &'static str) -> impl FnOnce(E) -> OutboxError {
    move |err| OutboxError::Store(format!("{operation}: {step}: {err}"))
}

/// One stored entry: its sequence number (strictly increasing in append order, never reused) and
/// the bytes appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub key: String,
    pub payload: Vec<u8>,
}

/// What one `append` did. The backlog grows by `appended - dropped_oldest`: with `DropOldest`, an
/// entry of the same call may itself be dropped again when the call holds more than `max_events`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The sequence number of each entry of the call, in its order; `None` where it was skipped
    /// (a duplicate) or refused.
    pub seqs: Vec<Option<u64>>,
    pub appended: usize,
    /// Already pending under the same key: skipped.
    pub duplicates: usize,
    /// Refused because full (`Reject`).
    pub rejected: usize,
    /// Older entries removed to make room (`DropOldest`).
    pub dropped_oldest: usize,
}

pub struct Outbox {
    db: Database,
    config: OutboxConfig,
    /// Held for the whole of each write transaction, so `backlog` is set in commit order.
    writer: Mutex<()>,
    /// Entries pending, as of the last commit.
    backlog: AtomicU64,
    /// The newest entry removed to make room (`DropOldest`) by this process, 0 if none.
    dropped_through: AtomicU64,
}

/// Shared in an `Arc` and called from blocking tasks.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Outbox>()
};

impl Outbox {
    /// Opens or creates the store (creating parent directories). A store left by a killed process
    /// is repaired by redb on open. Fails if another process has the file open.
    pub fn open(config: OutboxConfig) -> Result<Self, OutboxError> {
        if config.max_events == 0 {
            return Err(OutboxError::Store("config: max_events must be at least 1".into()));
        }
        if let Some(dir) = config.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(store("open", "create directory"))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&config.path)
            .map_err(|err| OutboxError::Store(format!("open {}: {err}", config.path.display())))?;
        let outbox =
            Self { db, config, writer: Mutex::new(()), backlog: AtomicU64::new(0), dropped_through: AtomicU64::new(0) };
        // Creates the tables on first use, so readers can rely on them, and counts the backlog.
        outbox.write("open", |txn| {
            txn.open_table(BY_KEY).map_err(store("open", "key table"))?;
            txn.open_table(META).map_err(store("open", "meta table"))?;
            Ok(())
        })?;
        tracing::info!(path = %outbox.config.path.display(), backlog = outbox.backlog(), "outbox opened");
        Ok(outbox)
    }

    /// Appends `(key, payload)` pairs in one write transaction, durable when this returns `Ok`.
    /// A key already pending, also earlier in the same call, is skipped. When full, `Reject`
    /// refuses what does not fit (the earliest of the call fit first) and `DropOldest` removes
    /// the oldest pending entries. An empty slice is a no-op.
    pub fn append(&self, batch: &[(String, Vec<u8>)]) -> Result<AppendOutcome, OutboxError> {
        if batch.is_empty() {
            return Ok(AppendOutcome::default());
        }
        self.write("append", |txn| {
            let mut outcome = AppendOutcome::default();
            let mut entries = txn.open_table(ENTRIES).map_err(store("append", "entries table"))?;
            let mut by_key = txn.open_table(BY_KEY).map_err(store("append", "key table"))?;
            let mut meta = txn.open_table(META).map_err(store("append", "meta table"))?;
            let mut next_seq = match meta.get(NEXT_SEQ).map_err(store("append", "read next seq"))? {
                Some(seq) => seq.value(),
                None => 1,
            };
            let mut dropped_through = 0;
            for (key, payload) in batch {
                if by_key.get(key.as_str()).map_err(store("append", "key lookup"))?.is_some() {
                    outcome.duplicates += 1;
                    outcome.seqs.push(None);
                    continue;
                }
                if entries.len().map_err(store("append", "count"))? >= self.config.max_events {
                    if self.config.when_full != WhenFull::DropOldest {
                        outcome.rejected += 1;
                        outcome.seqs.push(None);
                        continue;
                    }
                    if let Some((seq, oldest)) = entries.pop_first().map_err(store("append", "drop oldest"))? {
                        by_key.remove(oldest.value().0).map_err(store("append", "drop oldest key"))?;
                        outcome.dropped_oldest += 1;
                        dropped_through = seq.value();
                    }
                }
                entries
                    .insert(next_seq, (key.as_str(), payload.as_slice()))
                    .map_err(store("append", "insert entry"))?;
                by_key.insert(key.as_str(), next_seq).map_err(store("append", "insert key"))?;
                outcome.seqs.push(Some(next_seq));
                next_seq += 1;
                outcome.appended += 1;
            }
            meta.insert(NEXT_SEQ, next_seq).map_err(store("append", "write next seq"))?;
            Ok((outcome, dropped_through))
        })
        .map(|(outcome, dropped_through)| {
            self.dropped_through.fetch_max(dropped_through, Ordering::AcqRel);
            outcome
        })
    }

    /// Up to `limit` pending entries with `seq > after`, oldest first (pass 0 for the start), so
    /// the caller can page through without acknowledging.
    pub fn pending(&self, after: u64, limit: usize) -> Result<Vec<Entry>, OutboxError> {
        let txn = self.db.begin_read().map_err(store("pending", "begin"))?;
        let entries = txn.open_table(ENTRIES).map_err(store("pending", "entries table"))?;
        let range = (Bound::Excluded(after), Bound::Unbounded);
        let mut found = Vec::with_capacity(limit.min(1024));
        for item in entries.range::<u64>(range).map_err(store("pending", "range"))?.take(limit) {
            let (seq, value) = item.map_err(store("pending", "read entry"))?;
            let (key, payload) = value.value();
            found.push(Entry { seq: seq.value(), key: key.to_owned(), payload: payload.to_vec() });
        }
        Ok(found)
    }

    /// Removes the given (delivered) entries in one durable transaction; unknown seqs are ignored.
    pub fn ack(&self, seqs: &[u64]) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.write("ack", |txn| {
            let mut entries = txn.open_table(ENTRIES).map_err(store("ack", "entries table"))?;
            let mut by_key = txn.open_table(BY_KEY).map_err(store("ack", "key table"))?;
            for &seq in seqs {
                if let Some(value) = entries.remove(seq).map_err(store("ack", "remove entry"))? {
                    by_key.remove(value.value().0).map_err(store("ack", "remove key"))?;
                }
            }
            Ok(())
        })
    }

    /// Entries pending now (kept in memory, exact after each commit).
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Acquire)
    }

    /// The newest entry this process removed to make room (`DropOldest`), 0 if none. The oldest
    /// go first, so no entry up to it is pending: a copy of one held elsewhere is not to be
    /// delivered.
    pub fn dropped_through(&self) -> u64 {
        self.dropped_through.load(Ordering::Acquire)
    }

    /// Runs `body` in one write transaction whose commit returns only once it is on disk, then
    /// records the backlog it left. Nothing is committed if `body` fails.
    fn write<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&WriteTransaction) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        let _writer = self.writer.lock();
        let mut txn = self.db.begin_write().map_err(store(operation, "begin"))?;
        txn.set_durability(Durability::Immediate).map_err(store(operation, "set durability"))?;
        let result = body(&txn)?;
        let entries = txn.open_table(ENTRIES).map_err(store(operation, "entries table"))?;
        let backlog = entries.len().map_err(store(operation, "count"))?;
        drop(entries);
        txn.commit().map_err(store(operation, "commit"))?;
        self.backlog.store(backlog, Ordering::Release);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::time::{Duration, Instant};

    const CHILD_PATH: &str = "OUTBOX_CRASH_CHILD_PATH";
    const CHILD_START: &str = "OUTBOX_CRASH_CHILD_START";

    fn config(dir: &tempfile::TempDir, max_events: u64, when_full: WhenFull) -> OutboxConfig {
        OutboxConfig { path: dir.path().join("nested/outbox.redb"), max_events, when_full }
    }

    fn batch(keys: &[&str]) -> Vec<(String, Vec<u8>)> {
        keys.iter().map(|key| (key.to_string(), format!("payload {key}").into_bytes())).collect()
    }

    /// The store the crash test and its child share: never full.
    fn open_unbounded(path: PathBuf) -> Outbox {
        Outbox::open(OutboxConfig { path, max_events: u64::MAX, when_full: WhenFull::Reject }).unwrap()
    }

    fn all_pending(outbox: &Outbox) -> Vec<Entry> {
        outbox.pending(0, usize::MAX).unwrap()
    }

    fn keys(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|entry| entry.key.as_str()).collect()
    }

    #[test]
    fn zero_max_events_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Outbox::open(config(&dir, 0, WhenFull::Reject)).err().unwrap();
        assert!(err.to_string().contains("max_events must be at least 1"), "{err}");
    }

    #[test]
    fn append_pending_ack_and_seqs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(config(&dir, 100, WhenFull::Reject)).unwrap();
        assert_eq!(outbox.append(&[]).unwrap(), AppendOutcome::default());
        assert_eq!(outbox.append(&batch(&["a", "b", "c"])).unwrap().appended, 3);
        let pending = all_pending(&outbox);
        assert_eq!(keys(&pending), ["a", "b", "c"]);
        assert_eq!(pending[0].payload, b"payload a");
        assert!(pending.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        assert_eq!(outbox.backlog(), 3);
        assert_eq!(keys(&outbox.pending(pending[0].seq, 1).unwrap()), ["b"]);

        outbox.ack(&[pending[0].seq, pending[1].seq, 999]).unwrap();
        assert_eq!(keys(&all_pending(&outbox)), ["c"]);
        assert_eq!(outbox.backlog(), 1);
        outbox.ack(&[pending[2].seq]).unwrap();
        assert_eq!(outbox.backlog(), 0);
        drop(outbox);

        let outbox = Outbox::open(config(&dir, 100, WhenFull::Reject)).unwrap();
        assert_eq!(outbox.backlog(), 0);
        outbox.append(&batch(&["d"])).unwrap();
        assert!(all_pending(&outbox)[0].seq > pending[2].seq, "seqs must never be reused");
    }

    #[test]
    fn duplicates_are_skipped_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(config(&dir, 100, WhenFull::Reject)).unwrap();
        let outcome = outbox.append(&batch(&["a", "b", "a"])).unwrap();
        assert_eq!((outcome.appended, outcome.duplicates), (2, 1));
        assert_eq!(outcome.seqs, [Some(1), Some(2), None]);
        let outcome = outbox.append(&batch(&["b", "c"])).unwrap();
        assert_eq!((outcome.appended, outcome.duplicates), (1, 1));
        assert_eq!(keys(&all_pending(&outbox)), ["a", "b", "c"]);

        outbox.ack(&[all_pending(&outbox)[0].seq]).unwrap();
        let outcome = outbox.append(&batch(&["a"])).unwrap();
        assert_eq!((outcome.appended, outcome.duplicates), (1, 0));
        assert_eq!(keys(&all_pending(&outbox)), ["b", "c", "a"]);
        assert_eq!(outbox.backlog(), 3);
    }

    #[test]
    fn reject_keeps_the_earliest_that_fit() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(config(&dir, 3, WhenFull::Reject)).unwrap();
        let outcome = outbox.append(&batch(&["1", "2", "3", "4", "5"])).unwrap();
        let seqs = vec![Some(1), Some(2), Some(3), None, None];
        let expected = AppendOutcome { seqs, appended: 3, rejected: 2, ..Default::default() };
        assert_eq!(outcome, expected);
        assert_eq!(outbox.dropped_through(), 0);
        assert_eq!(keys(&all_pending(&outbox)), ["1", "2", "3"]);
        assert_eq!(outbox.backlog(), 3);
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(config(&dir, 3, WhenFull::DropOldest)).unwrap();
        let outcome = outbox.append(&batch(&["1", "2", "3", "4", "5"])).unwrap();
        let seqs = (1..=5).map(Some).collect();
        let expected = AppendOutcome { seqs, appended: 5, dropped_oldest: 2, ..Default::default() };
        assert_eq!(outcome, expected);
        assert_eq!(keys(&all_pending(&outbox)), ["3", "4", "5"]);
        assert_eq!(outbox.dropped_through(), 2);

        let outcome = outbox.append(&batch(&["6", "7"])).unwrap();
        let expected =
            AppendOutcome { seqs: vec![Some(6), Some(7)], appended: 2, dropped_oldest: 2, ..Default::default() };
        assert_eq!(outcome, expected);
        assert_eq!(keys(&all_pending(&outbox)), ["5", "6", "7"]);
        assert_eq!(outbox.dropped_through(), 4);
        assert_eq!(outbox.backlog(), 3);
        // A dropped key is no longer pending, so it may come back.
        assert_eq!(outbox.append(&batch(&["3"])).unwrap().duplicates, 0);
    }

    #[test]
    fn reopen_keeps_pending_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(config(&dir, 100, WhenFull::Reject)).unwrap();
        outbox.append(&batch(&["a", "b"])).unwrap();
        outbox.append(&batch(&["c"])).unwrap();
        let before = all_pending(&outbox);
        let err = Outbox::open(config(&dir, 100, WhenFull::Reject)).err().unwrap();
        assert!(err.to_string().contains("already open"), "the file is locked while open: {err}");
        drop(outbox);

        let outbox = Outbox::open(config(&dir, 100, WhenFull::Reject)).unwrap();
        assert_eq!(all_pending(&outbox), before);
        assert_eq!(outbox.backlog(), 3);
        assert_eq!(outbox.append(&batch(&["b"])).unwrap().duplicates, 1);
    }

    /// Runs only as the child of `committed_batches_survive_sigkill`: appends numbered entries in
    /// small batches forever and reports each committed batch's last number on stdout.
    #[test]
    #[ignore = "child process of committed_batches_survive_sigkill"]
    fn crash_child() {
        let Ok(path) = std::env::var(CHILD_PATH) else { return };
        let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
        let outbox = open_unbounded(path.into());
        let mut stdout = std::io::stdout();
        let mut next = start;
        for size in (1..=4).cycle() {
            let numbers = next..next + size;
            next += size;
            let entries: Vec<_> = numbers.clone().map(|n| (format!("{n}"), vec![7; 300])).collect();
            assert_eq!(outbox.append(&entries).unwrap().appended, entries.len());
            writeln!(stdout, "committed {}", numbers.end - 1).unwrap();
            stdout.flush().unwrap();
        }
    }

    #[test]
    fn committed_batches_survive_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.redb");
        let child_test = format!("{}::crash_child", module_path!().split_once("::").unwrap().1);
        let mut committed: Vec<(u64, u64)> = Vec::new(); // (first number, last reported) per run
        for run in 0..20u64 {
            let start = run * 1_000_000;
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([child_test.as_str(), "--exact", "--ignored", "--nocapture"])
                .env(CHILD_PATH, &path)
                .env(CHILD_START, start.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(n) = line.strip_prefix("committed ") {
                        let _ = tx.send(n.parse::<u64>().unwrap());
                    }
                }
            });
            let first = rx.recv_timeout(Duration::from_secs(20)).expect("child committed nothing");
            // Kill it 0 to 59 ms after its first commit, somewhere in the middle of a batch.
            let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            std::thread::sleep(Duration::from_millis(u64::from(clock.subsec_nanos()) % 60));
            child.kill().unwrap();
            child.wait().unwrap();
            reader.join().unwrap();
            let last = rx.try_iter().fold(first, u64::max);
            committed.push((start, last));

            let outbox = open_unbounded(path.clone());
            let pending = all_pending(&outbox);
            assert_eq!(outbox.backlog(), pending.len() as u64);
            assert!(pending.windows(2).all(|pair| pair[0].seq < pair[1].seq));
            let numbers: Vec<u64> = pending.iter().map(|entry| entry.key.parse().unwrap()).collect();
            assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]), "replay out of append order");
            for &(start, last) in &committed {
                let kept = numbers.iter().filter(|&&n| (start..=last).contains(&n)).count() as u64;
                assert_eq!(kept, last - start + 1, "run from {start}: committed up to {last} lost");
            }
        }
    }

    /// Not asserted: prints how long a durable append takes (`cargo test -- --nocapture`).
    #[test]
    fn append_timing() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(config(&dir, u64::MAX, WhenFull::Reject)).unwrap();
        for size in [1usize, 64] {
            let rounds = 50;
            let started = Instant::now();
            for round in 0..rounds {
                let entries: Vec<_> = (0..size).map(|i| (format!("{size}-{round}-{i}"), vec![b'x'; 300])).collect();
                assert_eq!(outbox.append(&entries).unwrap().appended, size);
            }
            println!("append of {size} x 300 B: {:?} per call", started.elapsed() / rounds);
        }
    }
}
