//! Several hosts on one database: they see each other (`GET /v1/hosts`, `flowhost hosts`:
//! every `serve` with what it holds; a host killed without stopping shows as not live and
//! loses its leases within the lease length; one that stops leaves the list), every host
//! takes intake, a plugin swapped in their shared folder is served by all of them, and three
//! hosts killed in the middle of association and of projection end as one host would.

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
        // (Projection is shared: only association leases are one host's alone.)
        let mut held: Vec<(String, String)> = list
            .iter()
            .flat_map(|h| h["leases"].as_array().cloned().unwrap_or_default())
            .filter(|l| l["stage"] == "associate")
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

/// What a host serves of a model (`serving_here` in `GET /v1/models`).
fn serving(http: &Http, model: &str) -> Option<String> {
    http.get("/v1/models").json()["models"]
        .as_array()?
        .iter()
        .find(|m| m["model"] == model)?["serving_here"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn three_hosts_take_intake_everywhere_and_all_serve_a_plugin_swapped_in_their_folder() {
    use flowhost_tests::{count_by, plugin, plugins_dir, replace_atomically, version_of};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const WAIT: Duration = Duration::from_secs(120);
    let Some(db) = Scratch::postgres() else {
        return;
    };
    // One folder shared by the three hosts, as on a shared filesystem.
    let folder = tempfile::tempdir().expect("plugins folder");
    let live = folder.path().join("device.wasm");
    std::fs::copy(plugin("device"), &live).expect("copy");
    let v2_file = plugins_dir().join("fixtures").join("device-v2.wasm");
    let v1_file = plugin("device");
    let (v1, v2) = (version_of(&plugin("device")), version_of(&v2_file));
    let host = Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    };
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(&host, &[])).collect();
    let urls: Vec<String> = servers.iter_mut().map(Server::url).collect();
    let https: Vec<Http> = urls.iter().map(|u| Http::new(u)).collect();
    let all_serve = |want: &str| {
        https
            .iter()
            .all(|h| serving(h, "device").as_deref() == Some(want))
    };
    wait_for("v1 served by all three", WAIT, || all_serve(&v1));

    // A client posts to the three hosts in turn while the plugin changes under them.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (urls, stop) = (urls.clone(), stop.clone());
        std::thread::spawn(move || {
            let https: Vec<Http> = urls.iter().map(|u| Http::new(u)).collect();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = String::new();
                for _ in 0..100 {
                    n += 1;
                    batch += &flowhost_tests::line(
                        "device",
                        ["bms", "erp"][n % 2],
                        &format!("D-{n}"),
                        serde_json::json!({"serial": format!("sn-{}", n % 300), "n": n}),
                    );
                }
                let answer = https[(n / 100) % 3].records(&batch);
                assert_eq!(answer.status, 200, "{}", answer.body);
            }
            n
        })
    };
    let keyed = || count_by(&db.url, "SELECT 'n', COUNT(*) FROM keyed")[0].1;
    for (name, file, want) in [
        ("v2", &v2_file, &v2),
        ("v1", &v1_file, &v1),
        ("v2", &v2_file, &v2),
    ] {
        replace_atomically(file, &live);
        wait_for(&format!("{name} served by all three"), WAIT, || {
            all_serve(want)
        });
        let before = keyed();
        wait_for("records keyed after the swap", WAIT, || {
            keyed() > before + 100
        });
    }
    stop.store(true, Ordering::Relaxed);
    let sent = client.join().expect("client");
    wait_for("the hosts to catch up", WAIT, || {
        count_by(&db.url, "SELECT 'n', COUNT(*) FROM queue")[0].1 == 0
            && count_by(&db.url, "SELECT 'n', COUNT(*) FROM dirty")[0].1 == 0
    });

    // Every record taken once, keyed once, by v1 or v2 only; none by a version that was not
    // current when its batch committed: after v2 last became current, nothing else commits.
    let intake = count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1;
    assert_eq!(intake as usize, sent);
    let by_version = count_by(
        &db.url,
        "SELECT plugin_version, COUNT(*) FROM keyed GROUP BY plugin_version",
    );
    assert_eq!(by_version.iter().map(|(_, n)| n).sum::<i64>(), intake);
    assert!(
        by_version.iter().all(|(v, _)| *v == v1 || *v == v2),
        "{by_version:?}"
    );
    let late = count_by(
        &db.url,
        &format!(
            "SELECT 'n', COUNT(*) FROM keyed WHERE plugin_version <> '{v2}' AND keyed_micros >= \
             (SELECT last_current_micros FROM plugin_versions WHERE version = '{v2}')"
        ),
    );
    assert_eq!(
        late[0].1,
        0,
        "records keyed by v1 after v2 became current: {:?} {:?}",
        count_by(
            &db.url,
            "SELECT version || ' ' || first_loaded_micros, last_current_micros FROM plugin_versions"
        ),
        count_by(
            &db.url,
            "SELECT plugin_version || ' ' || MIN(keyed_micros), MAX(keyed_micros) FROM keyed GROUP BY plugin_version"
        )
    );
    let stale = count_by(
        &db.url,
        &format!("SELECT 'n', COUNT(*) FROM views WHERE plugin_version <> '{v2}'"),
    );
    assert_eq!(
        stale[0].1, 0,
        "views by another version than the current one"
    );
    assert!(host.parked().is_empty(), "nothing parked");
    // Each host lists the three, live.
    for h in &https {
        let (_, list) = hosts(h);
        let live = list
            .iter()
            .filter(|x| x["live"] == true && !x["listen"].is_null());
        assert_eq!(live.count(), 3, "{list:?}");
    }
    for s in servers {
        assert!(s.stop().success());
    }
}

