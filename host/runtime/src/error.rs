//! Errors of loading and calling plugins, worded for the operator who has to fix them.

use std::fmt;

/// What is wrong with a plugin file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error("not a WebAssembly component (the file does not start with the `\\0asm` header)")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component — build the plugin for the wasm32-wasip2 target"
    )]
    CoreModule,
    #[error("does not compile: {0}")]
    Compile(String),
    #[error(
        "needs more than one plugin instance may have (at most {elements} table elements, {memories} memories, {tables} tables and {instances} core instances): {0}",
        elements = crate::guard::MAX_TABLE_ELEMENTS,
        memories = crate::guard::MAX_MEMORIES,
        tables = crate::guard::MAX_TABLES,
        instances = crate::guard::MAX_INSTANCES
    )]
    TooBig(String),
    #[error(
        "compiling took longer than its limit of {} s (plugins.compile_timeout_s); the component is too large or too complex",
        .0.as_secs_f64()
    )]
    CompileTimeout(std::time::Duration),
    #[error("does not target world flowhost:plugin/plugin@0.1.0: {0}")]
    WrongWorld(String),
    #[error("`describe` failed: {0}")]
    Describe(CallError),
    #[error("`describe` returned an invalid description: {0}")]
    InvalidDescription(String),
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// A load error with the file it concerns: `plugins/device.wasm: <what is wrong>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PluginError {
    pub file: String,
    pub error: LoadError,
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.error)
    }
}

/// Why one plugin call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("exceeded its time limit of {} ms (the call was stopped wherever the guest was, blocking calls included)", .0.as_millis())]
    Timeout(std::time::Duration),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("`{function}` returned {got} results for {expected} inputs")]
    WrongLength {
        function: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("returned an invalid result: {0}")]
    Invalid(String),
    /// A well-formed result the store cannot take: a key longer than the key index allows.
    /// It is about the record's data, not a fault of the plugin.
    #[error("{0}")]
    KeyTooLong(String),
}

impl CallError {
    /// Whether the error is the plugin's fault (counts for its breaker and parks the record
    /// `PLUGIN_FAILED`) rather than the record's data (`STORE_REFUSED`).
    pub fn is_plugin_fault(&self) -> bool {
        !matches!(self, CallError::KeyTooLong(_))
    }
}

impl CallError {
    /// Builds the error of a failed call from wasmtime's error, what the guest wrote to
    /// stderr (a Rust guest's panic message) and the memory cap's refusal, if growth was
    /// refused. The wasm backtrace goes to the debug log only.
    pub(crate) fn from_wasm(e: wasmtime::Error, guest_stderr: &str, refused: Option<&str>) -> Self {
        tracing::debug!("plugin call failed: {e:?}");
        let cause = crate::guard::escape(&e.root_cause().to_string());
        let said = crate::guard::escape(&one_line(guest_stderr, 600));
        let mut message = if said.is_empty() {
            cause
        } else {
            format!("{said} ({cause})")
        };
        if let Some(refused) = refused {
            message = format!("{message}; {refused}");
        }
        CallError::Trap(message)
    }
}

/// The last `max` bytes of `text` on one line.
fn one_line(text: &str, max: usize) -> String {
    // A Rust guest's advice to set RUST_BACKTRACE does not apply here.
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let flat: String = kept
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if flat.len() <= max {
        return flat;
    }
    let mut start = flat.len() - max;
    while !flat.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &flat[start..])
}
