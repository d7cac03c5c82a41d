//! Group commit of HTTP intake: concurrent requests share transactions, and each still gets
//! its own exact answer — accepted, duplicate (also of a record another request sent in the
//! same transaction) or refused by line — with every accepted record stored once.

use flowhost_tests::{Host, Http, Scratch, Server, count_by, line};
use serde_json::json;

#[test]
fn concurrent_requests_sharing_transactions_each_get_their_own_answers() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        flowhost_tests::block_until_ok(&host.ingest(&line(
            "device",
            "bms",
            "D-0",
            json!({"serial": "S-0"}),
        )));
        let mut server = Server::start(&host, &[]);
        let url = server.url();
        // 16 clients at once, each: 40 records of its own, 40 that every client sends, and
        // one bad line (its 81st).
        let shared: String = (0..40)
            .map(|i| {
                line(
                    "device",
                    "erp",
                    &format!("E-{i}"),
                    json!({"serial": format!("S-{i}")}),
                )
            })
            .collect();
        let clients: Vec<_> = (0..16)
            .map(|c| {
                let (url, shared) = (url.clone(), shared.clone());
                std::thread::spawn(move || {
                    let own: String = (0..40)
                        .map(|i| {
                            line(
                                "device",
                                "bms",
                                &format!("C{c}-{i}"),
                                json!({"serial": format!("C{c}-{i}")}),
                            )
                        })
                        .collect();
                    let body = format!("{own}{{\"model\": \"device\"}}\n{shared}");
                    Http::new(&url).records(&body).json()
                })
            })
            .collect();
        let answers: Vec<serde_json::Value> = clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect();
        let (mut accepted, mut duplicates) = (0, 0);
        for a in &answers {
            assert_eq!(a["refused"], 1, "{}: {a}", db.backend);
            assert_eq!(a["errors"][0]["line"], 41, "{}: {a}", db.backend);
            let (acc, dup) = (
                a["accepted"].as_u64().unwrap(),
                a["duplicates"].as_u64().unwrap(),
            );
            assert_eq!(
                acc + dup,
                80,
                "{}: every good line answered once: {a}",
                db.backend
            );
            assert!(acc >= 40, "{}: its own records are new: {a}", db.backend);
            accepted += acc;
            duplicates += dup;
        }
        // Each shared record accepted exactly once across all requests.
        assert_eq!(accepted, 16 * 40 + 40, "{}", db.backend);
        assert_eq!(duplicates, 15 * 40, "{}", db.backend);
        let stored = count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1;
        assert_eq!(
            stored as u64,
            accepted + 1,
            "{}: plus the first record",
            db.backend
        );
        assert!(server.stop().success());
    }
}
