//! flowhost's plugin registry: the current plugin of each model, and how it changes.
//!
//! The registry owns the [`PluginSet`] the engine reads at the start of every batch. A plugin
//! becomes current only after it has been compiled (off the hot path, on a blocking thread)
//! and **validated**: it instantiates, `describe` answers, it targets flowhost's world, and a
//! probe batch of `associate` and `project` returns well-formed results of the right length.
//! Then it is swapped in atomically: batches already running keep the version they started
//! with, the next batch uses the new one. A file that fails validation never replaces a
//! working version; its error (file, step, message) is logged at warn and kept.
//!
//! Every version that has been current is kept: its bytes in the versions folder, its row in
//! the database (`plugin_versions`). The database says which version of each model is current
//! (`models`), so a rollback made by another process (`flowhost plugins rollback`) reaches a
//! running host through [`Registry::sync`], and a restart keeps it.
//!
//! Changing a model's version marks its views made by other versions for re-projection in the
//! same transaction; the projection workers redo them in batches behind fresh work.

mod archive;
mod rollback;
mod shadow;
mod watch;

pub use rollback::{RollbackError, rollback};
pub use shadow::SHADOW_DIR;

use flowhost_core::Description;
use flowhost_runtime::PluginSet;
use flowhost_runtime::{Limits, Plugin, Runtime};
use flowhost_store::{CurrentChange, PluginFileRow, Store, StoreError, VersionSource};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Per-model overrides of the plugin limits; unset fields keep the runtime's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverride {
    pub call_timeout: Option<Duration>,
    pub memory_limit: Option<usize>,
    pub max_batch: Option<usize>,
}

/// Where the registry finds plugins and keeps versions, and how it watches.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The watched plugins folder (`*.wasm` directly inside it).
    pub dir: PathBuf,
    /// Where every version's bytes are kept for rollback.
    pub versions_dir: PathBuf,
    /// The most records per call for models without an override.
    pub max_batch: usize,
    /// Per-model limits.
    pub limits: HashMap<String, LimitOverride>,
    /// A file is looked at once it has had no events for this long (writers finish).
    pub debounce: Duration,
    /// How often a running host reads the current versions from the database (rollbacks made
    /// by other processes).
    pub sync_every: Duration,
    /// The largest plugin file; a larger one is refused before it is read.
    pub max_file_bytes: u64,
}

impl RegistryConfig {
    /// The default largest plugin file: 64 MiB (a Python component is about 18 MB).
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

    /// Defaults for a plugins folder: versions kept in `<dir>/.versions`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            versions_dir: dir.join(".versions"),
            dir,
            max_batch: Limits::DEFAULT_MAX_BATCH,
            limits: HashMap::new(),
            debounce: Duration::from_millis(100),
            sync_every: Duration::from_millis(250),
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Which step of validation refused a file (not to be confused with the stages of the
/// engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Read,
    /// Compile, link (world) or `describe`.
    Load,
    Probe,
    /// Another file already defines the model.
    Conflict,
    /// Keeping the version (archive, database).
    Install,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Read => "read",
            Step::Load => "load",
            Step::Probe => "probe",
            Step::Conflict => "conflict",
            Step::Install => "install",
        }
    }
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub step: Step,
    pub message: String,
    pub at: SystemTime,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} failed: {}",
            self.file,
            self.step.as_str(),
            self.message
        )
    }
}

/// A model's plugin as this registry sees it.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub model: String,
    /// The version serving, if any.
    pub version: Option<String>,
    /// The file it came from (the folder's file, or the kept copy after a rollback).
    pub file: Option<String>,
    pub source: VersionSource,
    pub loaded_at: Option<SystemTime>,
    /// Why the model is not served (its file left the folder).
    pub paused: Option<String>,
    /// The last refusal of a file for this model.
    pub last_error: Option<FileError>,
}

/// Registry failures that stop a start-up (a refused file does not: it is reported).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the plugins folder {dir}: {message}")]
    Folder { dir: String, message: String },
    #[error("cannot create the versions folder {dir}: {message}")]
    Versions { dir: String, message: String },
    #[error("cannot watch the plugins folder {dir}: {message}")]
    Watch { dir: String, message: String },
}

/// What the registry knows about one file of the folder.
#[derive(Debug, Clone, Default)]
struct FileState {
    /// Content hash of the bytes last looked at.
    hash: Option<String>,
    /// The model it defines (when it passed validation).
    model: Option<String>,
    error: Option<FileError>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    models: BTreeMap<String, ModelStatus>,
    /// Valid files of the shadow folder (a refused one is in `files`, with its error).
    shadow_files: BTreeMap<PathBuf, FileState>,
}

