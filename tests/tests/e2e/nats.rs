//! NATS JetStream at the edges of `serve`: intake from a stream and the change feed relayed
//! to a stream, against the machine's NATS server (and a private `nats-server` for the
//! outage). Under `CI=true` an unreachable NATS fails these tests.
//!
//! - A host killed (SIGKILL) in the middle of consuming the stream and started again ends
//!   with the same views, lineage, values and parked records as `ingest` + `process` of the
//!   same lines in the same order: nothing lost, nothing twice. On PostgreSQL a second host
//!   shares the stream and takes it over from the one killed. Refused lines are published
//!   with their stream sequence and line; every reference's last message on the changes
//!   stream equals its exported canonical view.
//! - With NATS down the host stays ready (NATS listed as degraded), takes HTTP intake and
//!   processes it; when NATS is back the relay catches up from the outbox and the intake
//!   resumes.

use flowhost_tests::{
    Host, Http, NatsNames, NatsServer, Scratch, Server, block_until_ok, count_by, flowhost, line,
    snapshot, text, wait_for,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(300);

/// Queue and dirty marks (without failures) are empty.
fn settled(url: &str) -> bool {
    count_by(
        url,
        "SELECT 'n', (SELECT COUNT(*) FROM queue) + (SELECT COUNT(*) FROM dirty WHERE error IS NULL)",
    )[0]
    .1 == 0
}

fn position(url: &str, name: &str) -> i64 {
    count_by(
        url,
        &format!("SELECT name, position FROM positions WHERE name = '{name}'"),
    )
    .first()
    .map_or(0, |(_, p)| *p)
}

/// The lines cut into messages of 1 to 40 lines (a fixed pattern), with refused lines put
/// in some of them: (message bodies, all lines in order, how many were put in).
fn messages(input: &str) -> (Vec<String>, Vec<String>, usize) {
    let mut bodies = Vec::new();
    let mut all = Vec::new();
    let mut bad = 0;
    let mut lines = input.lines().peekable();
    let mut n = 0usize;
    while lines.peek().is_some() {
        n += 1;
        let size = 1 + (n * 7919) % 40;
        let mut body: Vec<String> = lines.by_ref().take(size).map(str::to_string).collect();
        match n % 50 {
            7 => body.insert(body.len() / 2, "this is not JSON".to_string()),
            23 => body
                .push(r#"{"model":"devcie","source":{"system":"s"},"id":"x","payload":{}}"#.into()),
            _ => {}
        }
        bad += body.len()
            - body
                .iter()
                .filter(|l| l.starts_with(r#"{"model":"#) && !l.contains("devcie"))
                .count();
        all.extend(body.iter().cloned());
        bodies.push(body.join("\n") + "\n");
    }
    (bodies, all, bad)
}

#[test]
fn a_host_killed_mid_stream_ends_as_ingest_of_the_same_lines_and_relays_every_change() {
    let Some(nats) = NatsNames::machine() else {
        return;
    };
    let input = {
        let out = flowhost(&["generate", "--records", "12000"]);
        block_until_ok(&out);
        text(&out.stdout)
    };
    let (bodies, lines, bad) = messages(&input);
    assert!(bad > 0);
    nats.create_intake_stream();
    let last = nats.publish("demo", &bodies);
    assert_eq!(last as usize, bodies.len());

    // What `ingest` + `process` make of the same lines in the same order.
    let single = Scratch::sqlite();
    let one = Host::new(&single.url);
    let _ = one.ingest(&(lines.join("\n") + "\n"));
    one.process();
    let expected = snapshot(&one);
    let expected_intake = count_by(&single.url, "SELECT 'n', COUNT(*) FROM intake")[0].1;

    for db in Scratch::both() {
        let names = NatsNames::on(&nats.url).expect("the same server");
        names.create_intake_stream();
        assert_eq!(names.publish("demo", &bodies), last);
        let host = Host::new(&db.url);
        let mut args: Vec<String> = names.settings();
        for s in ["intake.nats_batch_messages=10", "stages.lease_ttl_ms=2000"] {
            args.extend(["--set".to_string(), s.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = format!("nats-intake:{}", names.intake_stream);

        // Killed once a third of the messages are appended. On PostgreSQL a second host
        // runs beside it from the start: the one holding the intake duty is killed, and the
        // other takes the stream over.
        let mut servers = vec![Server::start(&host, &args)];
        if db.backend == "postgres" {
            servers.push(Server::start(&host, &args));
        }
        for s in &mut servers {
            let _ = s.url();
        }
        wait_for("a third of the stream appended", WAIT, || {
            position(&db.url, &name) >= last as i64 / 3
        });
        let holder = count_by(
            &db.url,
            "SELECT holder, COUNT(*) FROM leases WHERE stage = 'nats-intake' GROUP BY holder",
        );
        let pid: i32 = holder[0].0.split('/').nth(1).unwrap().parse().unwrap();
        let at = servers
            .iter()
            .position(|s| s.pid() == pid)
            .expect("a host of ours holds it");
        let killed = servers.remove(at);
        // SAFETY: kill(2) with SIGKILL on our own child.
        unsafe { libc::kill(killed.pid(), libc::SIGKILL) };
        let killed_at = position(&db.url, &name);
        let _ = killed.wait();
        assert!(killed_at < last as i64, "{}: killed too late", db.backend);
        if let Some(other) = servers.first() {
            wait_for("the other host to take the stream over", WAIT, || {
                let holders = count_by(
                    &db.url,
                    "SELECT holder, COUNT(*) FROM leases WHERE stage = 'nats-intake' GROUP BY holder",
                );
                holders
                    .iter()
                    .any(|(h, _)| h.split('/').nth(1) == Some(other.pid().to_string().as_str()))
                    && position(&db.url, &name) > killed_at
            });
        }

        let mut server = Server::start(&host, &args);
        let http = Http::new(&server.url());
        wait_for("the whole stream appended", WAIT, || {
            position(&db.url, &name) == last as i64
        });
        wait_for("the stages to settle", WAIT, || settled(&db.url));

        // Nothing lost, nothing twice, the same decisions.
        let intake = count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1;
        assert_eq!(intake, expected_intake, "{}", db.backend);
        assert_eq!(snapshot(&host), expected, "{}", db.backend);

        // Every refused line, with where it was.
        let refused = names.read_all(&names.refused_stream);
        assert_eq!(refused.len(), bad, "{}: {refused:?}", db.backend);
        for (subject, body) in &refused {
            let r: Value = serde_json::from_str(body).unwrap();
            assert!(
                subject.starts_with(&format!("{}.refused.", names.prefix)),
                "{subject}"
            );
            assert!(r["stream_seq"].as_u64().unwrap() >= 1, "{body}");
            assert!(r["line"].as_u64().unwrap() >= 1, "{body}");
            assert_eq!(r["stream"], names.intake_stream.as_str());
            let error = r["error"].as_str().unwrap();
            if r["text"] == "this is not JSON" {
                assert!(subject.ends_with(".demo"), "{subject}");
                assert!(error.contains("JSON"), "{error}");
            } else {
                assert!(subject.ends_with(".devcie"), "{subject}");
                assert!(error.contains("unknown model 'devcie'"), "{error}");
            }
        }

        // Every reference's last change on the stream is its exported canonical view.
        wait_for("the relay to catch up", WAIT, || {
            let metrics = http.get("/metrics").body;
            metrics.contains("\nflowhost_changes_outbox_lag 0\n")
        });
        let mut latest: HashMap<String, Value> = HashMap::new();
        let mut seqs = Vec::new();
        for (subject, body) in names.read_all(&names.changes_stream) {
            let c: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                subject,
                format!("{}.changes.{}", names.prefix, c["model"].as_str().unwrap())
            );
            seqs.push(c["seq"].as_i64().unwrap());
            latest.insert(c["id"].as_str().unwrap().to_string(), c);
        }
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "in change order, once each"
        );
        let mut compared = 0;
        for model in ["device", "sensor"] {
            for view in host.export("canonical", model) {
                let c = &latest[view["id"].as_str().unwrap()];
                assert_eq!(c["canonical"], view["canonical"], "{}", db.backend);
                compared += 1;
            }
        }
        assert!(compared > 1_000, "{compared}");

        // Healthy, and says so.
        let ready = http.get("/health/ready");
        assert_eq!(ready.status, 200, "{}", ready.body);
        assert!(ready.json().get("degraded").is_none(), "{}", ready.body);
        let metrics = http.get("/metrics").body;
        assert!(
            metrics.contains("\nflowhost_nats_connected 1\n"),
            "{metrics}"
        );
        // A host that does not hold the intake duty reads the position and the lag from the
        // database and the broker every half lease: the same figures, a moment later.
        wait_for("the position and a lag of 0 in the metrics", WAIT, || {
            let metrics = http.get("/metrics").body;
            metrics.contains(&format!("\nflowhost_nats_intake_position {last}\n"))
                && metrics.contains("\nflowhost_nats_intake_lag_messages 0\n")
        });
        let hosts = http.get("/v1/hosts").body;
        assert!(hosts.contains("nats-intake"), "{hosts}");
        for other in servers {
            assert!(other.stop().success());
        }
        eprintln!(
            "{}: {last} messages, killed with {killed_at} appended; {intake} records, {} refused lines, {compared} references' last changes compared",
            db.backend,
            refused.len()
        );
        assert!(server.stop().success());
    }
}

#[test]
fn with_nats_down_the_host_stays_ready_and_catches_up_when_it_is_back() {
    if NatsNames::machine().is_none() {
        return; // no NATS on this machine (outside CI): no nats-server either
    }
    let mut broker = NatsServer::new();
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let names_args = |url: &str| -> Vec<String> {
        let mut args = vec!["--set".to_string(), format!("intake.nats_url={url}")];
        args.extend(["--set".to_string(), "stages.lease_ttl_ms=2000".to_string()]);
        args
    };
    let args = names_args(&broker.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start(&host, &args);
    let http = Http::new(&server.url());

    // Down from the start: ready, NATS degraded; HTTP intake and processing go on.
    let ready = http.get("/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let degraded = ready.json()["degraded"].to_string();
    assert!(degraded.contains("not connected"), "{}", ready.body);
    let body: String = (0..50)
        .map(|i| {
            line(
                "device",
                "bms",
                &format!("D-{i}"),
                json!({"serial": format!("sn-{i}")}),
            )
        })
        .collect();
    assert_eq!(http.records(&body).status, 200);
    wait_for("HTTP records processed", WAIT, || settled(&db.url));
    let changes = http.get("/v1/changes?after=0").lines().len();
    assert_eq!(changes, 50);
    let metrics = http.get("/metrics").body;
    assert!(
        metrics.contains("\nflowhost_nats_connected 0\n"),
        "{metrics}"
    );

    // Back: the relay catches up from the outbox, intake from the stream starts.
    broker.start();
    let names = NatsNames::on(&broker.url()).expect("the private server answers");
    wait_for("the relay to catch up", WAIT, || {
        names.read_all("FLOWHOST_CHANGES").len() == 50
    });
    wait_for("NATS no longer degraded", WAIT, || {
        let r = http.get("/health/ready");
        r.status == 200 && r.json().get("degraded").is_none()
    });
    let publish = |names: &NatsNames, ids: std::ops::Range<usize>| {
        let bodies: Vec<String> = ids
            .map(|i| {
                line(
                    "device",
                    "oem",
                    &format!("X-{i}"),
                    json!({"serial": format!("sn-{i}")}),
                )
            })
            .collect();
        names.publish_to("flowhost.intake.device", &bodies)
    };
    publish(&names, 50..60);
    wait_for("the stream's records appended", WAIT, || {
        count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1 == 60
    });

    // A message of 250 bad lines around one good one: the good record is stored, the first
    // 100 refusals are published one by one, and one more says how many followed.
    let mut poison: Vec<String> = (0..125).map(|i| format!("bad line {i}")).collect();
    poison.push(line("device", "oem", "P-1", json!({"serial": "sn-p"})));
    poison.extend((125..250).map(|i| format!("bad line {i}")));
    names.publish_to("flowhost.intake.device", &[poison.join("\n")]);
    wait_for("the good line of the poison message appended", WAIT, || {
        count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1 == 61
    });
    let refused = names.read_all("FLOWHOST_REFUSED");
    assert_eq!(refused.len(), 101, "{refused:?}");
    let last: Value = serde_json::from_str(&refused[100].1).unwrap();
    assert_eq!(last["line"], Value::Null);
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .starts_with("150 more lines of this message were refused"),
        "{last}"
    );
    let first: Value = serde_json::from_str(&refused[0].1).unwrap();
    assert_eq!(
        (first["line"].as_u64(), first["text"].as_str()),
        (Some(1), Some("bad line 0"))
    );

    // Down again mid-run: degraded within seconds, HTTP intake still answers.
    broker.kill();
    wait_for("NATS degraded again", WAIT, || {
        http.get("/health/ready").body.contains("not connected")
    });
    let more: String = (60..70)
        .map(|i| {
            line(
                "device",
                "bms",
                &format!("D-{i}"),
                json!({"serial": format!("sn-{i}")}),
            )
        })
        .collect();
    assert_eq!(http.records(&more).status, 200);
    wait_for("processed while NATS is down", WAIT, || settled(&db.url));
    broker.start();
    let names = NatsNames::on(&broker.url()).expect("the private server answers again");
    wait_for("the relay to catch up again", WAIT, || {
        names.read_all("FLOWHOST_CHANGES").len() >= 70
    });
    // Intake resumes after the last message it appended (the stream kept what came before).
    publish(&names, 70..75);
    wait_for("intake to resume", WAIT, || {
        count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1 == 76
    });
    let log = server.log();
    assert!(
        log.contains("disconnected from NATS; reconnecting"),
        "{log}"
    );
    assert!(server.stop().success());
}

#[test]
fn nats_settings_are_checked_by_name() {
    for (setting, words) in [
        (
            "intake.nats_url=http://127.0.0.1:4222",
            "intake.nats_url: 'http://127.0.0.1:4222' is not a NATS URL",
        ),
        (
            "intake.nats_subjects=flowhost.>.x",
            "intake.nats_subjects: 'flowhost.>.x' is not a NATS subject",
        ),
        (
            "intake.nats_subjects= , ",
            "intake.nats_subjects: at least one subject",
        ),
        (
            "changes.nats_subject=flowhost.*",
            "changes.nats_subject: 'flowhost.*' is not a NATS subject without wildcards",
        ),
        (
            "intake.nats_stream=a.b",
            "intake.nats_stream: 'a.b' is not a stream or consumer name",
        ),
        (
            "intake.nats_batch_messages=0",
            "intake.nats_batch_messages must be between 1 and 10000",
        ),
        (
            "intake.nats_linger_ms=5000",
            "intake.nats_linger_ms must be at most 1000",
        ),
    ] {
        let out = flowhost(&["--set", setting, "config"]);
        assert!(!out.status.success(), "{setting}");
        let err = text(&out.stderr);
        assert!(err.contains(words), "{setting}: {err}");
    }
}
