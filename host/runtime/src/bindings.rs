//! The typed bindings of the `plugin` world and the state each call's store holds.

use crate::guard::{Hoard, LogBudget, TailPipe};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    // Batches are lowered straight from the host's records: no owned copy of every payload
    // before the canonical ABI copies it into the guest.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
    // Exports are called as futures, so that a deadline can end a call wherever the guest
    // is: running wasm (epoch yields) or blocked in a WASI call (the future is dropped).
    exports: { default: async },
});

pub use flowhost::plugin::types as wit;

/// Per-call state: an empty WASI context (no preopened directories, no environment, no
/// arguments, no network), the resource table WASI needs, the memory limiter over the whole
/// instance, the guest's stderr (its tail) and the log budget.
pub struct HostState {
    model: String,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) hoard: Hoard,
    pub(crate) logs: LogBudget,
    /// The guest's stderr (where a Rust guest writes its panic message): its last bytes.
    stderr: TailPipe,
}

impl HostState {
    pub fn new(model: &str, memory_limit: usize) -> Self {
        let stderr = TailPipe::new(4096);
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
            hoard: Hoard::new(memory_limit),
            logs: LogBudget::default(),
        }
    }

    /// What the guest wrote to stderr during this call (its last bytes).
    pub fn guest_stderr(&self) -> String {
        self.stderr.contents()
    }

    pub fn model(&self) -> &str {
        &self.model
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

impl flowhost::plugin::host::Host for HostState {
    fn log(&mut self, level: flowhost::plugin::host::Level, message: String) {
        use flowhost::plugin::host::Level;
        let Some(message) = self.logs.admit(&message) else {
            return;
        };
        let model = self.model.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "flowhost::plugin", model, "{message}"),
            Level::Debug => tracing::debug!(target: "flowhost::plugin", model, "{message}"),
            Level::Info => tracing::info!(target: "flowhost::plugin", model, "{message}"),
            Level::Warn => tracing::warn!(target: "flowhost::plugin", model, "{message}"),
            Level::Error => tracing::error!(target: "flowhost::plugin", model, "{message}"),
        }
    }

    fn default_projection(
        &mut self,
        groups: Vec<wit::GroupResult>,
        policies: Vec<wit::PathPolicy>,
    ) -> Vec<wit::Projection> {
        crate::convert::default_projection(groups, policies)
    }
}

impl flowhost::plugin::types::Host for HostState {}

/// Links WASI p2 (async: a blocking WASI call is a future the deadline can drop) and the
/// `host` interface.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    Plugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}
