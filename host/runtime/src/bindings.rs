//! The typed bindings of the `plugin` world and the state each call's store holds.

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    // Batches are lowered straight from the host's records: no owned copy of every payload
    // before the canonical ABI copies it into the guest.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});

pub use flowhost::plugin::types as wit;

/// Per-call state: an empty WASI context (no preopened directories, no environment, no
/// arguments, no network), the resource table WASI needs, and the memory limiter.
pub struct HostState {
    model: String,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// The guest's stderr (where a Rust guest writes its panic message), kept small.
    stderr: MemoryOutputPipe,
}

impl HostState {
    pub fn new(model: &str, memory_limit: usize) -> Self {
        let stderr = MemoryOutputPipe::new(4096);
        Self {
            model: model.to_string(),
            // Nothing inherited: the guest sees no files, no env, no sockets; its stderr is
            // captured so that a failure can say what the guest said.
            wasi: WasiCtx::builder()
                .allow_ip_name_lookup(false)
                .allow_tcp(false)
                .allow_udp(false)
                .stderr(stderr.clone())
                .build(),
            stderr,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(16)
                .build(),
        }
    }

    pub fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }

    /// What the guest wrote to stderr during this call.
    pub fn guest_stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).into_owned()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Guest log lines longer than this are cut, so a plugin cannot flood the host's log.
const MAX_LOG_LINE: usize = 4096;

impl flowhost::plugin::host::Host for HostState {
    fn log(&mut self, level: flowhost::plugin::host::Level, message: String) {
        use flowhost::plugin::host::Level;
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let model = self.model.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "flowhost::plugin", model, "{message}"),
            Level::Debug => tracing::debug!(target: "flowhost::plugin", model, "{message}"),
            Level::Info => tracing::info!(target: "flowhost::plugin", model, "{message}"),
            Level::Warn => tracing::warn!(target: "flowhost::plugin", model, "{message}"),
            Level::Error => tracing::error!(target: "flowhost::plugin", model, "{message}"),
        }
    }
}

impl flowhost::plugin::types::Host for HostState {}

/// Links WASI p2 (sync) and the `host` interface.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    Plugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}
