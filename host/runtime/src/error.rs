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
    #[error("exceeded its time limit")]
    Timeout,
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
}

impl CallError {
    pub(crate) fn from_wasm(e: wasmtime::Error) -> Self {
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
            && *trap == wasmtime::Trap::Interrupt
        {
            return CallError::Timeout;
        }
        // The root cause is the trap; the context carries the guest backtrace.
        let mut message = format!("{e:#}");
        if message.len() > 2000 {
            let mut cut = 2000;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        CallError::Trap(message.replace('\n', " "))
    }
}
