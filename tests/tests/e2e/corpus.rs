//! The bad-input corpus (`tests/corpus/intake.toml`) through `flowhost ingest` and
//! `POST /v1/records`, on SQLite and PostgreSQL: each line's outcome, each case's parked
//! records, the records that must flow, and nothing else stored or parked.

use flowhost_tests::{Host, Http, Scratch, Server, count_by, root, text};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
struct Case {
    /// `c01`, `c02`, …: the case's ids start with it.
    id: String,
    name: String,
    body: Vec<u8>,
    expect: Vec<Expect>,
    parked: Option<String>,
    keyed: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Accepted,
    Duplicate,
    Skipped,
    Refused(String),
}

fn corpus() -> Vec<Case> {
    let path = root().join("tests/corpus/intake.toml");
    let file: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases = file["case"].as_array().expect("[[case]] tables");
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = format!("c{:02}", i + 1);
            let name = c["name"].as_str().expect("name").to_string();
            let body = match (c.get("lines"), c.get("generate")) {
                (Some(lines), None) => {
                    let mut body = Vec::new();
                    for line in lines.as_array().expect("lines") {
                        body.extend(line.as_str().unwrap().replace("$ID", &id).as_bytes());
                        body.push(b'\n');
                    }
                    body
                }
                (None, Some(g)) => generated(g.as_str().unwrap(), &id),
                _ => panic!("{name}: give `lines` or `generate`"),
            };
            let expect = c["expect"]
                .as_array()
                .expect("expect")
                .iter()
                .map(|e| match e.as_str().unwrap() {
                    "accepted" => Expect::Accepted,
                    "duplicate" => Expect::Duplicate,
                    "skipped" => Expect::Skipped,
                    other => Expect::Refused(
                        other
                            .strip_prefix("refused: ")
                            .unwrap_or_else(|| panic!("{name}: {other}"))
                            .to_string(),
                    ),
                })
                .collect();
            Case {
                id,
                name,
                body,
                expect,
                parked: c.get("parked").map(|p| p.as_str().unwrap().to_string()),
                keyed: c.get("keyed").is_some_and(|k| k.as_bool() == Some(true)),
            }
        })
        .collect()
}

