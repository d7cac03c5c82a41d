//! `flowhost-bench swap`: how long from a plugin file landing in the watched folder to the
//! new version serving, through the real registry (notify, debounce, compile, validation,
//! archive, database switch, swap).

use anyhow::{Context, Result};
use flowhost_registry::{Registry, RegistryConfig};
use flowhost_runtime::{Runtime, RuntimeConfig};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A copy of a component with a custom section appended: the same code under a new content
/// hash, so that it is a new version the compile cache has never seen.
fn fresh_variant(bytes: &[u8], round: usize) -> Vec<u8> {
    let name = b"flowhost-bench";
    let payload = format!("round {round}");
    let mut body = Vec::new();
    leb(&mut body, name.len());
    body.extend_from_slice(name);
    body.extend_from_slice(payload.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    leb(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Writes `bytes` as `target` the way deploy tools do: beside it, then rename.
fn deliver(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = target.with_file_name(".incoming.wasm.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, target)?;
    Ok(())
}

pub async fn swap(v1: &Path, v2: &Path, rounds: usize, as_json: bool) -> Result<ExitCode> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let (one, two) = (read(v1)?, read(v2)?);
    let dir = std::env::temp_dir().join(format!("flowhost-bench-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let target = plugins.join("device.wasm");
    std::fs::write(&target, &one)?;
    let store =
        flowhost::app::open_store(&format!("sqlite://{}", dir.join("bench.db").display())).await?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        ..RuntimeConfig::default()
    })?;
    let config = RegistryConfig::new(&plugins);
    let debounce = config.debounce;
    let registry = Registry::open(store.clone(), runtime, config).await?;
    let cancel = CancellationToken::new();
    let watcher = registry.watch(cancel.clone()).await?;

    // cold: a version never seen (compiled); cached: a version compiled before.
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    let mut timeouts = 0;
    for round in 0..rounds {
        for (kind, bytes) in [
            (
                "cold",
                fresh_variant(if round % 2 == 0 { &two } else { &one }, round),
            ),
            (
                "cached",
                if round % 2 == 0 {
                    one.clone()
                } else {
                    two.clone()
                },
            ),
        ] {
            let want = flowhost_runtime::content_hash(&bytes);
            let started = Instant::now();
            deliver(&target, &bytes)?;
            if wait_serving(&registry, &want, Duration::from_secs(30)).await {
                let took = started.elapsed();
                if kind == "cold" {
                    cold.push(took);
                } else {
                    cached.push(took);
                }
            } else {
                timeouts += 1;
            }
        }
    }
    cancel.cancel();
    let _ = watcher.await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        (
            v.len(),
            ms(at(0.5)),
            ms(at(0.9)),
            ms(v.last().copied().unwrap_or_default()),
        )
    };
    let (cn, c50, c90, cmax) = stats(&mut cold);
    let (hn, h50, h90, hmax) = stats(&mut cached);
    if as_json {
        println!(
            "{}",
            json!({
                "debounce_ms": debounce.as_millis() as u64,
                "cold": {"swaps": cn, "p50_ms": c50, "p90_ms": c90, "max_ms": cmax},
                "cached": {"swaps": hn, "p50_ms": h50, "p90_ms": h90, "max_ms": hmax},
                "timeouts": timeouts,
            })
        );
    } else {
        println!(
            "swap latency: file renamed into the folder → new version serving (debounce {} ms)",
            debounce.as_millis()
        );
        println!(
            "{:<32} {:>6} {:>9} {:>9} {:>9}",
            "", "swaps", "p50 ms", "p90 ms", "max ms"
        );
        println!(
            "{:<32} {cn:>6} {c50:>9.1} {c90:>9.1} {cmax:>9.1}",
            "new version (compiled)"
        );
        println!(
            "{:<32} {hn:>6} {h50:>9.1} {h90:>9.1} {hmax:>9.1}",
            "earlier version (cached artefact)"
        );
        if timeouts > 0 {
            println!("{timeouts} swaps did not serve within 30 s");
        }
    }
    Ok(if timeouts == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls the plugin set (what the engine reads per batch) until `version` serves.
async fn wait_serving(registry: &Registry, version: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if registry
            .plugins()
            .get("device")
            .is_some_and(|p| p.version() == version)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}
