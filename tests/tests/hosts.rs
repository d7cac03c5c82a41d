//! Several hosts on one database see each other: `GET /v1/hosts` and `flowhost hosts` list
//! every `serve` with what it holds, a host killed without stopping shows as not live and
//! loses its leases within the lease length, and a host that stops leaves the list.

use flowhost_tests::{Host, Http, Scratch, Server, block_until_ok, text, wait_for};
use serde_json::Value;
use std::time::Duration;

const LEASE: [&str; 2] = ["--set", "stages.lease_ttl_ms=600"];

fn hosts(http: &Http) -> (String, Vec<Value>) {
    let answer = http.get("/v1/hosts").json();
    let this = answer["this_host"].as_str().expect("this_host").to_string();
    (
        this,
        answer["hosts"].as_array().cloned().unwrap_or_default(),
    )
}

fn by_id<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|h| h["id"] == id)
}

#[test]
fn hosts_list_each_other_with_their_leases_and_a_killed_one_is_not_live() {
    let input = {
        let out = flowhost_tests::flowhost(&["generate", "--records", "2000"]);
        block_until_ok(&out);
        text(&out.stdout)
    };
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        block_until_ok(&host.ingest(&input));
        let mut a = Server::start(&host, &LEASE);
        let mut b = Server::start(&host, &LEASE);
        let (url_a, url_b) = (a.url(), b.url());
        let (http_a, http_b) = (Http::new(&url_a), Http::new(&url_b));
        let id_b = hosts(&http_b).0;
        let id_a = hosts(&http_a).0;
        assert_ne!(id_a, id_b);

        // Both listed, live, each marked `this` only by itself, with its address; no stage
        // of a model is held by two.
        wait_for("both hosts announced", Duration::from_secs(30), || {
            let (_, list) = hosts(&http_a);
            let announced = |id: &str| by_id(&list, id).is_some_and(|h| !h["listen"].is_null());
            announced(&id_a) && announced(&id_b)
        });
        let (_, list) = hosts(&http_a);
        let (ha, hb) = (by_id(&list, &id_a).unwrap(), by_id(&list, &id_b).unwrap());
        assert_eq!(ha["this"], true, "{}: {ha}", db.backend);
        assert_eq!(hb["this"], false, "{}: {hb}", db.backend);
        assert_eq!(
            (ha["live"].clone(), hb["live"].clone()),
            (true.into(), true.into())
        );
        assert_eq!(format!("http://{}", ha["listen"].as_str().unwrap()), url_a);
        assert_eq!(format!("http://{}", hb["listen"].as_str().unwrap()), url_b);
        let mut held: Vec<(String, String)> = list
            .iter()
            .flat_map(|h| h["leases"].as_array().cloned().unwrap_or_default())
            .map(|l| (l["stage"].to_string(), l["model"].to_string()))
            .collect();
        let n = held.len();
        held.sort();
        held.dedup();
        assert_eq!(
            held.len(),
            n,
            "{}: a stage held twice: {list:?}",
            db.backend
        );
        // The metrics name the same host.
        let metrics = http_a.get("/metrics").body;
        assert!(
            metrics.contains(&format!("flowhost_host_info{{host=\"{id_a}\"")),
            "{metrics}"
        );
        // The CLI lists the same processes.
        let out = host.run(&[LEASE[0], LEASE[1], "hosts", "--json"]);
        block_until_ok(&out);
        let cli: Vec<String> = flowhost_tests::json_lines(&out.stdout)
            .iter()
            .map(|h| h["id"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(cli.contains(&id_a) && cli.contains(&id_b), "{cli:?}");

        // B killed: within the lease length it is not live and holds nothing.
        drop(b);
        wait_for(
            "the killed host to show as gone",
            Duration::from_secs(30),
            || {
                let (_, list) = hosts(&http_a);
                by_id(&list, &id_b).is_some_and(|h| {
                    h["live"] == false && h["leases"].as_array().is_some_and(Vec::is_empty)
                })
            },
        );
        let out = host.run(&[LEASE[0], LEASE[1], "hosts"]);
        block_until_ok(&out);
        assert!(
            text(&out.stdout).contains("NOT live"),
            "{}",
            text(&out.stdout)
        );

        // A stops: it leaves the list; the killed B stays, not live.
        assert!(a.stop().success());
        let out = host.run(&[LEASE[0], LEASE[1], "hosts", "--json"]);
        block_until_ok(&out);
        let left: Vec<Value> = flowhost_tests::json_lines(&out.stdout);
        assert!(by_id(&left, &id_a).is_none(), "{left:?}");
        assert_eq!(
            by_id(&left, &id_b).map(|h| h["live"].clone()),
            Some(false.into())
        );
    }
}
