//! Intake of NDJSON lines, shared by every way records come in (`flowhost ingest`,
//! `POST /v1/records`): [`Lines`] cuts a byte stream into lines of bounded length, and
//! [`LineIntake`] checks each line on its own (a bad line is refused with its number and
//! reason, never the whole input) and appends the good ones in batches of one transaction.

use flowhost_core::intake::{IntakeLimits, IntakeRecord, LineError, parse_line_within};
use flowhost_store::{Advance, Appended, Store, StoreError};
use std::collections::BTreeSet;

/// Good lines per append (one transaction).
pub const BATCH: usize = 2_000;

/// Cuts a stream of bytes, arriving in chunks of any size, into lines. Of each line at
/// most `max_line + 1` bytes are kept (enough to refuse it by its length); its full length
/// is counted, so an over-long line costs no memory.
pub struct Lines {
    current: Vec<u8>,
    len: usize,
    max_line: usize,
    /// The last line returned is complete: the next call starts a new one.
    complete: bool,
}

impl Lines {
    pub fn new(max_line: usize) -> Self {
        Self {
            current: Vec::new(),
            len: 0,
            max_line,
            complete: false,
        }
    }

    /// Takes bytes from `rest` up to the end of the next line: returns that line (without
    /// its newline) and its full length, or `None` once `rest` is used up with the line
    /// still open (the next chunk continues it).
    pub fn next_line(&mut self, rest: &mut &[u8]) -> Option<(&[u8], usize)> {
        if self.complete {
            self.current.clear();
            self.len = 0;
            self.complete = false;
        }
        let (part, found) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], Some(i)),
            None => (*rest, None),
        };
        let room = (self.max_line + 1).saturating_sub(self.current.len());
        self.current
            .extend_from_slice(&part[..part.len().min(room)]);
        self.len += part.len();
        match found {
            Some(i) => {
                *rest = &rest[i + 1..];
                self.complete = true;
                Some((&self.current, self.len))
            }
            None => {
                *rest = &[];
                None
            }
        }
    }

    /// The last line, when the input ended without a newline after it.
    pub fn finish(&mut self) -> Option<(&[u8], usize)> {
        if self.complete || self.len == 0 {
            return None;
        }
        self.complete = true;
        Some((&self.current, self.len))
    }
}

/// Counts of one intake.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IntakeSummary {
    pub accepted: u64,
    pub duplicates: u64,
    pub refused: u64,
}

/// What became of one line.
#[derive(Debug)]
pub enum LineOutcome {
    /// Blank: not a record.
    Skipped,
    /// Parsed and waiting in the batch.
    Batched,
    Refused(LineError),
}

/// Lines into batches into the store.
pub struct LineIntake<'a> {
    store: &'a Store,
    known: BTreeSet<String>,
    known_list: String,
    max_line: usize,
    limits: IntakeLimits,
    batch_size: usize,
    batch: Vec<IntakeRecord>,
    /// The line number of each record of the batch.
    batch_lines: Vec<u64>,
    /// Lines taken so far (the number of the last one).
    lines: u64,
    /// When set, batches go through the group committer instead of their own transaction.
    group: Option<crate::group::GroupAppender>,
    /// The batch being appended while the next one is parsed ([`LineIntake::flush_behind`]),
    /// with the line number of each of its records.
    in_flight: Option<InFlight>,
    /// The last line of the batch most recently handed to the store.
    handed_until: u64,
    pub summary: IntakeSummary,
}

/// An append running on a task of its own.
struct InFlight {
    append: tokio::task::JoinHandle<Result<Vec<Appended>, StoreError>>,
    lines: Vec<u64>,
}

