//! The only crate of flowhost that touches wasmtime.
//!
//! A [`Runtime`] owns the engine (configured once), a compile cache on disk keyed by content
//! hash and engine (artefacts are loaded only when their keyed digest proves this host wrote
//! them), and the linker that gives guests the `host` interface and an empty WASI (no
//! filesystem, network or environment). [`Runtime::load`] turns a `.wasm` file into a
//! [`Plugin`]: a compiled, linked, described component. A plugin is called once per batch;
//! each call runs in a fresh instance, so a trap never leaves state behind. Instances are
//! taken from a pool of slots whose memory stays mapped between calls ([`RuntimeConfig::
//! call_slots`]): a fresh instance reuses a slot's pages instead of faulting in new ones.
//!
//! Every way a guest can misbehave ends in bounded time with a reason:
//! - each call is a future under a deadline: wasm yields at every epoch tick and a guest
//!   blocked in a WASI call (`sleep`, `poll`) is dropped with its future, so the deadline
//!   holds whatever the guest does; compiling and `describe` have their own limits;
//! - one memory budget covers every memory and table of an instance ([`guard::Hoard`]);
//! - logs have a per-call budget and are escaped; only the tail of stderr is kept;
//! - what a call returns is checked item by item before anyone stores or logs it
//!   ([`OutputLimits`]): a bad item fails alone.

mod bindings;
mod cache;
mod check;
mod convert;
mod error;
mod guard;
mod set;

pub use check::OutputLimits;
pub use error::{CallError, LoadError, PluginError};
pub use guard::{MAX_LOG_BYTES, MAX_LOG_LINES, MAX_TABLE_ELEMENTS};
pub use set::PluginSet;

use bindings::{HostState, PluginPre};
use flowhost_core::{Association, Description, Group, Projection, Record};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Store};

/// How a [`Runtime`] compiles and limits plugins.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artefacts are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The longest one plugin call may run (default for every plugin).
    pub call_timeout: Duration,
    /// The most memory (all memories and tables together) one instance may hold, in bytes
    /// (default for every plugin).
    pub memory_limit: usize,
    /// The longest compiling one component may take (a component over it is refused).
    pub compile_timeout: Duration,
    /// The longest `describe` may run when a plugin is loaded.
    pub describe_timeout: Duration,
    /// The longest each call of the probe batch may run when a plugin is validated.
    pub probe_timeout: Duration,
    /// What plugins may return.
    pub output: OutputLimits,
    /// The most plugin calls that run at once (all plugins of this runtime together): one
    /// instance slot each. A call beyond them waits for one to end before its own time
    /// limit starts; every call ends within its limit, so the wait is bounded too.
    pub call_slots: u32,
}

impl RuntimeConfig {
    /// The default time limit of one call.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default memory cap of one instance.
    pub const DEFAULT_MEMORY_LIMIT: usize = 512 << 20;
    /// The default number of calls that run at once.
    pub const DEFAULT_CALL_SLOTS: u32 = 32;
    /// The most call slots a runtime takes (each reserves address space for the memories
    /// an instance may have).
    pub const MAX_CALL_SLOTS: u32 = 256;
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            memory_limit: Self::DEFAULT_MEMORY_LIMIT,
            // An 18 MB Python component compiles in about 9 s on a 2-core machine.
            compile_timeout: Duration::from_secs(60),
            describe_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(10),
            output: OutputLimits::default(),
            call_slots: Self::DEFAULT_CALL_SLOTS,
        }
    }
}

/// The limits one plugin runs under. Every plugin starts with the runtime's defaults;
/// [`Plugin::with_limits`] overrides them per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest one call may run, whatever the guest does (a deadline on the call).
    pub call_timeout: Duration,
    /// The most memory one instance may hold, all memories and tables together, in bytes.
    pub memory_limit: usize,
    /// The most records (association) or references (projection) in one call.
    pub max_batch: usize,
}

