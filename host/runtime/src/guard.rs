//! What keeps a guest inside its bounds while a call runs: the memory cap over the whole
//! instance ([`Hoard`]), the log budget ([`LogBudget`]) and the guest's stderr, of which
//! only the tail is kept ([`TailPipe`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The most table elements one instance may hold, over all its tables.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// The most core instances, tables and memories one component instance may create.
pub(crate) const MAX_INSTANCES: usize = 64;
pub(crate) const MAX_TABLES: usize = 64;
pub(crate) const MAX_MEMORIES: usize = 16;
/// What one table element is counted as against the memory cap.
const TABLE_ELEMENT_BYTES: usize = 8;

/// The memory cap over a whole component instance: every linear memory and table it creates
/// or grows counts against one budget, so several memories or a huge table cannot get past
/// it. A refused growth makes `memory.grow` fail (a guest may handle that); instantiation
/// with more than the cap fails at once. The first refusal is kept, to name in the error.
pub struct Hoard {
    cap: usize,
    used: usize,
    table_elements: usize,
    refused: Option<String>,
}

impl Hoard {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            used: 0,
            table_elements: 0,
            refused: None,
        }
    }

    /// Why growth was refused, if it was.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    fn grow(&mut self, add: usize, what: &str) -> bool {
        let total = self.used.saturating_add(add);
        if total > self.cap {
            self.refused.get_or_insert_with(|| {
                format!(
                    "the plugin hit its memory cap of {} MiB ({what} would bring the instance to {} MiB)",
                    self.cap >> 20,
                    total.div_ceil(1 << 20)
                )
            });
            return false;
        }
        self.used = total;
        true
    }
}

impl wasmtime::ResourceLimiter for Hoard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current), "a memory growing"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let add = desired.saturating_sub(current);
        if self.table_elements.saturating_add(add) > MAX_TABLE_ELEMENTS {
            self.refused.get_or_insert_with(|| {
                format!(
                    "the plugin's tables would hold {} elements, over the limit of {MAX_TABLE_ELEMENTS}",
                    self.table_elements.saturating_add(add)
                )
            });
            return Ok(false);
        }
        if !self.grow(add.saturating_mul(TABLE_ELEMENT_BYTES), "a table growing") {
            return Ok(false);
        }
        self.table_elements += add;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Log lines one call may write; beyond them lines are dropped and counted.
pub const MAX_LOG_LINES: u32 = 100;
/// Log bytes one call may write.
pub const MAX_LOG_BYTES: usize = 64 << 10;
/// The longest log line; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// The per-call log budget: lines and bytes; what is over it is dropped and counted, and the
/// call ends with one line saying how many were dropped.
#[derive(Debug, Default)]
pub struct LogBudget {
    lines: u32,
    bytes: usize,
    dropped: u32,
}

impl LogBudget {
    /// The line to log (cut and escaped), or `None` when the budget is spent.
    pub fn admit(&mut self, message: &str) -> Option<String> {
        if self.lines >= MAX_LOG_LINES || self.bytes >= MAX_LOG_BYTES {
            self.dropped += 1;
            return None;
        }
        let line = escape(cut(message, MAX_LOG_LINE));
        self.lines += 1;
        self.bytes += line.len();
        Some(line)
    }

    /// Lines dropped over the budget during this call.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Guest text as one log line that cannot pass for another: control characters (newlines
/// included) and the Unicode characters that reorder or break lines are escaped.
pub fn escape(text: &str) -> String {
    let forging = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(forging) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if forging(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A guest output stream that accepts everything and keeps only its last `cap` bytes, so
/// a chatty guest neither fails (a full pipe would make its writes fail) nor hoards.
#[derive(Clone)]
pub struct TailPipe {
    cap: usize,
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl TailPipe {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            buffer: Arc::new(Mutex::new(VecDeque::with_capacity(cap))),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let over = (buffer.len() + bytes.len()).saturating_sub(self.cap);
        buffer.drain(..over);
        buffer.extend(bytes);
    }

    /// The kept bytes, as text.
    pub fn contents(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = buffer.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for TailPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_cap_covers_every_memory_and_table_together() {
        let mut hoard = Hoard::new(10 << 20);
        assert!(hoard.memory_growing(0, 6 << 20, None).unwrap());
        // A second memory of 6 MiB would bring the instance to 12 MiB.
        assert!(!hoard.memory_growing(0, 6 << 20, None).unwrap());
        assert!(hoard.refused().unwrap().contains("memory cap of 10 MiB"));
        // Tables count too.
        assert!(!hoard.table_growing(0, 600_000, None).unwrap());
        let mut tables = Hoard::new(512 << 20);
        assert!(
            !tables
                .table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
        assert!(tables.refused().unwrap().contains("elements"));
    }

    #[test]
    fn logs_are_escaped_and_bounded() {
        assert_eq!(escape("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escape("plain"), "plain");
        let mut budget = LogBudget::default();
        for i in 0..(MAX_LOG_LINES + 50) {
            let admitted = budget.admit(&format!("line {i}"));
            assert_eq!(admitted.is_some(), i < MAX_LOG_LINES);
        }
        assert_eq!(budget.dropped(), 50);
    }

    #[test]
    fn the_stderr_pipe_keeps_its_tail() {
        let pipe = TailPipe::new(8);
        pipe.push(b"0123456789");
        pipe.push(b"ab");
        assert_eq!(pipe.contents(), "456789ab");
    }
}