impl<'a> LineIntake<'a> {
    /// Intake into `store` of records of the `known` models, refusing lines longer than
    /// `max_line` bytes, appending every `batch_size` good lines.
    pub fn new(
        store: &'a Store,
        known: BTreeSet<String>,
        max_line: usize,
        batch_size: usize,
    ) -> Self {
        let known_list = if known.is_empty() {
            "none".to_string()
        } else {
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        let batch_size = batch_size.max(1);
        Self {
            store,
            known,
            known_list,
            max_line,
            limits: IntakeLimits::default(),
            batch_size,
            batch: Vec::with_capacity(batch_size.min(4_096)),
            batch_lines: Vec::with_capacity(batch_size.min(4_096)),
            lines: 0,
            group: None,
            in_flight: None,
            handed_until: 0,
            summary: IntakeSummary::default(),
        }
    }

    /// The same intake, appending through a group committer shared with other callers.
    pub fn grouped(self, group: crate::group::GroupAppender) -> Self {
        Self {
            group: Some(group),
            ..self
        }
    }

    /// The same intake under other record limits.
    pub fn with_limits(self, limits: IntakeLimits) -> Self {
        Self { limits, ..self }
    }

    /// Takes the next line (without its newline; a trailing `\r` is dropped): lines are
    /// numbered from 1 in the order they are taken. `len` is the line's full length when
    /// only its first bytes were kept (see `max_line`).
    pub fn line(&mut self, line: &[u8], len: usize) -> LineOutcome {
        self.lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Editors on some systems start a text file with a byte order mark: not data.
        let line = match self.lines {
            1 => line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line),
            _ => line,
        };
        if len > self.max_line {
            self.summary.refused += 1;
            return LineOutcome::Refused(LineError::TooLong(len, self.max_line));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return LineOutcome::Skipped;
        }
        let parsed = parse_line_within(line, chrono::Utc::now(), &self.limits).and_then(|r| {
            if self.known.contains(&r.model) {
                Ok(r)
            } else {
                Err(LineError::UnknownModel {
                    model: r.model,
                    known: self.known_list.clone(),
                })
            }
        });
        match parsed {
            Ok(r) => {
                self.batch.push(r);
                self.batch_lines.push(self.lines);
                LineOutcome::Batched
            }
            Err(e) => {
                self.summary.refused += 1;
                LineOutcome::Refused(e)
            }
        }
    }

    /// Whether the batch is full and should be flushed before more lines.
    pub fn full(&self) -> bool {
        self.batch.len() >= self.batch_size
    }

    /// Appends the batch (one transaction); when this returns, its records (and those of a
    /// batch still in flight from [`LineIntake::flush_behind`]) are durable. Returns the
    /// lines whose record the database refused (line number, reason); they are counted as
    /// refused.
    pub async fn flush(&mut self) -> Result<Vec<(u64, String)>, StoreError> {
        if self.batch.is_empty() {
            return self.land().await;
        }
        self.flush_at(None).await
    }