impl Limits {
    /// No more records per call than this unless a model's limits say otherwise.
    pub const DEFAULT_MAX_BATCH: usize = 10_000;
}

/// `$FLOWHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/flowhost`, else `~/.cache/flowhost`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FLOWHOST_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("flowhost"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("flowhost"))
}

/// The epoch advances every tick; running wasm yields to its call's deadline at each tick.
const TICK: Duration = Duration::from_millis(5);

/// The timers of plugin calls: one small runtime for the whole process, never dropped. A
/// call is driven on the calling thread (a blocking thread: one hop per batch) by
/// `block_on`; this runtime's thread only fires the deadlines and the guests' WASI timers.
fn timers() -> &'static tokio::runtime::Runtime {
    static TIMERS: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    TIMERS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowhost-plugin-timers")
            .enable_time()
            .build()
            .expect("the plugin timers' runtime starts (a thread and a timer)")
    })
}

/// Runs a call's future under a deadline on the calling thread; `None` when the deadline
/// passed first (the future, and whatever the guest was blocked in, is dropped).
fn bounded<R>(limit: Duration, call: impl std::future::Future<Output = R>) -> Option<R> {
    timers()
        .handle()
        .block_on(async { tokio::time::timeout(limit, call).await.ok() })
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    engine_hash: String,
    /// One permit per instance slot; a call holds one while its store lives.
    slots: Arc<tokio::sync::Semaphore>,
}

/// How much of a slot's linear memory stays resident (zeroed in place) when its instance
/// ends, so that the next call on it takes no page faults there. A batch of a thousand
/// records touches a few MiB of guest memory.
const KEEP_RESIDENT: usize = 16 << 20;

/// A call waiting longer than this for a slot is logged (with how long it waited).
const SLOT_WAIT_LOGGED: Duration = Duration::from_secs(1);

/// The engine's pool of instance slots: `slots` component instances, each with room for the
/// most core instances, memories and tables the memory guard lets one instance have, so
/// that a call holding a permit always finds its slot. Only the memory actually touched is
/// resident; the rest is reserved address space.
fn pool(slots: u32) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    let per = |n: usize| slots.saturating_mul(n as u32);
    pool.total_component_instances(slots)
        .total_stacks(slots)
        .total_core_instances(per(guard::MAX_INSTANCES))
        .total_memories(per(guard::MAX_MEMORIES))
        .total_tables(per(guard::MAX_TABLES))
        .max_memories_per_module(guard::MAX_MEMORIES as u32)
        .max_tables_per_module(guard::MAX_TABLES as u32)
        .table_elements(guard::MAX_TABLE_ELEMENTS)
        .linear_memory_keep_resident(KEEP_RESIDENT);
    pool
}

/// Compiles, caches and runs plugins. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// How a plugin was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadInfo {
    /// The compiled artefact came from the cache (no compilation happened).
    pub from_cache: bool,
    /// Time to compile or deserialize.
    pub took: Duration,
}

