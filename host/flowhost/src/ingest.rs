//! `flowhost ingest FILE|-`: stream NDJSON into intake, in batches, durably.

use anyhow::{Context, Result};
use flowhost_server::{IntakeSummary, LineIntake, LineOutcome};
use flowhost_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal};
use std::path::Path;

/// Records per intake transaction.
pub const BATCH: usize = 2_000;

/// Reads one line of at most `limit` bytes into `buf` (without the newline). Returns the
/// line's full length, or `None` at the end of input. A longer line is consumed whole but
/// only its first `limit` bytes are kept.
fn read_line_limited(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some(total));
        }
        any = true;
        let (line_part, found) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i)),
            None => (chunk, None),
        };
        let room = (limit + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&line_part[..line_part.len().min(room)]);
        total += line_part.len();
        match found {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(Some(total));
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// Streams `input` into the store. Refused lines are reported to stderr as
/// `line L: <what is wrong>`; good lines are kept.
pub async fn ingest(
    store: &Store,
    input: &Path,
    known: &BTreeSet<String>,
    max_line: usize,
    limits: &flowhost_core::intake::IntakeLimits,
    progress: bool,
    batch_size: usize,
) -> Result<IntakeSummary> {
    let (reader, size): (Box<dyn BufRead + Send>, Option<u64>) = if input == Path::new("-") {
        (
            Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())),
            None,
        )
    } else {
        let file = std::fs::File::open(input)
            .with_context(|| format!("cannot open {}", input.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (
            Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
            size,
        )
    };
    let bar = progress_bar(progress && std::io::stderr().is_terminal(), size);
    let mut reader = reader;
    let mut intake =
        LineIntake::new(store, known.clone(), max_line, batch_size).with_limits(*limits);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut bytes = 0u64;
    loop {
        let read = read_line_limited(&mut reader, &mut line, max_line)
            .with_context(|| format!("cannot read {} after line {line_no}", input.display()))?;
        let Some(len) = read else { break };
        line_no += 1;
        bytes += len as u64 + 1;
        if let LineOutcome::Refused(e) = intake.line(&line, len) {
            bar.suspend(|| eprintln!("line {line_no}: {e}"));
        }
        if intake.full() {
            let refused = intake
                .flush()
                .await
                .with_context(|| stopped_at(line_no, &intake.summary))?;
            for (line, e) in refused {
                bar.suspend(|| eprintln!("line {line}: {e}"));
            }
            bar.set_position(bytes);
        }
    }
    let refused = intake
        .flush()
        .await
        .with_context(|| stopped_at(line_no, &intake.summary))?;
    for (line, e) in refused {
        eprintln!("line {line}: {e}");
    }
    bar.finish_and_clear();
    Ok(intake.summary)
}

/// Says how far an interrupted intake got: every batch before the failing one is durable.
fn stopped_at(line: u64, summary: &IntakeSummary) -> String {
    format!(
        "storing the batch that ends at line {line} failed; the {} records accepted before it \
         ({} duplicates, {} refused) are durable, and re-sending the file is safe",
        summary.accepted, summary.duplicates, summary.refused
    )
}

fn progress_bar(enabled: bool, size: Option<u64>) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    match size {
        Some(size) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template(
                "{spinner} ingest [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_consumed_whole_and_cut() {
        let input = b"short\nxxxxxxxxxx\nlast";
        let mut r = std::io::BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_limited(&mut r, &mut buf, 6).unwrap(), Some(5));
        assert_eq!(buf, b"short");
        assert_eq!(read_line_limited(&mut r, &mut buf, 6).unwrap(), Some(10));
        assert_eq!(buf.len(), 7, "kept up to the limit plus one");
        assert_eq!(read_line_limited(&mut r, &mut buf, 6).unwrap(), Some(4));
        assert_eq!(buf, b"last");
        assert_eq!(read_line_limited(&mut r, &mut buf, 6).unwrap(), None);
    }
}
