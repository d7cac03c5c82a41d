//! `flowhost ingest FILE|-`: stream NDJSON into intake, in batches, durably.

use anyhow::{Context, Result};
use flowhost_edges::intake::{IntakeSummary, LineIntake, LineOutcome, Lines};
use flowhost_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal};
use std::path::Path;

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
    let mut lines = Lines::new(max_line);
    let mut line_no = 0u64;
    let mut bytes = 0u64;
    loop {
        let chunk = reader
            .fill_buf()
            .with_context(|| format!("cannot read {} after line {line_no}", input.display()))?;
        if chunk.is_empty() {
            break;
        }
        let read = chunk.len();
        let mut rest = chunk;
        while let Some((line, len)) = lines.next_line(&mut rest) {
            line_no += 1;
            if let LineOutcome::Refused(e) = intake.line(line, len) {
                bar.suspend(|| eprintln!("line {line_no}: {e}"));
            }
            if intake.full() {
                // The batch is appended while the next lines are read and checked.
                let refused = intake
                    .flush_behind()
                    .await
                    .with_context(|| stopped_at(intake.handed_until(), &intake.summary))?;
                for (line, e) in refused {
                    bar.suspend(|| eprintln!("line {line}: {e}"));
                }
            }
        }
        reader.consume(read);
        bytes += read as u64;
        bar.set_position(bytes);
    }
    if let Some((line, len)) = lines.finish() {
        line_no += 1;
        if let LineOutcome::Refused(e) = intake.line(line, len) {
            bar.suspend(|| eprintln!("line {line_no}: {e}"));
        }
    }
    let refused = intake
        .flush()
        .await
        .with_context(|| stopped_at(intake.handed_until(), &intake.summary))?;
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