/// A loaded plugin: compiled, linked and described. Cheap to clone; calls are synchronous
/// and CPU-bound, so async callers run them on a blocking thread, once per batch.
#[derive(Clone)]
pub struct Plugin {
    runtime: Arc<Inner>,
    pre: Arc<PluginPre<HostState>>,
    file: String,
    version: String,
    description: Arc<Description>,
    info: LoadInfo,
    limits: Limits,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(mut config: RuntimeConfig) -> Result<Self, LoadError> {
        config.call_slots = config.call_slots.clamp(1, RuntimeConfig::MAX_CALL_SLOTS);
        let slots = config.call_slots;
        let mut wasm = Config::new();
        // Epochs make running wasm yield to its call's deadline (never trap on their own).
        wasm.epoch_interruption(true);
        wasm.wasm_component_model(true);
        wasm.max_wasm_stack(1 << 20);
        let on_demand = wasm.clone();
        wasm.allocation_strategy(pool(slots));
        let engine = match Engine::new(&wasm) {
            Ok(engine) => engine,
            // The pool reserves address space up front; where that is refused (a tight
            // `ulimit -v`), instances are allocated one by one as before, only slower.
            Err(e) => {
                tracing::warn!(
                    "plugin instance pool of {slots} slots not available ({e:#}); allocating each instance on its own"
                );
                Engine::new(&on_demand).map_err(|e| LoadError::Engine(e.to_string()))?
            }
        };
        let mut linker = Linker::new(&engine);
        bindings::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;

        let engine_hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("flowhost-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                engine_hash,
                slots: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
            }),
        })
    }

    /// Loads a plugin file: validate the bytes, compile (or load the cached artefact),
    /// link against the `plugin` world, and call `describe`.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PluginError {
            file: file.clone(),
            error: LoadError::Read(e.to_string()),
        })?;
        self.load_bytes(&file, &bytes)
    }

    /// Loads a plugin from bytes; `file` names it in errors and logs.
    pub fn load_bytes(&self, file: &str, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let wrap = |error| PluginError {
            file: file.to_string(),
            error,
        };
        check_header(bytes).map_err(wrap)?;
        let version = content_hash(bytes);
        let started = Instant::now();
        let (component, from_cache) = cache::compile(
            &self.inner.engine,
            self.inner.config.cache_dir.as_deref(),
            &version,
            &self.inner.engine_hash,
            bytes,
            self.inner.config.compile_timeout,
        )
        .map_err(wrap)?;
        let info = LoadInfo {
            from_cache,
            took: started.elapsed(),
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wrap(LoadError::WrongWorld(format!("{e:#}"))))?;
        let pre = PluginPre::new(pre).map_err(|e| wrap(LoadError::WrongWorld(format!("{e:#}"))))?;
        let mut plugin = Plugin {
            runtime: self.inner.clone(),
            pre: Arc::new(pre),
            file: file.to_string(),
            version,
            description: Arc::new(placeholder_description()),
            info,
            limits: Limits {
                call_timeout: self.inner.config.call_timeout,
                memory_limit: self.inner.config.memory_limit,
                max_batch: Limits::DEFAULT_MAX_BATCH,
            },
        };
        let description = plugin
            .call_describe()
            .map_err(|e| wrap(LoadError::Describe(e)))?;
        validate_description(&description).map_err(wrap)?;
        plugin.description = Arc::new(description);
        Ok(plugin)
    }
}

fn placeholder_description() -> Description {
    Description {
        model: String::new(),
        kind: flowhost_core::Kind::Entity,
        version: String::new(),
        parents: Vec::new(),
        policies: Vec::new(),
    }
}

/// The plugin version: SHA-256 of the component's bytes, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Core modules have version 1, layer 0; components carry layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

fn validate_description(d: &Description) -> Result<(), LoadError> {
    let valid_name = !d.model.is_empty()
        && d.model
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid_name {
        return Err(LoadError::InvalidDescription(format!(
            "model name {:?} must be non-empty lower-case letters, digits, '-' or '_'",
            d.model
        )));
    }
    if d.kind == flowhost_core::Kind::ValueObject && d.parents.is_empty() {
        return Err(LoadError::InvalidDescription(format!(
            "value-object model '{}' names no parent model",
            d.model
        )));
    }
    Ok(())
}

