//! The versions folder: a copy of every version that has been current, as
//! `<versions>/<model>/<version>.wasm`, written once (temporary file, then rename).

use std::path::{Path, PathBuf};

/// Where a version's copy lives.
pub fn path(versions: &Path, model: &str, version: &str) -> PathBuf {
    versions.join(model).join(format!("{version}.wasm"))
}

/// Keeps a copy of a version's bytes (once); returns its absolute path.
pub fn keep(versions: &Path, model: &str, version: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let target = path(versions, model, version);
    let target = std::path::absolute(&target).unwrap_or(target);
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(target);
    }
    let dir = target.parent().unwrap_or(versions);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{version}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot keep {}: {e}", target.display())
    })?;
    Ok(target)
}