/// The ids of what holds a stage of any model now (`leases` and projection claims), by host.
fn holders(url: &str, stage: &str) -> Vec<String> {
    let sql = if stage == "associate" {
        format!(
            "SELECT holder, COUNT(*) FROM leases WHERE stage = 'associate' \
             AND expires_micros > {} \
             AND EXISTS (SELECT 1 FROM queue q WHERE q.model = leases.model) GROUP BY holder",
            flowhost_store::now_micros()
        )
    } else {
        "SELECT claimed_by, COUNT(*) FROM dirty WHERE claimed_by IS NOT NULL GROUP BY claimed_by"
            .to_string()
    };
    flowhost_tests::count_by(url, &sql)
        .into_iter()
        .map(|(holder, _)| holder)
        .collect()
}

/// How many projection batches a host's log shows it committed.
fn projection_batches(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("stage=\"project\"") && l.contains("batch done"))
        .count()
}

#[test]
fn three_hosts_killed_mid_association_and_mid_projection_end_as_one_host_would() {
    use flowhost_tests::{count_by, own_plugins, snapshot};
    const WAIT: Duration = Duration::from_secs(300);
    let Some(db) = Scratch::postgres() else {
        return;
    };
    let input = {
        let out = flowhost_tests::flowhost(&["generate", "--records", "21500"]);
        block_until_ok(&out);
        text(&out.stdout)
    };
    let lines: Vec<&str> = input.lines().collect();

    // What one host makes of the input: `ingest`, then `process --until-idle`.
    let single = Scratch::sqlite();
    let one = Host::new(&single.url);
    block_until_ok(&one.ingest(&input));
    one.process();
    let expected = snapshot(&one);

    // Three hosts, one PostgreSQL, one plugins folder; small batches and a short lease so
    // that kills land in the middle of the work and hand-overs are quick.
    let folder = own_plugins();
    let host = Host::with_plugins(&db.url, folder.path());
    let args = [
        "--set",
        "stages.lease_ttl_ms=2000",
        "--set",
        "stages.associate.max_batch=400",
        "--set",
        "stages.associate.initial_batch=200",
        "--set",
        "stages.project.max_batch=100",
        "--set",
        "stages.project.initial_batch=50",
    ];
    struct Slot {
        server: Server,
        url: String,
        id: String,
        /// What earlier (killed) processes in this slot logged.
        earlier: String,
    }
    let start = || {
        let mut server = Server::start(&host, &args);
        let url = server.url();
        let id = hosts(&Http::new(&url)).0;
        Slot {
            server,
            url,
            id,
            earlier: String::new(),
        }
    };
    let mut slots: Vec<Slot> = (0..3).map(|_| start()).collect();
    let restart = |slot: &mut Slot| {
        let log = slot.server.log();
        let fresh = start();
        let old = std::mem::replace(slot, fresh);
        slot.earlier = old.earlier + &log;
        drop(old.server); // SIGKILL
    };
    // Kills the host holding `stage` (by its holder id) and starts another in its place.
    let kill_holder = |slots: &mut Vec<Slot>, stage: &str| -> bool {
        let held = holders(&db.url, stage);
        let Some(i) = slots
            .iter()
            .position(|s| held.iter().any(|h| h.starts_with(&s.id)))
        else {
            return false;
        };
        // SAFETY: kill(2) with SIGKILL on our own child.
        unsafe { libc::kill(slots[i].server.pid(), libc::SIGKILL) };
        restart(&mut slots[i]);
        true
    };

    // The input posted in order, 500 lines a request, to the three hosts in turn. A third of
    // the way in, the host in the middle of association is killed (and restarted); two
    // thirds of the way in, the host in the middle of projection.
    let (mut in_association, mut in_projection) = (false, false);
    let requests = lines.len().div_ceil(500);
    for (n, chunk) in lines.chunks(500).enumerate() {
        let body = chunk.join("\n") + "\n";
        let answer = Http::new(&slots[n % 3].url).records(&body);
        assert_eq!(answer.status, 200, "{}", answer.body);
        if n >= requests / 3 && !in_association {
            in_association = kill_holder(&mut slots, "associate");
        } else if n >= 2 * requests / 3 && !in_projection {
            in_projection = kill_holder(&mut slots, "project");
        }
    }
    if !in_association {
        wait_for("a host in the middle of association", WAIT, || {
            kill_holder(&mut slots, "associate")
        });
    }
    if !in_projection {
        wait_for("a host in the middle of projection", WAIT, || {
            kill_holder(&mut slots, "project")
        });
    }
    wait_for("the hosts to finish", WAIT, || {
        count_by(
            &db.url,
            "SELECT 'n', (SELECT COUNT(*) FROM queue) + \
             (SELECT COUNT(*) FROM dirty WHERE error IS NULL)",
        )[0]
        .1 == 0
    });

    // Everything once: every line taken once, every taken record keyed or parked once.
    let intake = count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1;
    let single_intake = count_by(&single.url, "SELECT 'n', COUNT(*) FROM intake")[0].1;
    assert_eq!(intake, single_intake);
    assert!(intake >= 20_000, "{intake} records");
    let accounted = count_by(
        &db.url,
        "SELECT 'n', (SELECT COUNT(*) FROM keyed) + (SELECT COUNT(*) FROM parked \
         WHERE seq NOT IN (SELECT seq FROM keyed))",
    )[0]
    .1;
    assert_eq!(accounted, intake, "every record keyed or parked, once");
    // The same views, lineage, roots, values and parked records as the one host.
    assert_eq!(snapshot(&host), expected);
    // Every host did some of the projection.
    let mut spread = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let log = slot.earlier.clone() + &slot.server.log();
        spread.push(projection_batches(&log));
        assert!(spread[i] > 0, "host {i} projected nothing:\n{log}");
    }
    let restarts: Vec<usize> = slots
        .iter()
        .map(|s| s.earlier.matches("listening on").count())
        .collect();
    eprintln!(
        "{intake} records; projection batches per host {spread:?}; processes killed per host \
         {restarts:?}; killed while posting: association {in_association}, projection \
         {in_projection}"
    );
    for slot in slots {
        assert!(slot.server.stop().success());
    }
}