impl Plugin {
    /// The file (or name) it was loaded from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The plugin version: the content hash of its bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What `describe` said when it was loaded.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// How it was loaded (from the cache or compiled).
    pub fn load_info(&self) -> LoadInfo {
        self.info
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The same plugin under other limits (cheap: the compiled component is shared).
    pub fn with_limits(&self, limits: Limits) -> Plugin {
        Plugin {
            limits: Limits {
                max_batch: limits.max_batch.max(1),
                ..limits
            },
            ..self.clone()
        }
    }

    /// Runs a small probe batch through `associate` and `project`, each call under the
    /// probe's time limit: both must answer with well-formed results of the right length
    /// (the calls check lengths and JSON). Returns a one-line summary.
    pub fn probe(&self) -> Result<String, CallError> {
        let limit = self.runtime.config.probe_timeout;
        let model = &self.description.model;
        let records: Vec<Record> = (1..=3)
            .map(|i| Record {
                seq: i,
                model: model.clone(),
                source: flowhost_core::Source {
                    system: "probe".into(),
                    adapter: "probe".into(),
                },
                external_id: format!("P-{i}"),
                occurred_at: "2026-01-01T00:00:00Z".into(),
                occurred_micros: 1_767_225_600_000_000 + i,
                payload: format!(r#"{{"name":"probe {i}","n":{i}}}"#),
            })
            .collect();
        let started = Instant::now();
        let associations = self.associate_within(&records, limit)?;
        let keyed = associations
            .iter()
            .filter(|a| matches!(a, Ok(Association::Keyed { .. })))
            .count();
        let groups = vec![Group {
            reference: "00000000-0000-7000-8000-000000000000".into(),
            records: records
                .into_iter()
                .map(|record| flowhost_core::KeyedRecord {
                    record,
                    parents: Vec::new(),
                })
                .collect(),
        }];
        let projections = self.project_within(&groups, limit)?;
        if let Some(Err(e)) = projections.iter().find(|p| p.is_err()) {
            return Err(e.clone());
        }
        Ok(format!(
            "associate 3 records → {} results ({keyed} keyed); project 1 group → {} projection ({:.1} ms)",
            associations.len(),
            projections.len(),
            started.elapsed().as_secs_f64() * 1e3
        ))
    }

    /// A permit for one instance slot, waiting (outside any call's time limit) while all are
    /// taken.
    fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        let slots = &self.runtime.slots;
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return permit;
        }
        let started = Instant::now();
        let permit = timers()
            .handle()
            .block_on(slots.clone().acquire_owned())
            .expect("the slots' semaphore is never closed");
        let waited = started.elapsed();
        // Recorded only for calls that found every slot taken: the histogram's count is the
        // number of such calls.
        metrics::histogram!(
            "flowhost_plugin_slot_wait_seconds",
            "model" => self.description.model.clone()
        )
        .record(waited.as_secs_f64());
        if waited > SLOT_WAIT_LOGGED {
            tracing::warn!(
                target: "flowhost::plugin",
                model = self.description.model.as_str(),
                waited_ms = waited.as_millis() as u64,
                "plugin call waited {:.1} s for one of the {} call slots (plugins.call_slots): other calls held them all",
                waited.as_secs_f64(),
                self.runtime.config.call_slots
            );
        }
        permit
    }

