//! The compile cache: precompiled components on disk, keyed by content hash and engine.
//!
//! Loading a precompiled artefact runs native code, so the host loads only artefacts it can
//! prove it wrote: the cache folder is created `0700` (and not used when another user could
//! write to it), and every artefact starts with an HMAC-SHA256 of its name and bytes under
//! a key kept in the folder (`0600`, made on first use). An artefact whose digest does not
//! match — tampered, truncated, written by something else — is logged and recompiled from
//! the `.wasm`, never loaded.

use crate::LoadError;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The length of an artefact's digest (HMAC-SHA256), stored before it.
const DIGEST: usize = 32;
const KEY_FILE: &str = "cache.key";

/// Returns the compiled component and whether it came from the cache.
///
/// A cached artefact that fails its digest or to load is recompiled and replaced; a cache
/// directory that cannot be used only costs a recompile next time. Compiling has a time
/// limit: past it the component is refused (the compiler thread is left to finish alone).
pub fn compile(
    engine: &Engine,
    dir: Option<&Path>,
    content_hash: &str,
    engine_hash: &str,
    bytes: &[u8],
    limit: Duration,
) -> Result<(Component, bool), LoadError> {
    let name = format!("{content_hash}-{engine_hash}.cwasm");
    let cache = dir.and_then(|d| match Cache::open(d) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(dir = %d.display(), "compile cache not used: {e}");
            None
        }
    });
    if let Some(cache) = &cache
        && let Some(component) = cache.load(engine, &name)
    {
        return Ok((component, true));
    }
    let component = compile_bounded(engine, bytes, limit)?;
    if let Some(cache) = &cache
        && let Err(e) = cache.store(&name, &component)
    {
        tracing::warn!(dir = %cache.dir.display(), "cannot cache compiled plugin: {e}");
    }
    Ok((component, false))
}

/// Compiles on a thread of its own and waits at most `limit` for it.
fn compile_bounded(engine: &Engine, bytes: &[u8], limit: Duration) -> Result<Component, LoadError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = engine.clone();
    let bytes = bytes.to_vec();
    std::thread::Builder::new()
        .name("flowhost-compile".into())
        .spawn(move || {
            let _ = tx.send(Component::new(&engine, &bytes));
        })
        .map_err(|e| LoadError::Compile(format!("cannot start a compiler thread: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(result) => result.map_err(|e| compile_error(format!("{e:#}"))),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(LoadError::CompileTimeout(limit)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(LoadError::Compile(
            "the compiler stopped without an answer".into(),
        )),
    }
}

/// A compile error, told apart from the instance pool refusing a component whose tables,
/// memories or core instances cannot fit one slot (wasmtime checks that while it builds the
/// component, and says so with "exceeds the … limit" or "… in the pooling allocator").
fn compile_error(message: String) -> LoadError {
    let refused_by_pool = message.contains("pooling allocator")
        || (message.contains("exceeds the") && message.contains("limit"));
    if refused_by_pool {
        LoadError::TooBig(message)
    } else {
        LoadError::Compile(message)
    }
}

struct Cache {
    dir: std::path::PathBuf,
    key: Vec<u8>,
}

impl Cache {
    /// Opens (creating) the folder `0700` and its key. A folder another user owns, or that
    /// others may write to, is refused.
    fn open(dir: &Path) -> std::io::Result<Self> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let meta = std::fs::metadata(dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(std::io::Error::other(format!(
                "the folder belongs to user {}, not to this process's user {me}",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let key = Self::key(&dir.join(KEY_FILE))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The folder's key: read, or made from the OS's random source on first use. A new key
    /// is written whole to a private file, then linked into place (a link never replaces),
    /// so processes starting together agree on one key and never read half of one.
    fn key(path: &Path) -> std::io::Result<Vec<u8>> {
        let read = |path: &Path| -> std::io::Result<Vec<u8>> {
            let key = std::fs::read(path)?;
            if key.len() != 32 {
                return Err(std::io::Error::other(format!(
                    "{} is damaged ({} bytes); delete it to start a new cache",
                    path.display(),
                    key.len()
                )));
            }
            Ok(key)
        };
        match read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut key = vec![0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        write_private(&tmp, &[&key])?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
            Err(e) => Err(e),
        }
    }

    fn mac(&self, name: &str, artefact: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(artefact);
        mac
    }

    /// The cached component, if there is one whose digest proves this cache wrote it.
    fn load(&self, engine: &Engine, name: &str) -> Option<Component> {
        let path = self.dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read cached plugin artefact, recompiling: {e}");
                return None;
            }
        };
        let proven = bytes.len() > DIGEST && {
            let (digest, artefact) = bytes.split_at(DIGEST);
            self.mac(name, artefact).verify_slice(digest).is_ok()
        };
        if !proven {
            tracing::warn!(
                path = %path.display(),
                "cached plugin artefact fails its integrity check (changed since this host wrote it); not loaded, recompiling from the component"
            );
            return None;
        }
        // SAFETY: the bytes carry a digest under this cache's private key, so this host wrote
        // them with `Component::serialize` of an engine with the same compatibility hash (it
        // is in the name, which the digest covers).
        match unsafe { Component::deserialize(engine, &bytes[DIGEST..]) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cached plugin artefact is unusable, recompiling: {e:#}");
                None
            }
        }
    }

    fn store(&self, name: &str, component: &Component) -> std::io::Result<()> {
        let artefact = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let digest = self.mac(name, &artefact).finalize().into_bytes();
        // Write then rename: a reader never sees half an artefact.
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        write_private(&tmp, &[&digest, &artefact])?;
        std::fs::rename(&tmp, self.dir.join(name))
    }
}

/// Writes a file only this user may read (`0600`), flushed to disk.
fn write_private(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()
}