    /// Starts appending the batch (one transaction) on a task of its own, so that the caller
    /// parses the next lines meanwhile (parsing off the writer's path). At most one batch is
    /// in flight: the one before is awaited first, so batches commit in the order they were
    /// read. Returns the refused lines of that earlier batch; an error is that earlier
    /// batch's, and nothing after it was appended. [`LineIntake::flush`] lands the last one.
    pub async fn flush_behind(&mut self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut refused = self.land().await?;
        if self.batch.is_empty() {
            return Ok(refused);
        }
        if self.group.is_some() {
            // The group committer already appends beside its callers.
            refused.extend(self.flush_at(None).await?);
            return Ok(refused);
        }
        let batch = std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(self.batch_size.min(4_096)),
        );
        let store = self.store.clone();
        self.handed_until = self.batch_lines.last().copied().unwrap_or(self.lines);
        self.in_flight = Some(InFlight {
            append: tokio::spawn(async move { store.append(&batch).await }),
            lines: std::mem::take(&mut self.batch_lines),
        });
        Ok(refused)
    }

    /// Waits for the batch in flight, if any, and counts its answers.
    async fn land(&mut self) -> Result<Vec<(u64, String)>, StoreError> {
        let Some(InFlight { append, lines }) = self.in_flight.take() else {
            return Ok(Vec::new());
        };
        let answers = match append.await {
            Ok(answers) => answers?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime shuts down under it: the transaction was rolled back.
            Err(e) => {
                return Err(StoreError::Query {
                    operation: "append intake",
                    model: "*".into(),
                    source: sqlx::Error::Io(std::io::Error::other(e.to_string())),
                });
            }
        };
        Ok(self.count(&answers, &lines))
    }

    /// Counts a batch's answers; returns the lines whose record the database refused.
    fn count(&mut self, answers: &[Appended], lines: &[u64]) -> Vec<(u64, String)> {
        let mut refused = Vec::new();
        for (answer, &line) in answers.iter().zip(lines) {
            match answer {
                Appended::Accepted(_) => self.summary.accepted += 1,
                Appended::Duplicate => self.summary.duplicates += 1,
                Appended::Refused(why) => {
                    self.summary.refused += 1;
                    refused.push((line, format!("the database refused this record: {why}")));
                }
            }
        }
        refused
    }

    /// [`LineIntake::flush`], moving a position in the same transaction (see
    /// [`Store::append_at`]); with a position it runs even when the batch is empty, and
    /// never through the group committer.
    pub async fn flush_at(
        &mut self,
        advance: Option<&Advance>,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut refused = self.land().await?;
        self.handed_until = self.batch_lines.last().copied().unwrap_or(self.lines);
        let answers = match (&self.group, advance) {
            (Some(group), None) => {
                let batch = std::mem::replace(
                    &mut self.batch,
                    Vec::with_capacity(self.batch_size.min(4_096)),
                );
                group.append(batch).await?
            }
            _ => self.store.append_at(&self.batch, advance).await?,
        };
        let lines = std::mem::take(&mut self.batch_lines);
        refused.extend(self.count(&answers, &lines));
        self.batch_lines = lines;
        self.batch.clear();
        self.batch_lines.clear();
        Ok(refused)
    }

    /// The last line of the batch most recently handed to the store: after a failed
    /// flush, where the batch that failed ends (every batch before it is durable).
    pub fn handed_until(&self) -> u64 {
        self.handed_until
    }

    /// Records waiting in the batch.
    pub fn batched(&self) -> usize {
        self.batch.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    /// Every line of `input` fed in chunks of `size`: (kept bytes, full length).
    fn split(input: &[u8], size: usize, max_line: usize) -> Vec<(Vec<u8>, usize)> {
        let mut lines = Lines::new(max_line);
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            let mut rest = chunk;
            while let Some((line, len)) = lines.next_line(&mut rest) {
                out.push((line.to_vec(), len));
            }
        }
        if let Some((line, len)) = lines.finish() {
            out.push((line.to_vec(), len));
        }
        out
    }

    fn device(id: &str, serial: &str) -> Vec<u8> {
        format!(
            r#"{{"model":"device","source":{{"system":"bms","adapter":"a"}},"id":"{id}","occurred_at":"2026-03-01T10:00:00Z","payload":{{"serial":"{serial}"}}}}"#
        )
        .into_bytes()
    }

    /// Batches appended behind the reader (`flush_behind`) commit in the order their lines
    /// were read, and every line is counted once: accepted, duplicate or refused.
    #[tokio::test]
    async fn batches_appended_behind_the_reader_keep_line_order_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = flowhost_store::Store::open(&url).await.unwrap();
        let known = std::collections::BTreeSet::from(["device".to_string()]);
        let mut intake = super::LineIntake::new(&store, known, 1 << 20, 3);
        let mut lines: Vec<Vec<u8>> = (0..10)
            .map(|i| device(&format!("D-{i}"), &format!("s{i}")))
            .collect();
        lines.insert(4, device("D-1", "s1")); // a duplicate of line 2
        lines.insert(7, b"{not json".to_vec()); // refused
        for line in &lines {
            intake.line(line, line.len());
            if intake.full() {
                intake.flush_behind().await.unwrap();
            }
        }
        intake.flush().await.unwrap();
        assert_eq!(
            (
                intake.summary.accepted,
                intake.summary.duplicates,
                intake.summary.refused
            ),
            (10, 1, 1)
        );
        assert_eq!(intake.handed_until(), lines.len() as u64);
        let pending = store.pending("device", 100).await.unwrap();
        let ids: Vec<&str> = pending
            .iter()
            .map(|p| p.record.external_id.as_str())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("D-{i}")).collect();
        assert_eq!(ids, expected, "intake order is line order");
        store.close().await;
    }

    #[test]
    fn lines_across_chunks_long_lines_cut_and_a_last_line_without_newline() {
        let input = b"short\nxxxxxxxxxx\n\nlast";
        for size in [1, 3, 4, 100] {
            let got = split(input, size, 6);
            assert_eq!(got.len(), 4, "chunks of {size}");
            assert_eq!(got[0], (b"short".to_vec(), 5));
            assert_eq!(
                got[1],
                (b"xxxxxxx".to_vec(), 10),
                "kept up to the limit plus one"
            );
            assert_eq!(got[2], (Vec::new(), 0), "a blank line is a line");
            assert_eq!(got[3], (b"last".to_vec(), 4));
        }
        assert!(split(b"a\n", 1, 6).len() == 1, "no phantom last line");
        assert!(split(b"", 1, 6).is_empty());
    }
}