/// Bodies too large or too odd for the TOML file.
fn generated(name: &str, id: &str) -> Vec<u8> {
    let record = |payload: &str| {
        format!(
            r#"{{"model":"device","source":{{"system":"bms"}},"id":"{id}","payload":{payload}}}"#
        )
    };
    let mut body = match name {
        "invalid-utf8" => {
            let mut b = record(r#"{"serial":"AB"}"#).into_bytes();
            // The bytes of "AB" become an invalid sequence.
            let at = b.windows(2).position(|w| w == b"AB").unwrap();
            b[at] = 0xC3;
            b[at + 1] = 0x28;
            b
        }
        "long-id" => format!(
            r#"{{"model":"device","source":{{"system":"bms"}},"id":"{id}{}","payload":{{}}}}"#,
            "i".repeat(257 - id.len())
        )
        .into_bytes(),
        "line-10mb" => record(&format!(r#"{{"blob":"{}"}}"#, "x".repeat(10 << 20))).into_bytes(),
        "nest-10000" => record(&format!(
            r#"{{"a":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ))
        .into_bytes(),
        "keys-100000" => {
            let keys: Vec<String> = (0..100_000).map(|i| format!(r#""k{i}":{i}"#)).collect();
            record(&format!("{{{}}}", keys.join(","))).into_bytes()
        }
        "payload-2mb" => record(&format!(r#"{{"blob":"{}"}}"#, "x".repeat(2_000_018))).into_bytes(),
        "serial-4000" => record(&format!(r#"{{"serial":"{}"}}"#, "s".repeat(4000))).into_bytes(),
        other => panic!("no generator {other}"),
    };
    body.push(b'\n');
    body
}

/// What one body came to: counts, and the error of each refused line.
#[derive(Debug, Default)]
struct Outcome {
    accepted: u64,
    duplicates: u64,
    refused: u64,
    errors: BTreeMap<u64, String>,
}

fn check(case: &Case, got: &Outcome, how: &str) {
    let count = |e: &Expect| case.expect.iter().filter(|x| *x == e).count() as u64;
    let refused: Vec<(u64, &String)> = case
        .expect
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Expect::Refused(words) => Some((i as u64 + 1, words)),
            _ => None,
        })
        .collect();
    let what = format!("case {} \"{}\" ({how})", case.id, case.name);
    assert_eq!(got.accepted, count(&Expect::Accepted), "{what}: {got:?}");
    assert_eq!(got.duplicates, count(&Expect::Duplicate), "{what}: {got:?}");
    assert_eq!(got.refused, refused.len() as u64, "{what}: {got:?}");
    for (line, words) in refused {
        let error = got
            .errors
            .get(&line)
            .unwrap_or_else(|| panic!("{what}: line {line} not refused: {got:?}"));
        assert!(
            error.contains(words.as_str()),
            "{what}: line {line}: {error:?} does not say {words:?}"
        );
        assert!(error.len() < 600, "{what}: a long error: {error}");
    }
}

fn through_cli(host: &Host, case: &Case) -> Outcome {
    let out = host.ingest_bytes(&case.body);
    let stdout = text(&out.stdout);
    let counts: Vec<u64> = stdout
        .trim()
        .strip_prefix("accepted ")
        .unwrap_or_else(|| panic!("case {}: {stdout} {}", case.id, text(&out.stderr)))
        .split(", ")
        .map(|part| part.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    let mut errors = BTreeMap::new();
    for line in text(&out.stderr).lines() {
        if let Some(rest) = line.strip_prefix("line ")
            && let Some((n, error)) = rest.split_once(": ")
            && let Ok(n) = n.parse::<u64>()
        {
            errors.insert(n, error.to_string());
        }
    }
    assert_eq!(
        out.status.success(),
        counts[2] == 0,
        "case {}: a refused line fails the run, and only then",
        case.id
    );
    Outcome {
        accepted: counts[0],
        duplicates: counts[1],
        refused: counts[2],
        errors,
    }
}

fn through_http(http: &Http, case: &Case) -> Outcome {
    let answer = http.request(
        "POST",
        "/v1/records",
        &[("content-type", "application/x-ndjson")],
        case.body.clone(),
    );
    let json = answer.json();
    let n = |k: &str| json[k].as_u64().unwrap_or(0);
    let expected_status = if n("accepted") + n("duplicates") > 0 {
        200
    } else {
        400
    };
    assert_eq!(answer.status, expected_status, "case {}: {json}", case.id);
    let errors = json["errors"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["line"].as_u64().unwrap(),
                        e["error"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Outcome {
        accepted: n("accepted"),
        duplicates: n("duplicates"),
        refused: n("refused"),
        errors,
    }
}

/// After the stages ran: parked records as the cases expect, nothing else parked, the
/// records that must flow keyed, and intake holding the accepted records only.
fn check_after(host: &Host, db: &Scratch, cases: &[Case], how: &str) {
    let out = host.run(&["process", "--until-idle"]);
    assert!(out.status.success(), "{how}: {}", text(&out.stderr));
    let parked = host.parked();
    let case_of = |id: &str| id.split('-').next().unwrap().to_string();
    let mut parked_by_case: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for p in &parked {
        parked_by_case
            .entry(case_of(p["id"].as_str().unwrap()))
            .or_default()
            .push(p);
    }
    let keyed: BTreeSet<String> = count_by(
        &db.url,
        "SELECT i.external_id, COUNT(*) FROM keyed k JOIN intake i ON i.seq = k.seq \
         GROUP BY i.external_id",
    )
    .into_iter()
    .map(|(id, _)| id)
    .collect();
    let mut accepted = 0;
    for case in cases {
        let what = format!("case {} \"{}\" ({how})", case.id, case.name);
        accepted += case
            .expect
            .iter()
            .filter(|e| **e == Expect::Accepted)
            .count() as i64;
        let got = parked_by_case.remove(&case.id).unwrap_or_default();
        match &case.parked {
            None => assert!(got.is_empty(), "{what}: parked {got:?}"),
            Some(expected) => {
                let (reason, words) = expected.split_once(": ").unwrap_or((expected, ""));
                assert!(!got.is_empty(), "{what}: nothing parked");
                for p in got {
                    assert_eq!(p["reason"], reason, "{what}: {p}");
                    assert!(
                        p["details"].as_str().unwrap().contains(words),
                        "{what}: {p}"
                    );
                }
            }
        }
        if case.keyed {
            assert!(
                keyed.iter().any(|id| case_of(id) == case.id),
                "{what}: not keyed"
            );
        }
    }
    assert!(
        parked_by_case.is_empty(),
        "{how}: parked by no case: {parked_by_case:?}"
    );
    let stored: i64 = count_by(&db.url, "SELECT model, COUNT(*) FROM intake GROUP BY model")
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        stored, accepted,
        "{how}: intake holds exactly the accepted records"
    );
}

#[test]
fn the_corpus_through_the_cli_and_http_on_both_backends() {
    let cases = corpus();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        host.process();
        for case in &cases {
            check(
                case,
                &through_cli(&host, case),
                &format!("cli, {}", db.backend),
            );
        }
        check_after(&host, &db, &cases, &format!("cli, {}", db.backend));
    }
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        // The stages run after intake, once, as for the CLI.
        let mut server = Server::start(&host, &["--set", "stages.idle_poll_ms=600000"]);
        let http = Http::new(&server.url());
        for case in &cases {
            check(
                case,
                &through_http(&http, case),
                &format!("http, {}", db.backend),
            );
        }
        assert_eq!(http.get("/health/live").status, 200, "the service survived");
        server.stop();
        check_after(&host, &db, &cases, &format!("http, {}", db.backend));
    }
}