    fn store(&self) -> Store<HostState> {
        let inner = &self.runtime;
        let mut store = Store::new(
            &inner.engine,
            HostState::new(&self.description.model, self.limits.memory_limit),
        );
        store.limiter(|s| &mut s.hoard);
        // Yield at every epoch tick, so the deadline around the call is looked at.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// One call in a fresh instance under `limit`: its value, or the error it ends with
    /// (deadline, trap, memory cap) with what the guest said on stderr. Dropped log lines
    /// are reported here, once per call.
    fn run<R>(
        &self,
        limit: Duration,
        call: impl AsyncFnOnce(&bindings::Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        // Declared before the store, so dropped after it: the slot is free again only once
        // the instance is gone.
        let _slot = self.slot();
        let mut store = self.store();
        let outcome = bounded(limit, async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            call(&instance, &mut store).await
        });
        let state = store.data();
        if state.logs.dropped() > 0 {
            tracing::warn!(
                target: "flowhost::plugin",
                model = state.model(),
                dropped = state.logs.dropped(),
                "plugin log: {} lines dropped (over the budget of {} lines / {} KiB per call)",
                state.logs.dropped(),
                MAX_LOG_LINES,
                MAX_LOG_BYTES >> 10
            );
        }
        match outcome {
            None => Err(CallError::Timeout(limit)),
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(CallError::from_wasm(
                e,
                &state.guest_stderr(),
                state.hoard.refused(),
            )),
        }
    }

    fn call_describe(&self) -> Result<Description, CallError> {
        let d = self.run(
            self.runtime.config.describe_timeout,
            async |plugin, store| plugin.flowhost_plugin_model().call_describe(store).await,
        )?;
        Ok(convert::description(d))
    }

    /// Keys (or rejects) a batch of records: one call, one result per record, same order.
    /// The call fails as a whole (trap, time or memory limit, wrong length); a record whose
    /// result breaks the output limits fails alone.
    pub fn associate(
        &self,
        records: &[Record],
    ) -> Result<Vec<Result<Association, CallError>>, CallError> {
        self.associate_within(records, self.limits.call_timeout)
    }

    fn associate_within(
        &self,
        records: &[Record],
        limit: Duration,
    ) -> Result<Vec<Result<Association, CallError>>, CallError> {
        let input: Vec<_> = records.iter().map(convert::input_record).collect();
        let out = self.run(limit, async |plugin, store| {
            plugin
                .flowhost_plugin_model()
                .call_associate(store, &input)
                .await
        })?;
        same_length("associate", records.len(), out.len())?;
        let limits = &self.runtime.config.output;
        Ok(out
            .into_iter()
            .map(|a| {
                let a = convert::association(a);
                check::association(&a, &self.description, limits).map(|()| a)
            })
            .collect())
    }

    /// Projects a batch of groups: one call, one projection per group, same order. The call
    /// fails as a whole (trap, limits, wrong length); a projection that breaks the output
    /// rules (not the group's reference, a view that is not one JSON object or too large, a
    /// parent the group does not have) fails alone. Views come back as one line each.
    pub fn project(
        &self,
        groups: &[Group],
    ) -> Result<Vec<Result<Projection, CallError>>, CallError> {
        self.project_within(groups, self.limits.call_timeout)
    }

    fn project_within(
        &self,
        groups: &[Group],
        limit: Duration,
    ) -> Result<Vec<Result<Projection, CallError>>, CallError> {
        // Borrowed bindings take slices, so each level of nesting is built (and owned) here.
        let links: Vec<Vec<Vec<_>>> = groups
            .iter()
            .map(|g| {
                g.records
                    .iter()
                    .map(|k| k.parents.iter().map(convert::link_in).collect())
                    .collect()
            })
            .collect();
        let keyed: Vec<Vec<_>> = groups
            .iter()
            .zip(&links)
            .map(|(g, links)| {
                g.records
                    .iter()
                    .zip(links)
                    .map(|(k, parents)| bindings::wit::KeyedRecordParam {
                        record: convert::input_record(&k.record),
                        parents,
                    })
                    .collect()
            })
            .collect();
        let input: Vec<_> = groups
            .iter()
            .zip(&keyed)
            .map(|(g, records)| bindings::wit::GroupParam {
                reference: &g.reference,
                records,
            })
            .collect();
        let out = self.run(limit, async |plugin, store| {
            plugin
                .flowhost_plugin_model()
                .call_project(store, &input)
                .await
        })?;
        same_length("project", groups.len(), out.len())?;
        let limits = &self.runtime.config.output;
        Ok(out
            .into_iter()
            .zip(groups)
            .map(|(p, g)| {
                let mut p = convert::projection(p);
                check::projection(&mut p, g, limits)
                    .map(|()| p)
                    .map_err(CallError::Invalid)
            })
            .collect())
    }
}

/// A batch call must answer once per input, in order.
fn same_length(function: &'static str, expected: usize, got: usize) -> Result<(), CallError> {
    if expected == got {
        return Ok(());
    }
    Err(CallError::WrongLength {
        function,
        expected,
        got,
    })
}