struct Inner {
    runtime: Runtime,
    store: Store,
    plugins: PluginSet,
    /// Candidate versions in shadow runs (`<dir>/shadow/*.wasm`).
    shadows: PluginSet,
    config: RegistryConfig,
    state: Mutex<State>,
    /// One change at a time (watcher, sync, rollback).
    changing: tokio::sync::Mutex<()>,
    swaps: AtomicU64,
    refused: AtomicU64,
}

/// The current plugins and their life. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// A validated plugin and the bytes it came from.
pub(crate) struct Checked {
    plugin: Plugin,
    bytes: Arc<Vec<u8>>,
}

impl Registry {
    /// Loads every plugin of the folder, validates it, and makes current what the database
    /// says should be (a rollback stays until a new file arrives). A refused file is
    /// reported and skipped: one broken plugin does not stop the others.
    pub async fn open(
        store: Store,
        runtime: Runtime,
        config: RegistryConfig,
    ) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(&config.versions_dir).map_err(|e| RegistryError::Versions {
            dir: config.versions_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let registry = Registry {
            inner: Arc::new(Inner {
                runtime,
                store,
                plugins: PluginSet::new(),
                shadows: PluginSet::new(),
                config,
                state: Mutex::new(State::default()),
                changing: tokio::sync::Mutex::new(()),
                swaps: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        };
        if !registry.inner.config.dir.exists() {
            tracing::warn!(
                "plugins folder {} does not exist",
                registry.inner.config.dir.display()
            );
        }
        registry.rescan().await?;
        registry.pause_absent().await?;
        Ok(registry)
    }

    /// The plugins the engine reads (shared: swaps here are seen there).
    pub fn plugins(&self) -> &PluginSet {
        &self.inner.plugins
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Versions swapped in since start for one this host was serving (first loads at
    /// start-up, or of a new model, are not swaps).
    pub fn swaps(&self) -> u64 {
        self.inner.swaps.load(Ordering::Relaxed)
    }

    /// Files refused since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Every model this registry has seen, and every refused file that names no model.
    pub fn status(&self) -> (Vec<ModelStatus>, Vec<FileError>) {
        let state = self.inner.state.lock().expect("registry state");
        let models = state.models.values().cloned().collect();
        let orphans = state
            .files
            .values()
            .filter(|f| f.model.is_none())
            .filter_map(|f| f.error.clone())
            .collect();
        (models, orphans)
    }

    /// The limits a model's plugin runs under.
    fn limits_for(&self, model: &str, plugin: &Plugin) -> Limits {
        let base = plugin.limits();
        let o = self
            .inner
            .config
            .limits
            .get(model)
            .copied()
            .unwrap_or_default();
        Limits {
            call_timeout: o.call_timeout.unwrap_or(base.call_timeout),
            memory_limit: o.memory_limit.unwrap_or(base.memory_limit),
            max_batch: o.max_batch.unwrap_or(self.inner.config.max_batch),
        }
    }

    /// Compiles and validates bytes on a blocking thread (compilation is CPU-bound and must
    /// not hold up the stage workers' runtime threads).
    pub(crate) async fn check(&self, file: String, bytes: Vec<u8>) -> Result<Checked, FileError> {
        let this = self.clone();
        let join = tokio::task::spawn_blocking(move || {
            let fail = |step, message: String| FileError {
                file: file.clone(),
                step,
                message,
                at: SystemTime::now(),
            };
            let plugin = this
                .inner
                .runtime
                .load_bytes(&file, &bytes)
                .map_err(|e| fail(Step::Load, e.error.to_string()))?;
            let model = plugin.description().model.clone();
            let plugin = plugin.with_limits(this.limits_for(&model, &plugin));
            plugin
                .probe()
                .map_err(|e| fail(Step::Probe, e.to_string()))?;
            Ok(Checked {
                plugin,
                bytes: Arc::new(bytes),
            })
        });
        match join.await {
            Ok(result) => result,
            Err(e) => Err(FileError {
                file: "?".into(),
                step: Step::Load,
                message: format!("validation task failed: {e}"),
                at: SystemTime::now(),
            }),
        }
    }

    /// Makes a validated plugin current: keeps its bytes, records the version, switches the
    /// database (marking stale views), then swaps it in.
    pub(crate) async fn install(
        &self,
        checked: Checked,
        source: VersionSource,
        folder_version: Option<String>,
    ) -> Result<(), FileError> {
        let plugin = checked.plugin;
        let d = plugin.description().clone();
        let fail = |message: String| FileError {
            file: plugin.file().to_string(),
            step: Step::Install,
            message,
            at: SystemTime::now(),
        };
        let archive = archive::keep(
            &self.inner.config.versions_dir,
            &d.model,
            plugin.version(),
            &checked.bytes,
        )
        .map_err(fail)?;
        let store = &self.inner.store;
        let now = flowhost_store::now_micros();
        store
            .record_version(&flowhost_store::PluginVersionRow {
                model: d.model.clone(),
                version: plugin.version().to_string(),
                file: plugin.file().to_string(),
                archive: archive.display().to_string(),
                description: description_json(&d),
                first_loaded_micros: now,
                last_current_micros: now,
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        let switched = store
            .set_current(&CurrentChange {
                model: d.model.clone(),
                kind: d.kind.as_str().to_string(),
                version: plugin.version().to_string(),
                source,
                folder_version,
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        let previous = self.inner.plugins.insert(plugin.clone());
        // A swap replaces a version this host was serving; a first load is not one.
        if previous
            .as_ref()
            .is_some_and(|p| p.version() != plugin.version())
        {
            self.inner.swaps.fetch_add(1, Ordering::Relaxed);
        }
        let was = previous.as_ref().map(|p| short(p.version()).to_string());
        if was.as_deref() != Some(short(plugin.version())) {
            tracing::info!(
                model = %d.model,
                version = short(plugin.version()),
                was = was.as_deref().unwrap_or("none"),
                file = plugin.file(),
                source = source.as_str(),
                views_to_reproject = switched.marked,
                requeued_failed = switched.requeued,
                "plugin version now serving"
            );
        }
        let mut state = self.inner.state.lock().expect("registry state");
        let status = state
            .models
            .entry(d.model.clone())
            .or_insert_with(|| empty_status(&d.model));
        status.version = Some(plugin.version().to_string());
        status.file = Some(plugin.file().to_string());
        status.source = source;
        status.loaded_at = Some(SystemTime::now());
        status.paused = None;
        Ok(())
    }

    /// Records a refused file: logged at warn, kept in the status and the database; the
    /// model's working version (if any) keeps serving.
    async fn refuse(&self, path: &Path, hash: Option<String>, error: FileError) {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(file = %error.file, step = error.step.as_str(), "plugin refused, the current version keeps serving: {}", error.message);
        let model = {
            let mut state = self.inner.state.lock().expect("registry state");
            let entry = state.files.entry(path.to_path_buf()).or_default();
            entry.hash = hash.clone();
            entry.error = Some(error.clone());
            let model = entry.model.clone();
            if let Some(m) = &model
                && let Some(status) = state.models.get_mut(m)
            {
                status.last_error = Some(error.clone());
            }
            model
        };
        let row = PluginFileRow {
            file: error.file.clone(),
            model,
            version: None,
            error: Some(format!("{}: {}", error.step.as_str(), error.message)),
            checked_micros: flowhost_store::now_micros(),
        };
        if let Err(e) = self.inner.store.record_file(&row).await {
            tracing::warn!("cannot record the refusal of {}: {e}", error.file);
        }
    }

    /// Looks at every `*.wasm` of the folder and of its shadow folder, and handles the ones
    /// that are new, changed or gone since last seen (the folder's first, so a candidate
    /// finds its live version).
    pub async fn rescan(&self) -> Result<(), RegistryError> {
        let dir = &self.inner.config.dir;
        let mut present = plugin_files_in(dir)?;
        present.extend(plugin_files_in(&self.shadow_dir())?);
        let known: Vec<PathBuf> = {
            let state = self.inner.state.lock().expect("registry state");
            state
                .files
                .keys()
                .chain(state.shadow_files.keys())
                .cloned()
                .collect()
        };
        for path in known.iter().filter(|p| !present.contains(p)) {
            self.file_changed(path).await;
        }
        for path in &present {
            self.file_changed(path).await;
        }
        Ok(())
    }

    /// Handles one file of the folder that may have changed: new, rewritten, or removed.
    pub(crate) async fn file_changed(&self, path: &Path) {
        let _one = self.inner.changing.lock().await;
        let shadow = self.is_shadow_file(path);
        let Some((file, hash, checked, known)) = self.read_checked(path, shadow).await else {
            return;
        };
        if shadow {
            self.shadow_checked(path, hash, checked).await;
            return;
        }
        let model = checked.plugin.description().model.clone();
        // Another file of the folder already defines this model: the first one keeps it.
        let owner = {
            let state = self.inner.state.lock().expect("registry state");
            state
                .files
                .iter()
                .find(|(p, f)| {
                    *p != path && f.model.as_deref() == Some(&model) && f.error.is_none()
                })
                .map(|(p, _)| p.display().to_string())
        };
        if let Some(owner) = owner {
            let error = FileError {
                file,
                step: Step::Conflict,
                message: format!("model '{model}' is already defined by {owner}"),
                at: SystemTime::now(),
            };
            self.refuse(path, Some(hash), error).await;
            return;
        }
        // The file used to define another model: that model loses its plugin.
        if let Some(old) = known.as_ref().and_then(|k| k.model.clone())
            && old != model
        {
            self.pause(&old, format!("{file} now defines '{model}'"))
                .await;
        }
        let (source, folder_version, checked) = self.choose(&model, checked).await;
        let version = checked.plugin.version().to_string();
        let folder = checked_version(&folder_version, &version);
        if let Err(error) = self.install(checked, source, folder_version).await {
            self.refuse(path, Some(hash), error).await;
            return;
        }
        {
            let mut state = self.inner.state.lock().expect("registry state");
            state.files.insert(
                path.to_path_buf(),
                FileState {
                    hash: Some(hash),
                    model: Some(model.clone()),
                    error: None,
                },
            );
            if let Some(status) = state.models.get_mut(&model) {
                status.last_error = None;
            }
        }
        let row = PluginFileRow {
            file,
            model: Some(model),
            version: Some(folder),
            error: None,
            checked_micros: flowhost_store::now_micros(),
        };
        if let Err(e) = self.inner.store.record_file(&row).await {
            tracing::warn!("cannot record plugin file {}: {e}", row.file);
        }
    }

    /// Reads and validates a file of the folder (or of its shadow folder). `None` when
    /// there is nothing more to do: the file is gone (handled), refused (recorded), the same
    /// bytes as last time, or still being written.
    async fn read_checked(
        &self,
        path: &Path,
        shadow: bool,
    ) -> Option<(String, String, Checked, Option<FileState>)> {
        let file = path.display().to_string();
        let max = self.inner.config.max_file_bytes;
        let owned = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || read_plugin_file(&owned, max))
            .await
            .unwrap_or_else(|e| FileRead::Refused(format!("the read failed: {e}")));
        let (bytes, before) = match read {
            FileRead::Bytes { bytes, stamp } => (bytes, stamp),
            FileRead::Gone => {
                if shadow {
                    self.shadow_removed(path).await;
                } else {
                    self.file_removed(path).await;
                }
                return None;
            }
            FileRead::Refused(message) => {
                let error = FileError {
                    file,
                    step: Step::Read,
                    message,
                    at: SystemTime::now(),
                };
                self.refuse(path, None, error).await;
                return None;
            }
        };
        let hash = flowhost_runtime::content_hash(&bytes);
        let known = {
            let state = self.inner.state.lock().expect("registry state");
            let shadow_known = shadow.then(|| state.shadow_files.get(path)).flatten();
            shadow_known.or_else(|| state.files.get(path)).cloned()
        };
        if let Some(k) = &known
            && k.hash.as_deref() == Some(hash.as_str())
        {
            return None; // same bytes as last time (a touch, or events of one write)
        }
        match self.check(file.clone(), bytes).await {
            Ok(checked) => Some((file, hash, checked, known)),
            Err(error) => {
                if stamp(path) != Some(before) {
                    // Still being written: its next event brings it back here.
                    tracing::debug!(
                        file,
                        "plugin file changed while it was checked; waiting for the writer"
                    );
                    return None;
                }
                self.refuse(path, Some(hash), error).await;
                None
            }
        }
    }

    /// A folder file validated for `model`: it becomes current, unless the database says an
    /// operator rolled this very folder version back (then the rolled-back-to version stays).
    async fn choose(
        &self,
        model: &str,
        checked: Checked,
    ) -> (VersionSource, Option<String>, Checked) {
        let folder = checked.plugin.version().to_string();
        let pinned = match self.inner.store.plugin_states().await {
            Ok(states) => states.into_iter().find(|s| {
                s.model == model
                    && s.source == VersionSource::Rollback
                    && s.folder_version.as_deref() == Some(folder.as_str())
                    && s.version != folder
            }),
            Err(e) => {
                tracing::warn!(model, "cannot read the current versions: {e}");
                None
            }
        };
        if let Some(pin) = pinned {
            match self.load_kept(model, &pin.version).await {
                Ok(kept) => {
                    tracing::info!(
                        model,
                        version = short(&pin.version),
                        folder = short(&folder),
                        "keeping the version an operator rolled back to"
                    );
                    return (VersionSource::Rollback, Some(folder), kept);
                }
                Err(e) => tracing::warn!(
                    model,
                    "cannot load the rolled-back version {}: {e}; using the folder's",
                    short(&pin.version)
                ),
            }
        }
        (VersionSource::Folder, None, checked)
    }

    /// Loads and validates a kept version of a model.
    pub(crate) async fn load_kept(&self, model: &str, version: &str) -> Result<Checked, FileError> {
        let path = archive::path(&self.inner.config.versions_dir, model, version);
        let fail = |step, message: String| FileError {
            file: path.display().to_string(),
            step,
            message,
            at: SystemTime::now(),
        };
        let bytes = std::fs::read(&path).map_err(|e| fail(Step::Read, e.to_string()))?;
        let checked = self.check(path.display().to_string(), bytes).await?;
        let d = checked.plugin.description();
        if d.model != model || checked.plugin.version() != version {
            return Err(fail(
                Step::Load,
                format!(
                    "kept copy describes '{}' version {}, not '{model}' {}",
                    d.model,
                    short(checked.plugin.version()),
                    short(version)
                ),
            ));
        }
        Ok(checked)
    }

    async fn file_removed(&self, path: &Path) {
        let file = path.display().to_string();
        let known = {
            let mut state = self.inner.state.lock().expect("registry state");
            state.files.remove(path)
        };
        if let Err(e) = self.inner.store.forget_file(&file).await {
            tracing::warn!("cannot forget plugin file {file}: {e}");
        }
        // The model loses its plugin, unless another file of the folder now defines it.
        if let Some(model) = known.and_then(|k| k.model) {
            let other = {
                let state = self.inner.state.lock().expect("registry state");
                state
                    .files
                    .values()
                    .any(|f| f.model.as_deref() == Some(model.as_str()) && f.error.is_none())
            };
            if !other {
                self.pause(&model, format!("{file} was removed")).await;
            }
        }
    }

    /// Takes a model's plugin away: its records wait (nothing is deleted) until a plugin
    /// for it returns.
    async fn pause(&self, model: &str, why: String) {
        self.inner.plugins.remove(model);
        tracing::warn!(model, "model paused, its records wait: {why}");
        {
            let mut state = self.inner.state.lock().expect("registry state");
            let status = state
                .models
                .entry(model.to_string())
                .or_insert_with(|| empty_status(model));
            status.paused = Some(why.clone());
        }
        if let Err(e) = self
            .inner
            .store
            .set_plugin_state(model, &format!("paused: {why}"))
            .await
        {
            tracing::warn!(model, "cannot record the pause: {e}");
        }
    }

    /// Models the database knows that no file of the folder defines are paused.
    async fn pause_absent(&self) -> Result<(), RegistryError> {
        let states = self.inner.store.plugin_states().await?;
        for s in states {
            if self.inner.plugins.get(&s.model).is_none() {
                let dir = self.inner.config.dir.display().to_string();
                self.pause(&s.model, format!("no plugin for it in {dir}"))
                    .await;
            }
        }
        Ok(())
    }

    /// Applies the database's current versions: a version another process made current (a
    /// rollback) is loaded from its kept copy, validated and swapped in.
    pub async fn sync(&self) -> Result<(), RegistryError> {
        let _one = self.inner.changing.lock().await;
        let states = self.inner.store.plugin_states().await?;
        for s in states {
            let Some(current) = self.inner.plugins.get(&s.model) else {
                continue; // paused here: a file must come back first
            };
            if current.version() == s.version {
                continue;
            }
            match self.load_kept(&s.model, &s.version).await {
                Ok(kept) => {
                    let plugin = kept.plugin;
                    tracing::info!(model = %s.model, version = short(&s.version), was = short(current.version()), source = s.source.as_str(), "plugin version changed in the database; now serving it");
                    self.inner.plugins.insert(plugin.clone());
                    self.inner.swaps.fetch_add(1, Ordering::Relaxed);
                    let mut state = self.inner.state.lock().expect("registry state");
                    let status = state
                        .models
                        .entry(s.model.clone())
                        .or_insert_with(|| empty_status(&s.model));
                    status.version = Some(s.version.clone());
                    status.file = Some(plugin.file().to_string());
                    status.source = s.source;
                    status.loaded_at = Some(SystemTime::now());
                }
                Err(e) => {
                    tracing::warn!(model = %s.model, "cannot serve version {} made current elsewhere: {e}", short(&s.version));
                }
            }
        }
        Ok(())
    }

    /// Makes an earlier version of a model current here and in the database, at once.
    pub async fn rollback(&self, model: &str, to: Option<&str>) -> Result<String, RollbackError> {
        let version = rollback::rollback(
            &self.inner.store,
            &self.inner.runtime,
            &self.inner.config.versions_dir,
            model,
            to,
        )
        .await?;
        self.sync()
            .await
            .map_err(|e| RollbackError::Other(e.to_string()))?;
        Ok(version)
    }
}

fn checked_version(folder_version: &Option<String>, version: &str) -> String {
    folder_version
        .clone()
        .unwrap_or_else(|| version.to_string())
}

fn empty_status(model: &str) -> ModelStatus {
    ModelStatus {
        model: model.to_string(),
        version: None,
        file: None,
        source: VersionSource::Folder,
        loaded_at: None,
        paused: None,
        last_error: None,
    }
}

/// A file's size and modification time, to tell whether it changed while it was checked.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// What reading a file of the folder came to.
enum FileRead {
    Bytes { bytes: Vec<u8>, stamp: Stamp },
    Gone,
    Refused(String),
}

/// Reads a plugin file if it is a regular file (or a link to one) of at most `max` bytes.
/// It is opened without blocking (a FIFO renamed in between cannot hold the read) and its
/// type is checked again on the open file. Blocking IO: call it on a blocking thread.
fn read_plugin_file(path: &Path, max: u64) -> FileRead {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let kind = |t: std::fs::FileType| {
        if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else {
            "not a regular file"
        }
    };
    let refuse_kind = |t: std::fs::FileType| {
        FileRead::Refused(format!(
            "{} named like a plugin; only regular files (or links to them) are loaded",
            kind(t)
        ))
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match std::fs::symlink_metadata(path) {
                Ok(_) => FileRead::Refused("a link to a file that does not exist".into()),
                Err(_) => FileRead::Gone,
            };
        }
        Err(e) => return FileRead::Refused(e.to_string()),
    };
    if !meta.is_file() {
        return refuse_kind(meta.file_type());
    }
    let too_large = |size: u64| {
        FileRead::Refused(format!(
            "{size} bytes, over the limit of {max} bytes (plugins.max_file_mb)"
        ))
    };
    if meta.len() > max {
        return too_large(meta.len());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileRead::Gone,
        Err(e) => return FileRead::Refused(e.to_string()),
    };
    let meta = match file.metadata() {
        Ok(meta) if meta.is_file() => meta,
        Ok(meta) => return refuse_kind(meta.file_type()),
        Err(e) => return FileRead::Refused(e.to_string()),
    };
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    if let Err(e) = file.take(max + 1).read_to_end(&mut bytes) {
        return FileRead::Refused(e.to_string());
    }
    if bytes.len() as u64 > max {
        return too_large(bytes.len() as u64);
    }
    FileRead::Bytes {
        bytes,
        stamp: (meta.len(), meta.modified().ok()),
    }
}

/// Whether a path is a plugin file of the folder (`*.wasm`, not hidden: editors' and
/// copiers' temporary files are skipped).
/// The plugin files directly in `dir` (none when it does not exist), sorted. Whatever is
/// named like a plugin is listed: a FIFO, a device, a directory or a dangling link is
/// refused later with its reason rather than passed over in silence.
fn plugin_files_in(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| RegistryError::Folder {
        dir: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut present: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_plugin_file(p))
        .collect();
    present.sort();
    Ok(present)
}

pub fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "wasm")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
}

/// The first 12 hex digits of a version, as shown to people.
pub fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}

/// A description as JSON (kept with each version).
pub fn description_json(d: &Description) -> String {
    let policies: Vec<serde_json::Value> = d
        .policies
        .iter()
        .map(|p| serde_json::json!({"path": p.path, "policy": p.policy.to_string()}))
        .collect();
    serde_json::json!({
        "model": d.model,
        "kind": d.kind.as_str(),
        "version": d.version,
        "parents": d.parents,
        "policies": policies,
    })
    .to_string()
}
