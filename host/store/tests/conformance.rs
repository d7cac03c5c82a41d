//! The store conformance suite: every case runs on a fresh SQLite file and on a fresh
//! PostgreSQL database (created per test, dropped after). Under `CI=true` a PostgreSQL that
//! cannot be reached fails the suite.

use flowhost_core::intake::{IntakeLimits, IntakeRecord, parse_line_within};
use flowhost_core::{ParentKey, ParentLink, ParkReason};
use flowhost_store::*;
use std::future::Future;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A PostgreSQL database that exists for one test.
struct PgScratch {
    name: String,
}

impl PgScratch {
    async fn create() -> Option<(PgScratch, String)> {
        use sqlx::Connection;
        let mut admin = match sqlx::PgConnection::connect(PG_ADMIN).await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL at {PG_ADMIN} is unreachable under CI: {e}"
                );
                eprintln!("PostgreSQL unreachable ({e}); running SQLite only");
                return None;
            }
        };
        let name = format!("flowhost_t_{}", uuid_like());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create scratch database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        Some((PgScratch { name }, url))
    }

    async fn drop_db(self) {
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a case on SQLite, then on PostgreSQL.
async fn on_both<F, Fut>(case: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::open(&url).await.expect("open sqlite");
    case(store.clone()).await;
    store.close().await;

    if let Some((scratch, url)) = PgScratch::create().await {
        let store = Store::open(&url).await.expect("open postgres");
        case(store.clone()).await;
        store.close().await;
        scratch.drop_db().await;
    }
}

fn record(model: &str, system: &str, id: &str, payload: &str) -> IntakeRecord {
    let line = format!(
        r#"{{"model":"{model}","source":{{"system":"{system}"}},"id":"{id}","occurred_at":"2026-03-01T10:00:00Z","payload":{payload}}}"#
    );
    // The store must round-trip whatever an operator lets in: payloads over the default
    // intake limit included.
    let limits = IntakeLimits {
        max_payload_bytes: 64 << 20,
        ..IntakeLimits::default()
    };
    parse_line_within(line.as_bytes(), chrono::Utc::now(), &limits).unwrap()
}

fn lease(stage: Stage, model: &str, holder: &str) -> Lease {
    Lease {
        stage,
        model: model.into(),
        holder: holder.into(),
    }
}

const TTL: i64 = 60_000_000;

/// Writes views the way projection does: marks their references dirty, claims the marks
/// and commits the views with them.
async fn project(s: &Store, views: &[ViewRow]) -> Result<usize, CommitError> {
    let model = views[0].model.clone();
    let al = lease(Stage::Associate, &model, "h");
    assert!(s.acquire_lease(&al, TTL).await.unwrap());
    s.commit_association(
        &al,
        &AssociationOutcome {
            model: model.clone(),
            dirty: views.iter().map(|v| v.reference.clone()).collect(),
            stamp: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pl = lease(Stage::Project, &model, "h/p0");
    let batch = s.claim_dirty(&pl, 1000, TTL).await.unwrap();
    s.commit_projection(&pl, views, &batch.seen, &[]).await
}

#[tokio::test]
async fn intake_is_idempotent() {
    on_both(|s| async move {
        let out = s
            .append(&[
                record("device", "bms", "D-1", r#"{"serial":"a","n":1}"#),
                record("device", "bms", "D-2", r#"{"serial":"b"}"#),
                record("device", "bms", "D-1", r#"{"n":1,"serial":"a"}"#),
            ])
            .await
            .unwrap();
        assert!(matches!(out[0], Appended::Accepted(_)));
        assert!(matches!(out[1], Appended::Accepted(_)));
        assert_eq!(out[2], Appended::Duplicate, "same payload as JSON value");
        let again = s
            .append(&[
                record("device", "bms", "D-2", r#"{"serial":"b"}"#),
                record("device", "bms", "D-1", r#"{"serial":"changed"}"#),
            ])
            .await
            .unwrap();
        assert_eq!(again[0], Appended::Duplicate);
        assert!(
            matches!(again[1], Appended::Accepted(_)),
            "newer observation"
        );
        let counts = s.counts().await.unwrap();
        assert_eq!(counts.intake, 3);
        assert_eq!(counts.queued, vec![("device".to_string(), 3)]);
    })
    .await;
}

#[tokio::test]
async fn appends_move_a_position_in_their_transaction_and_only_from_where_it_was_read() {
    on_both(|s| async move {
        let name = "nats-intake:T";
        assert_eq!(s.position(name).await.unwrap(), 0, "never moved");
        let at = |from, to| Advance {
            name: name.into(),
            from,
            to,
        };
        let out = s
            .append_at(&[record("device", "bms", "P-1", "{}")], Some(&at(0, 7)))
            .await
            .unwrap();
        assert!(matches!(out[0], Appended::Accepted(_)));
        assert_eq!(s.position(name).await.unwrap(), 7);
        // A writer that read an older position appends nothing and moves nothing.
        let stale = s
            .append_at(&[record("device", "bms", "P-2", "{}")], Some(&at(0, 9)))
            .await;
        assert!(
            matches!(stale, Err(StoreError::PositionMoved { expected: 0, .. })),
            "{stale:?}"
        );
        let stale = s
            .append_at(&[record("device", "bms", "P-2", "{}")], Some(&at(5, 9)))
            .await;
        assert!(matches!(stale, Err(StoreError::PositionMoved { .. })));
        assert_eq!(s.counts().await.unwrap().intake, 1, "P-2 was not appended");
        // Duplicates only: the position still moves.
        let dup = s
            .append_at(&[record("device", "bms", "P-1", "{}")], Some(&at(7, 8)))
            .await
            .unwrap();
        assert_eq!(dup, vec![Appended::Duplicate]);
        assert_eq!(s.position(name).await.unwrap(), 8);
        // Nothing to append at all: the position moves alone.
        s.append_at(&[], Some(&at(8, 10))).await.unwrap();
        assert!(s.advance(&at(10, 12)).await.unwrap());
        assert!(!s.advance(&at(10, 14)).await.unwrap(), "read at 10, now 12");
        assert_eq!(s.position(name).await.unwrap(), 12);
        assert_eq!(
            s.position("other").await.unwrap(),
            0,
            "positions are by name"
        );

        // Duties: one holder at a time, listed with the leases, free once released.
        let duty = |holder: &str| Duty {
            kind: "nats-intake",
            key: "T".into(),
            holder: holder.into(),
        };
        assert!(s.acquire_duty(&duty("a"), TTL).await.unwrap());
        assert!(!s.acquire_duty(&duty("b"), TTL).await.unwrap());
        assert!(s.acquire_duty(&duty("a"), TTL).await.unwrap(), "renewed");
        let leases = s.leases().await.unwrap();
        assert!(
            leases
                .iter()
                .any(|l| l.stage == "nats-intake" && l.model == "T" && l.holder == "a")
        );
        s.release_duty(&duty("a")).await.unwrap();
        assert!(s.acquire_duty(&duty("b"), TTL).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn pending_is_in_intake_order_and_round_trips_payloads() {
    on_both(|s| async move {
        let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(2 << 20));
        let records = [
            record(
                "device",
                "bms",
                "Ü-1",
                r#"{"name":"Kältemaschine ❄ 冷却器"}"#,
            ),
            record("device", "bms", "D-2", &big),
            record("sensor", "bms", "S-1", r#"{"code":"T1"}"#),
        ];
        s.append(&records).await.unwrap();
        let pending = s.pending("device", 10).await.unwrap();
        assert_eq!(pending.len(), 2);
        assert!(pending[0].record.seq < pending[1].record.seq);
        assert_eq!(pending[0].record.external_id, "Ü-1");
        assert_eq!(pending[0].record.payload, records[0].payload);
        assert_eq!(pending[1].record.payload.len(), big.len());
        assert_eq!(s.pending("sensor", 10).await.unwrap().len(), 1);
        assert_eq!(s.pending("device", 1).await.unwrap().len(), 1, "limit");
    })
    .await;
}

#[tokio::test]
async fn leases_are_exclusive_until_expiry() {
    on_both(|s| async move {
        let a = lease(Stage::Associate, "device", "host-a");
        let b = lease(Stage::Associate, "device", "host-b");
        assert!(s.acquire_lease(&a, TTL).await.unwrap());
        assert!(s.acquire_lease(&a, TTL).await.unwrap(), "renewal");
        assert!(!s.acquire_lease(&b, TTL).await.unwrap());
        assert!(
            s.acquire_lease(&lease(Stage::Project, "device", "host-b"), TTL)
                .await
                .unwrap(),
            "stages lease separately"
        );
        assert_eq!(
            s.lease_holder(Stage::Associate, "device")
                .await
                .unwrap()
                .as_deref(),
            Some("host-a")
        );
        // a expires (renewed with a negative time to live), b takes over
        assert!(s.acquire_lease(&a, -1).await.unwrap());
        assert!(s.acquire_lease(&b, TTL).await.unwrap());
        let outcome = AssociationOutcome {
            model: "device".into(),
            ..Default::default()
        };
        assert!(matches!(
            s.commit_association(&a, &outcome).await,
            Err(CommitError::LeaseLost { .. })
        ));
        assert!(s.take_over_lease(&a, "host-b", TTL).await.unwrap());
        assert!(
            !s.take_over_lease(&b, "host-b", TTL).await.unwrap(),
            "no longer b's"
        );
        s.release_lease(&a).await.unwrap();
        assert!(s.acquire_lease(&b, TTL).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn association_commits_everything_and_heals() {
    on_both(|s| async move {
        s.append(&[
            record("sensor", "bms", "S-1", r#"{"code":"T1","device_id":"D-7"}"#),
            record("sensor", "bms", "S-2", r#"{"code":"T2"}"#),
        ])
        .await
        .unwrap();
        let sl = lease(Stage::Associate, "sensor", "h");
        assert!(s.acquire_lease(&sl, TTL).await.unwrap());
        let pending = s.pending("sensor", 10).await.unwrap();
        let awaited = ParentKey {
            model: "device".into(),
            key: "src:bms:D-7".into(),
        };
        let summary = s
            .commit_association(
                &sl,
                &AssociationOutcome {
                    model: "sensor".into(),
                    plugin_version: "v1".into(),
                    now_micros: 1,
                    done: pending.iter().map(|p| p.pos).collect(),
                    claims: vec![
                        ("sensor:T2".into(), "ref-s2".into()),
                        ("src:bms:S-2".into(), "ref-s2".into()),
                    ],
                    keyed: vec![KeyedRow {
                        seq: pending[1].record.seq,
                        reference: Some("ref-s2".into()),
                        parents: vec![],
                    }],
                    parked: vec![ParkRow {
                        seq: pending[0].record.seq,
                        reason: ParkReason::ParentNotFound,
                        details: "parent device key src:bms:D-7 not found".into(),
                        awaiting: Some(awaited.clone()),
                        attempts: 1,
                        first_micros: 1,
                    }],
                    dirty: vec!["ref-s2".into()],
                    stamp: pending[1].record.seq,
                },
            )
            .await
            .unwrap();
        assert_eq!(summary.healed, 0);
        assert!(s.pending("sensor", 10).await.unwrap().is_empty());
        let owners = s
            .lookup_keys("sensor", &["sensor:T2".into(), "sensor:T9".into()])
            .await
            .unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners["sensor:T2"], "ref-s2");
        let parked = s.parked(&ParkedFilter::default(), 0, 10).await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].reason, "PARENT_NOT_FOUND");
        assert_eq!(parked[0].awaiting.as_ref(), Some(&awaited));

        // A device batch claims the awaited key: the sensor is re-queued, attempts kept.
        s.append(&[record("device", "bms", "D-7", r#"{"serial":"S"}"#)])
            .await
            .unwrap();
        let dl = lease(Stage::Associate, "device", "h");
        assert!(s.acquire_lease(&dl, TTL).await.unwrap());
        let dp = s.pending("device", 10).await.unwrap();
        let summary = s
            .commit_association(
                &dl,
                &AssociationOutcome {
                    model: "device".into(),
                    plugin_version: "v1".into(),
                    now_micros: 2,
                    done: vec![dp[0].pos],
                    claims: vec![("src:bms:D-7".into(), "ref-d7".into())],
                    keyed: vec![KeyedRow {
                        seq: dp[0].record.seq,
                        reference: Some("ref-d7".into()),
                        parents: vec![],
                    }],
                    dirty: vec!["ref-d7".into()],
                    stamp: dp[0].record.seq,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(summary.healed, 1);
        let healed = s.pending("sensor", 10).await.unwrap();
        assert_eq!(healed.len(), 1);
        assert_eq!(healed[0].record.external_id, "S-1");
        assert_eq!(healed[0].attempts, 1);
        assert!(
            s.parked(&ParkedFilter::default(), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let parents = s
            .lookup_parents(std::slice::from_ref(&awaited))
            .await
            .unwrap();
        assert_eq!(parents[&awaited], "ref-d7");
    })
    .await;
}

#[tokio::test]
async fn claims_are_all_or_nothing_under_conflict() {
    on_both(|s| async move {
        s.append(&[record("device", "bms", "A", r#"{}"#)])
            .await
            .unwrap();
        let l = lease(Stage::Associate, "device", "h");
        assert!(s.acquire_lease(&l, TTL).await.unwrap());
        let p = s.pending("device", 10).await.unwrap();
        let first = AssociationOutcome {
            model: "device".into(),
            claims: vec![("serial:X".into(), "ref-1".into())],
            ..Default::default()
        };
        s.commit_association(&l, &first).await.unwrap();
        let second = AssociationOutcome {
            model: "device".into(),
            done: vec![p[0].pos],
            claims: vec![
                ("serial:NEW".into(), "ref-2".into()),
                ("serial:X".into(), "ref-2".into()),
            ],
            keyed: vec![KeyedRow {
                seq: p[0].record.seq,
                reference: Some("ref-2".into()),
                parents: vec![],
            }],
            ..Default::default()
        };
        match s.commit_association(&l, &second).await {
            Err(CommitError::KeyConflict(keys)) => assert_eq!(keys, vec!["serial:X".to_string()]),
            other => panic!("expected a key conflict, got {other:?}"),
        }
        // Nothing of the failed batch was written.
        let owners = s
            .lookup_keys("device", &["serial:NEW".into(), "serial:X".into()])
            .await
            .unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners["serial:X"], "ref-1");
        assert_eq!(s.pending("device", 10).await.unwrap().len(), 1);
        assert!(s.counts().await.unwrap().keyed.is_empty());
    })
    .await;
}

#[tokio::test]
async fn large_batches_are_chunked_and_lookups_stay_batched() {
    on_both(|s| async move {
        let l = lease(Stage::Associate, "device", "h");
        assert!(s.acquire_lease(&l, TTL).await.unwrap());
        let claims: Vec<(String, String)> = (0..40_000)
            .map(|i| (format!("serial:{i:05}"), format!("ref-{}", i / 2)))
            .collect();
        s.commit_association(
            &l,
            &AssociationOutcome {
                model: "device".into(),
                claims: claims.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let keys: Vec<String> = claims.iter().map(|c| c.0.clone()).collect();
        let owners = s.lookup_keys("device", &keys).await.unwrap();
        assert_eq!(owners.len(), 40_000);
        assert_eq!(owners["serial:39999"], "ref-19999");
        let parents: Vec<ParentKey> = keys
            .iter()
            .map(|k| ParentKey {
                model: "device".into(),
                key: k.clone(),
            })
            .collect();
        assert_eq!(s.lookup_parents(&parents).await.unwrap().len(), 40_000);

        let before = s.statements();
        s.lookup_keys("device", &keys[..1000]).await.unwrap();
        assert_eq!(s.statements() - before, 1, "1,000 keys: one statement");

        let many: Vec<IntakeRecord> = (0..10_000)
            .map(|i| record("device", "bms", &format!("D-{i}"), r#"{"serial":"s"}"#))
            .collect();
        let out = s.append(&many).await.unwrap();
        assert!(out.iter().all(|a| matches!(a, Appended::Accepted(_))));
    })
    .await;
}

#[tokio::test]
async fn projection_reads_groups_writes_views_and_keeps_new_marks() {
    on_both(|s| async move {
        s.append(&[
            record("device", "bms", "D-1", r#"{"serial":"a"}"#),
            record("device", "oem", "X-1", r#"{"serial":"a"}"#),
            record("device", "bms", "D-2", r#"{"serial":"b"}"#),
        ])
        .await
        .unwrap();
        let al = lease(Stage::Associate, "device", "h");
        assert!(s.acquire_lease(&al, TTL).await.unwrap());
        let p = s.pending("device", 10).await.unwrap();
        let keyed = |i: usize, r: &str| KeyedRow {
            seq: p[i].record.seq,
            reference: Some(r.into()),
            parents: vec![ParentLink {
                model: "site".into(),
                reference: "site-1".into(),
            }],
        };
        s.commit_association(
            &al,
            &AssociationOutcome {
                model: "device".into(),
                done: p.iter().map(|x| x.pos).collect(),
                keyed: vec![keyed(0, "ref-a"), keyed(1, "ref-a"), keyed(2, "ref-b")],
                dirty: vec!["ref-b".into(), "ref-a".into()],
                stamp: 7,
                ..Default::default()
            },
        )
        .await
        .unwrap();

        let pl = lease(Stage::Project, "device", "h/p0");
        let batch = s.claim_dirty(&pl, 10, TTL).await.unwrap();
        assert_eq!(batch.groups.len(), 2);
        // Claimed: another worker finds nothing to take.
        let other = lease(Stage::Project, "device", "h/p1");
        assert!(
            s.claim_dirty(&other, 10, TTL)
                .await
                .unwrap()
                .seen
                .is_empty()
        );
        let a = batch
            .groups
            .iter()
            .find(|g| g.reference == "ref-a")
            .unwrap();
        assert_eq!(a.records.len(), 2);
        assert!(a.records[0].record.seq < a.records[1].record.seq);
        assert_eq!(a.records[0].parents[0].reference, "site-1");

        // ref-a is marked again while the projection runs: it must stay dirty.
        s.commit_association(
            &al,
            &AssociationOutcome {
                model: "device".into(),
                dirty: vec!["ref-a".into()],
                stamp: 8,
                ..Default::default()
            },
        )
        .await
        .unwrap();

        let view = |r: &str, first: i64| ViewRow {
            reference: r.into(),
            model: "device".into(),
            first_seq: first,
            canonical: format!(r#"{{"r":["{r}"]}}"#),
            root: "{}".into(),
            lineage: "{}".into(),
            parents: "{}".into(),
            plugin_version: "v1".into(),
        };
        // A worker that never claimed them writes nothing.
        let written = s
            .commit_projection(&other, &[view("ref-b", 3)], &batch.seen, &[])
            .await
            .unwrap();
        assert_eq!(written, 0);
        let written = s
            .commit_projection(&pl, &[view("ref-b", 3), view("ref-a", 1)], &batch.seen, &[])
            .await
            .unwrap();
        assert_eq!(written, 2);
        // ref-a, marked again, is free for any worker at once.
        let still = s.claim_dirty(&other, 10, TTL).await.unwrap();
        assert_eq!(still.seen, vec![("ref-a".to_string(), 8)]);
        // A claim that lapsed is taken by another worker; the first one's late commit then
        // writes nothing over the second one's view.
        let lapsed = s.claim_dirty(&pl, 10, -1).await.unwrap();
        assert!(lapsed.seen.is_empty(), "held by the other worker");
        assert_eq!(s.release_claims(&["h/p1".to_string()]).await.unwrap(), 1);
        let lapsed = s.claim_dirty(&pl, 10, -1).await.unwrap();
        assert_eq!(lapsed.seen.len(), 1);
        let taken = s.claim_dirty(&other, 10, TTL).await.unwrap();
        assert_eq!(taken.seen, lapsed.seen);
        let late = s
            .commit_projection(&pl, &[view("ref-a", 99)], &lapsed.seen, &[])
            .await
            .unwrap();
        assert_eq!(late, 0, "a lapsed claim writes nothing");
        assert_eq!(
            s.commit_projection(&other, &[view("ref-a", 1)], &taken.seen, &[])
                .await
                .unwrap(),
            1
        );
        assert!(s.claim_dirty(&pl, 10, TTL).await.unwrap().seen.is_empty());

        let page = s.views("device", None, 1).await.unwrap();
        assert_eq!(page[0].reference, "ref-a", "ordered by first intake");
        let cursor = Cursor {
            first_seq: page[0].first_seq,
            reference: page[0].reference.clone(),
        };
        let next = s.views("device", Some(&cursor), 10).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].reference, "ref-b");
        assert_eq!(next[0].canonical, r#"{"r":["ref-b"]}"#);
    })
    .await;
}

#[tokio::test]
async fn parked_records_are_listed_filtered_and_requeued() {
    on_both(|s| async move {
        s.append(&[
            record("device", "bms", "A", r#"{}"#),
            record("device", "bms", "B", r#"{}"#),
            record("sensor", "bms", "C", r#"{}"#),
        ])
        .await
        .unwrap();
        for model in ["device", "sensor"] {
            let l = lease(Stage::Associate, model, "h");
            assert!(s.acquire_lease(&l, TTL).await.unwrap());
            let p = s.pending(model, 10).await.unwrap();
            let parked = p
                .iter()
                .map(|x| ParkRow {
                    seq: x.record.seq,
                    reason: if x.record.external_id == "B" {
                        ParkReason::KeyCollision
                    } else {
                        ParkReason::Rejected
                    },
                    details: "d".into(),
                    awaiting: None,
                    attempts: 1,
                    first_micros: 5,
                })
                .collect();
            s.commit_association(
                &l,
                &AssociationOutcome {
                    model: model.into(),
                    done: p.iter().map(|x| x.pos).collect(),
                    parked,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
        let all = s.parked(&ParkedFilter::default(), 0, 10).await.unwrap();
        assert_eq!(all.len(), 3);
        let rejected_devices = ParkedFilter {
            model: Some("device".into()),
            reason: Some(ParkReason::Rejected),
        };
        let some = s.parked(&rejected_devices, 0, 10).await.unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].record.external_id, "A");
        assert_eq!(
            s.parked(&ParkedFilter::default(), all[0].record.seq, 10)
                .await
                .unwrap()
                .len(),
            2
        );

        assert_eq!(s.requeue(&rejected_devices).await.unwrap(), 1);
        let pending = s.pending("device", 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].attempts, 1);
        assert_eq!(pending[0].first_parked_micros, Some(5));
        assert_eq!(
            s.parked(&ParkedFilter::default(), 0, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        let counts = s.counts().await.unwrap();
        assert_eq!(
            counts.parked,
            vec![
                ("device".to_string(), "KEY_COLLISION".to_string(), 1),
                ("sensor".to_string(), "REJECTED".to_string(), 1)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn values_are_listed_under_parents_by_first_intake_then_time() {
    on_both(|s| async move {
        let lines = [
            ("R-1", "2026-03-01T10:05:00Z", "p2"),
            ("R-2", "2026-03-01T10:01:00Z", "p1"),
            ("R-3", "2026-03-01T10:00:00Z", "p2"),
            ("R-4", "2026-03-01T10:09:00Z", "p1"),
        ];
        let records: Vec<IntakeRecord> = lines
            .iter()
            .map(|(id, at, _)| {
                let mut r = record("reading", "bms", id, r#"{"value":1}"#);
                let t = chrono::DateTime::parse_from_rfc3339(at).unwrap();
                r.occurred_at = at.to_string();
                r.occurred_micros = t.timestamp_micros();
                r
            })
            .collect();
        s.append(&records).await.unwrap();
        let l = lease(Stage::Associate, "reading", "h");
        assert!(s.acquire_lease(&l, TTL).await.unwrap());
        let p = s.pending("reading", 10).await.unwrap();
        let keyed = p
            .iter()
            .zip(lines)
            .map(|(x, (_, _, parent))| KeyedRow {
                seq: x.record.seq,
                reference: None,
                parents: vec![ParentLink {
                    model: "sensor".into(),
                    reference: parent.into(),
                }],
            })
            .collect();
        s.commit_association(
            &l,
            &AssociationOutcome {
                model: "reading".into(),
                done: p.iter().map(|x| x.pos).collect(),
                keyed,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // Parent p1 was first seen before p2.
        let view = |r: &str, first: i64| ViewRow {
            reference: r.into(),
            model: "sensor".into(),
            first_seq: first,
            canonical: "{}".into(),
            root: "{}".into(),
            lineage: "{}".into(),
            parents: "{}".into(),
            plugin_version: "v1".into(),
        };
        project(&s, &[view("p1", 1), view("p2", 2)]).await.unwrap();
        let values = s.values("reading", 0, 10).await.unwrap();
        let ids: Vec<&str> = values
            .iter()
            .map(|v| v.record.external_id.as_str())
            .collect();
        assert_eq!(ids, ["R-2", "R-4", "R-3", "R-1"]);
        assert_eq!(values[0].parent_model, "sensor");
        assert_eq!(s.values("reading", 3, 10).await.unwrap().len(), 1, "paging");
    })
    .await;
}

#[tokio::test]
async fn bad_urls_and_unreachable_databases_give_one_clear_error() {
    let err = Store::open("mysql://x").await.err().unwrap().to_string();
    assert!(
        err.contains("unsupported database URL 'mysql://x'"),
        "{err}"
    );
    let err = Store::open("postgres://postgres@127.0.0.1:1/none")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("cannot open the database postgres://postgres@127.0.0.1:1/none"),
        "{err}"
    );
    let err = Store::open("sqlite:///nonexistent-dir/x/y.db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("cannot open the database sqlite:///nonexistent-dir/x/y.db"),
        "{err}"
    );
}

#[tokio::test]
async fn a_record_parked_for_a_key_claimed_meanwhile_is_requeued_at_once() {
    on_both(|s| async move {
        // The device key exists already (claimed by a batch that committed after the
        // sensor batch looked its parents up).
        let dl = lease(Stage::Associate, "device", "h");
        assert!(s.acquire_lease(&dl, TTL).await.unwrap());
        s.commit_association(
            &dl,
            &AssociationOutcome {
                model: "device".into(),
                claims: vec![("src:bms:D-1".into(), "ref-d".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        s.append(&[record("sensor", "bms", "S-1", r#"{"device_id":"D-1"}"#)])
            .await
            .unwrap();
        let sl = lease(Stage::Associate, "sensor", "h");
        assert!(s.acquire_lease(&sl, TTL).await.unwrap());
        let p = s.pending("sensor", 10).await.unwrap();
        let summary = s
            .commit_association(
                &sl,
                &AssociationOutcome {
                    model: "sensor".into(),
                    done: vec![p[0].pos],
                    parked: vec![ParkRow {
                        seq: p[0].record.seq,
                        reason: ParkReason::ParentNotFound,
                        details: "stale lookup".into(),
                        awaiting: Some(ParentKey {
                            model: "device".into(),
                            key: "src:bms:D-1".into(),
                        }),
                        attempts: 1,
                        first_micros: 1,
                    }],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(summary.healed, 1);
        let again = s.pending("sensor", 10).await.unwrap();
        assert_eq!(again.len(), 1, "back in the queue, not lost");
        assert!(again[0].pos > p[0].pos);
        assert!(
            s.parked(&ParkedFilter::default(), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn plugin_versions_switch_mark_stale_views_and_retry_failures() {
    on_both(|s| async move {
        let change = |version: &str, source: VersionSource| CurrentChange {
            model: "device".into(),
            kind: "entity".into(),
            version: version.into(),
            source,
            folder_version: None,
        };
        for (i, v) in ["v1", "v2"].into_iter().enumerate() {
            s.record_version(&PluginVersionRow {
                model: "device".into(),
                version: v.into(),
                file: format!("plugins/device-{v}.wasm"),
                archive: format!("/versions/device/{v}.wasm"),
                description: "{}".into(),
                first_loaded_micros: i as i64,
                last_current_micros: i as i64,
            })
            .await
            .unwrap();
        }
        let first = s
            .set_current(&change("v1", VersionSource::Folder))
            .await
            .unwrap();
        assert!(first.changed);
        let again = s
            .set_current(&change("v1", VersionSource::Folder))
            .await
            .unwrap();
        assert!(!again.changed, "the same version again changes nothing");

        // Two views by v1, one of which will fail to project under v2.
        let al = lease(Stage::Associate, "device", "h");
        assert!(s.acquire_lease(&al, TTL).await.unwrap());
        s.append(&[record("device", "bms", "P-1", r#"{"serial":"x"}"#)])
            .await
            .unwrap();
        let pending = s.pending("device", 10).await.unwrap();
        s.commit_association(
            &al,
            &AssociationOutcome {
                model: "device".into(),
                plugin_version: "v1".into(),
                done: pending.iter().map(|p| p.pos).collect(),
                parked: vec![ParkRow {
                    seq: pending[0].record.seq,
                    reason: ParkReason::PluginFailed,
                    details: "trap".into(),
                    awaiting: None,
                    attempts: 1,
                    first_micros: 1,
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let pl = lease(Stage::Project, "device", "h/p0");
        let view = |r: &str, version: &str| ViewRow {
            reference: r.into(),
            model: "device".into(),
            first_seq: 1,
            canonical: "{}".into(),
            root: "{}".into(),
            lineage: "{}".into(),
            parents: "{}".into(),
            plugin_version: version.into(),
        };
        project(&s, &[view("r1", "v1"), view("r2", "v1")])
            .await
            .unwrap();
        let p = s.reprojection("device", "v1").await.unwrap();
        assert_eq!((p.current, p.total, p.failed), (2, 2, 0));

        // v2 becomes current: both views are stale, the failed record goes back to the queue.
        let switched = s
            .set_current(&change("v2", VersionSource::Folder))
            .await
            .unwrap();
        assert_eq!(
            (switched.changed, switched.marked, switched.requeued),
            (true, 2, 1)
        );
        assert_eq!(s.pending("device", 10).await.unwrap().len(), 1);
        let batch = s.claim_dirty(&pl, 10, TTL).await.unwrap();
        assert_eq!(batch.seen.len(), 2);
        assert!(
            batch
                .seen
                .iter()
                .all(|(_, stamp)| *stamp >= REPROJECT_STAMP)
        );

        // r1 projects under v2; r2 fails and keeps its mark with the error, skipped.
        let r2 = batch.seen.iter().find(|(r, _)| r == "r2").unwrap().clone();
        let r1 = batch.seen.iter().find(|(r, _)| r == "r1").unwrap().clone();
        s.commit_projection(
            &pl,
            &[view("r1", "v2")],
            &[r1],
            &[ProjectFailure {
                reference: r2.0.clone(),
                stamp: r2.1,
                error: "bad json".into(),
            }],
        )
        .await
        .unwrap();
        assert!(s.claim_dirty(&pl, 10, TTL).await.unwrap().seen.is_empty());
        let p = s.reprojection("device", "v2").await.unwrap();
        assert_eq!((p.current, p.total, p.failed), (1, 2, 1));

        // A batch that ran on the old version cannot commit after the switch.
        let late = s
            .commit_projection(&pl, &[view("r1", "v1")], &[], &[])
            .await;
        assert!(
            matches!(&late, Err(CommitError::VersionChanged { current, .. }) if current == "v2"),
            "{late:?}"
        );
        let late = s
            .commit_association(
                &al,
                &AssociationOutcome {
                    model: "device".into(),
                    plugin_version: "v1".into(),
                    ..Default::default()
                },
            )
            .await;
        assert!(
            matches!(late, Err(CommitError::VersionChanged { .. })),
            "{late:?}"
        );
        // Marking stale views again is idempotent and clears a failure's error.
        assert_eq!(s.mark_stale_views("device", "v2").await.unwrap(), 1);
        let seen = s.claim_dirty(&pl, 10, TTL).await.unwrap().seen;
        assert_eq!(
            seen.len(),
            1,
            "r2's error is cleared by a new mark: {seen:?}"
        );

        // Rolling back: the state says so and the versions keep their order.
        s.set_current(&CurrentChange {
            folder_version: Some("v2".into()),
            ..change("v1", VersionSource::Rollback)
        })
        .await
        .unwrap();
        let state = s.plugin_states().await.unwrap();
        assert_eq!(state.len(), 1);
        assert_eq!(state[0].version, "v1");
        assert_eq!(state[0].source, VersionSource::Rollback);
        assert_eq!(state[0].folder_version.as_deref(), Some("v2"));
        let versions = s.plugin_versions(Some("device")).await.unwrap();
        assert_eq!(versions[0].version, "v1", "most recently current first");
        s.set_plugin_state("device", "paused: gone").await.unwrap();
        assert_eq!(s.plugin_states().await.unwrap()[0].state, "paused: gone");

        // Files of the folder: the last outcome of each.
        let file = |error: Option<&str>| PluginFileRow {
            file: "plugins/device.wasm".into(),
            model: None,
            version: None,
            error: error.map(str::to_string),
            checked_micros: 5,
        };
        s.record_file(&PluginFileRow {
            model: Some("device".into()),
            version: Some("v2".into()),
            ..file(None)
        })
        .await
        .unwrap();
        s.record_file(&file(Some("load: not a component")))
            .await
            .unwrap();
        let files = s.plugin_files().await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].model.as_deref(),
            Some("device"),
            "the model is kept"
        );
        assert_eq!(files[0].error.as_deref(), Some("load: not a component"));
        s.forget_file("plugins/device.wasm").await.unwrap();
        assert!(s.plugin_files().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn shadow_runs_count_keep_a_bounded_number_of_differences_and_end() {
    use flowhost_store::{SHADOW_DIFFS_KEPT, ShadowCounts, ShadowDiff, ShadowRun};
    on_both(|s| async move {
        let model = format!("m{}", uuid_like().replace('-', ""));
        assert!(s.shadow(&model, 10).await.unwrap().is_none());
        let run = ShadowRun {
            model: model.clone(),
            version: "v2".into(),
            file: "shadow/m.wasm".into(),
            ..Default::default()
        };
        s.start_shadow(&run).await.unwrap();
        let diff = |i: i64| ShadowDiff {
            live_version: "v1".into(),
            kind: "record".into(),
            seq: Some(i),
            system: Some("bms".into()),
            external_id: Some(format!("D-{i}")),
            summary: format!("record bms/D-{i}: differs"),
            live: "{}".into(),
            candidate: "{\"x\":1}".into(),
            ..Default::default()
        };
        let counts = |n: i64| ShadowCounts {
            batches: 1,
            records: n,
            record_diffs: n,
            ..Default::default()
        };
        // More differences than are kept: the counts go on, the rows stop at the bound.
        let many: Vec<ShadowDiff> = (0..SHADOW_DIFFS_KEPT + 200).map(diff).collect();
        assert!(
            s.add_shadow(&model, "v2", &counts(many.len() as i64), &many)
                .await
                .unwrap()
        );
        assert!(
            s.add_shadow(&model, "v2", &counts(3), &many[..3])
                .await
                .unwrap()
        );
        // Another version's batch is not this run's.
        assert!(
            !s.add_shadow(&model, "v9", &counts(1), &many[..1])
                .await
                .unwrap()
        );
        let (read, diffs) = s.shadow(&model, 100_000).await.unwrap().unwrap();
        assert_eq!(read.records, SHADOW_DIFFS_KEPT + 203);
        assert_eq!(read.batches, 2);
        assert_eq!(diffs.len() as i64, SHADOW_DIFFS_KEPT);
        assert_eq!(diffs[0].external_id.as_deref(), Some("D-0"));
        assert!(read.ended.is_none());

        // Ended: readable, and takes no more batches.
        assert!(s.end_shadow(&model, "v2", "promoted").await.unwrap());
        assert!(!s.end_shadow(&model, "v2", "again").await.unwrap());
        assert!(!s.add_shadow(&model, "v2", &counts(1), &[]).await.unwrap());
        let (read, _) = s.shadow(&model, 1).await.unwrap().unwrap();
        assert_eq!(read.ended.as_deref(), Some("promoted"));

        // A new candidate starts over.
        s.start_shadow(&ShadowRun {
            version: "v3".into(),
            ..run.clone()
        })
        .await
        .unwrap();
        let (read, diffs) = s.shadow(&model, 10).await.unwrap().unwrap();
        assert_eq!((read.version.as_str(), read.records), ("v3", 0));
        assert!(read.ended.is_none() && diffs.is_empty());
    })
    .await;
}

/// On PostgreSQL a statement waits for a connection of the pool up to
/// `database.busy_timeout_ms`, then fails in bounded time with a reason naming the pool and
/// the setting, having written nothing; once a connection is free the same write goes
/// through once.
#[tokio::test]
async fn a_postgres_write_waits_for_the_pool_up_to_the_busy_timeout() {
    let Some((scratch, url)) = PgScratch::create().await else {
        return;
    };
    // Long enough that the pool's first connection (to a database just created, on a
    // machine busy with other tests) is made within it.
    let options = StoreOptions {
        max_connections: 1,
        busy_timeout: std::time::Duration::from_millis(1000),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&url, &options)
        .await
        .expect("open postgres");
    let holding = store.hold_writer().await.unwrap();
    let started = std::time::Instant::now();
    let line = record("device", "bms", "D-1", r#"{"serial":"a"}"#);
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        store.append(std::slice::from_ref(&line)),
    )
    .await
    .expect("the write ends in bounded time");
    let waited = started.elapsed();
    let e = outcome.expect_err("the pool's one connection is held");
    assert!(matches!(e, StoreError::ConnectionWait { .. }), "{e:?}");
    let message = e.to_string();
    for part in [
        "busy",
        "database.pool_size",
        "database.busy_timeout_ms",
        "nothing was written",
    ] {
        assert!(message.contains(part), "'{part}' in: {message}");
    }
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    drop(holding);
    assert_eq!(store.append(&[line]).await.unwrap().len(), 1);
    assert_eq!(store.pending("device", 10).await.unwrap().len(), 1);
    store.close().await;
    scratch.drop_db().await;
}

/// Opening PostgreSQL does not hang on the busy timeout: with a busy timeout far shorter than
/// any first connection takes, the store still opens and migrates: reaching the server is
/// bounded apart, at 5 s.
#[tokio::test]
async fn a_busy_timeout_shorter_than_a_connection_does_not_make_postgres_unreachable() {
    let Some((scratch, url)) = PgScratch::create().await else {
        return;
    };
    let options = StoreOptions {
        busy_timeout: std::time::Duration::from_millis(1),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&url, &options)
        .await
        .expect("a reachable server opens whatever the busy timeout");
    store.close().await;
    scratch.drop_db().await;
}

/// Opens `url` with a busy timeout of two minutes, expecting a failure within `bound`.
async fn open_fails_within(url: &str, bound: std::time::Duration) -> StoreError {
    let options = StoreOptions {
        busy_timeout: std::time::Duration::from_secs(120),
        ..StoreOptions::default()
    };
    let started = std::time::Instant::now();
    let e = Store::open_with(url, &options)
        .await
        .err()
        .expect("the database does not open");
    assert!(started.elapsed() < bound, "{:?}: {e}", started.elapsed());
    e
}

/// A PostgreSQL server that cannot be reached is told within seconds at open, whatever the
/// busy timeout: a refused connection is tried again only until the 5 s of the start-up
/// bound are over.
#[tokio::test]
async fn an_unreachable_postgres_is_told_at_open_in_seconds() {
    // Port 1 on this machine: nothing listens there, so the connection is refused.
    let e = open_fails_within(
        "postgres://postgres@127.0.0.1:1/x",
        std::time::Duration::from_secs(30),
    )
    .await;
    let message = e.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("no connection within 5 s"), "{message}");
}

/// A server that takes the connection and never answers (a wrong port that happens to
/// listen, a server hung at start) is told at open within the 5 s start-up bound, however
/// long the busy timeout.
#[tokio::test]
async fn a_postgres_that_never_answers_is_told_at_open_in_seconds() {
    // The kernel completes the connection into the listener's backlog; nobody reads it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://postgres@{}/x", silent.local_addr().unwrap());
    let e = open_fails_within(&url, std::time::Duration::from_secs(30)).await;
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("no connection within 5 s"), "{e}");
    drop(silent);
}

/// A server that answers with a refusal (here: no such database) is told at once, in the
/// server's words, not after the start-up bound.
#[tokio::test]
async fn a_postgres_refusal_at_open_is_told_at_once_with_its_cause() {
    let Some((scratch, url)) = PgScratch::create().await else {
        return;
    };
    let missing = format!("{url}_missing");
    let e = open_fails_within(&missing, std::time::Duration::from_secs(4)).await;
    assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
    let message = e.to_string();
    assert!(message.contains(&missing), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    scratch.drop_db().await;
}
