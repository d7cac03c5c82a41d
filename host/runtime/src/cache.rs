//! The compile cache: precompiled components on disk, keyed by content hash and engine.

use crate::LoadError;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Returns the compiled component and whether it came from the cache.
///
/// A cached artefact that fails to load (corrupt, truncated) is recompiled and replaced;
/// a cache directory that cannot be written only costs a recompile next time.
pub fn compile(
    engine: &Engine,
    dir: Option<&Path>,
    content_hash: &str,
    engine_hash: &str,
    bytes: &[u8],
) -> Result<(Component, bool), LoadError> {
    let path = dir.map(|d| d.join(format!("{content_hash}-{engine_hash}.cwasm")));
    if let Some(path) = &path
        && path.exists()
    {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the file name) into flowhost's own cache directory.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => return Ok((component, true)),
            Err(e) => tracing::warn!(
                path = %path.display(),
                "cached plugin artefact is unusable, recompiling: {e:#}"
            ),
        }
    }
    let component =
        Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    if let Some(path) = &path
        && let Err(e) = store(path, &component)
    {
        tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
    }
    Ok((component, false))
}

fn store(path: &Path, component: &Component) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Write then rename: a reader never sees half an artefact.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artefact"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
