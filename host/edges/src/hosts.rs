//! Which processes are at work on the database: the `serve` hosts that announced themselves
//! and every process holding a lease, with what each holds and since when. `GET /v1/hosts`
//! and `flowhost hosts --json` give the same objects.

use crate::models::when;
use flowhost_store::{LeaseRow, Store, StoreError, now_micros};
use serde_json::{Value, json};

/// One object per process, announced hosts first (oldest first), then processes that hold a
/// lease without having announced themselves (a `process` run). A host is `live` when it
/// announced itself within `live_within_micros`; a lease-holder is live while its lease has
/// not expired. `this` marks the asking host.
pub async fn hosts_json(
    store: &Store,
    this: Option<&str>,
    live_within_micros: i64,
) -> Result<Vec<Value>, StoreError> {
    let hosts = store.hosts().await?;
    let leases = store.leases().await?;
    let now = now_micros();
    let held = |id: &str| -> Vec<Value> {
        leases
            .iter()
            .filter(|l| l.process() == id && l.expires_micros >= now)
            .fold(Vec::<&LeaseRow>::new(), |mut held, l| {
                // A process's projection workers each hold claims: one entry, the oldest.
                match held
                    .iter_mut()
                    .find(|h| h.stage == l.stage && h.model == l.model)
                {
                    Some(h) if h.since_micros > l.since_micros => *h = l,
                    Some(_) => {}
                    None => held.push(l),
                }
                held
            })
            .into_iter()
            .map(|l| json!({"stage": l.stage, "model": l.model, "since": when(l.since_micros)}))
            .collect()
    };
    let mut out: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({
                "id": h.id,
                "listen": h.listen,
                "version": h.version,
                "started": when(h.started_micros),
                "last_seen": when(h.seen_micros),
                "live": h.seen_micros >= now - live_within_micros,
                "this": this == Some(h.id.as_str()),
                "leases": held(&h.id),
            })
        })
        .collect();
    let mut others: Vec<&str> = leases
        .iter()
        .filter(|l| l.expires_micros >= now && !hosts.iter().any(|h| h.id == l.process()))
        .map(|l| l.process())
        .collect();
    others.sort_unstable();
    others.dedup();
    for id in others {
        out.push(json!({
            "id": id,
            "listen": null,
            "version": null,
            "started": null,
            "last_seen": null,
            "live": true,
            "this": this == Some(id),
            "leases": held(id),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn claims_belong_to_their_process() {
        use flowhost_store::process_of;
        assert_eq!(process_of("h/1/abc/p0"), "h/1/abc");
        assert_eq!(process_of("h/1/abc"), "h/1/abc");
        assert_eq!(process_of("odd"), "odd");
    }
}
