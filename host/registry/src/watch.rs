//! Watching the plugins folder. File events are debounced per path: a file is looked at
//! once it has had no events for `debounce` (editors and `cp` write in pieces; an atomic
//! rename arrives as one event on the final name). Validation runs off the stage workers'
//! threads; the database's current versions are read every `sync_every`.

use crate::{Registry, RegistryError, is_plugin_file};
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the watcher's callback hands to the loop.
enum Seen {
    Paths(Vec<PathBuf>),
    /// Events were lost (queue overflow) or the watcher failed: look at the whole folder.
    Rescan(String),
}

impl Registry {
    /// Watches the folder until `cancel` fires. Returns once the watch is set up; the loop
    /// runs in the returned task.
    pub async fn watch(
        &self,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, RegistryError> {
        let dir = self.config().dir.clone();
        let shadow_dir = self.shadow_dir();
        std::fs::create_dir_all(&shadow_dir).map_err(|e| RegistryError::Watch {
            dir: shadow_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let seen = match event {
                    Ok(e) if e.need_rescan() => Seen::Rescan("the watcher lost events".into()),
                    Ok(e) => Seen::Paths(e.paths),
                    Err(e) => Seen::Rescan(e.to_string()),
                };
                let _ = tx.send(seen);
            })
            .map_err(|e| RegistryError::Watch {
                dir: dir.display().to_string(),
                message: e.to_string(),
            })?;
        for watched in [&dir, &shadow_dir] {
            watcher
                .watch(watched, RecursiveMode::NonRecursive)
                .map_err(|e| RegistryError::Watch {
                    dir: watched.display().to_string(),
                    message: e.to_string(),
                })?;
        }
        // Changes between start-up and now.
        self.rescan().await?;
        tracing::info!(dir = %dir.display(), "watching the plugins folder");

        let registry = self.clone();
        let debounce = self.config().debounce;
        let sync_every = self.config().sync_every;
        Ok(tokio::spawn(async move {
            let _watcher = watcher; // dropped (unwatched) when the loop ends
            let mut due: HashMap<PathBuf, Instant> = HashMap::new();
            let mut sync = tokio::time::interval(sync_every);
            sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let next = due.values().min().copied();
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    seen = rx.recv() => match seen {
                        Some(Seen::Paths(paths)) => {
                            for path in paths.into_iter().filter(|p| is_plugin_file(p) && (p.parent() == Some(dir.as_path()) || p.parent() == Some(shadow_dir.as_path()))) {
                                due.insert(path, Instant::now() + debounce);
                            }
                        }
                        Some(Seen::Rescan(why)) => {
                            tracing::warn!(dir = %dir.display(), "looking at the whole plugins folder again: {why}");
                            if let Err(e) = registry.rescan().await {
                                tracing::warn!("{e}");
                            }
                        }
                        None => break,
                    },
                    _ = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {
                        let now = Instant::now();
                        let ready: Vec<PathBuf> = due.iter().filter(|(_, t)| **t <= now).map(|(p, _)| p.clone()).collect();
                        for path in ready {
                            due.remove(&path);
                            registry.file_changed(&path).await;
                        }
                    }
                    _ = sync.tick() => {
                        if let Err(e) = registry.sync().await {
                            tracing::warn!("cannot read the current plugin versions: {e}");
                        }
                    }
                }
            }
        }))
    }
}
