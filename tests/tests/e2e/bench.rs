//! `flowhost-bench` runs its modes and reports in the documented shape (the numbers
//! themselves belong in BENCHMARKS.md, measured on the release build).

use flowhost_tests::{Host, Scratch, json_lines, text};

#[test]
fn bench_reports_every_mode_with_its_numbers() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let out = host.bench(&["--records", "1500", "--sample", "200", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = &json_lines(&out.stdout)[0];
    assert_eq!(v["records"], 1500);
    for mode in ["batched", "per_record", "floor"] {
        let m = &v["modes"][mode];
        assert!(m["records_per_s"].as_f64().unwrap() > 0.0, "{mode}: {m}");
        assert!(
            m["statements_per_1000_records"].as_f64().unwrap() > 0.0,
            "{mode}: {m}"
        );
        assert!(m["peak_rss_mb"].as_f64().unwrap() > 0.0, "{mode}: {m}");
        for stage in ["ingest", "associate", "project"] {
            assert!(m["stages_s"][stage].is_number(), "{mode}: {m}");
        }
    }
    assert_eq!(
        v["modes"]["per_record"]["sampled"], 200,
        "the per-record prefix is said"
    );
    // The floor writes the rows the pipeline wrote.
    let (batched, floor) = (&v["modes"]["batched"]["rows"], &v["modes"]["floor"]["rows"]);
    for rows in ["keys", "keyed", "parked", "views"] {
        assert_eq!(batched[rows], floor[rows], "{rows}: {batched} vs {floor}");
    }
    // On SQLite the plain reference runs beside them, with its ratios.
    let plain = &v["modes"]["plain"];
    assert_eq!(
        plain["records"], v["modes"]["batched"]["records"],
        "{plain}"
    );
    assert!(plain["records_per_s"].as_f64().unwrap() > 0.0, "{plain}");
    for ratio in ["batched_over_plain", "floor_over_plain"] {
        assert!(v["ratios"][ratio].as_f64().unwrap() > 0.0, "{ratio}: {v}");
    }
    // Batch size 1 costs far more statements per record than the batched pipeline.
    let stmts = |mode: &str| {
        v["modes"][mode]["statements_per_1000_records"]
            .as_f64()
            .unwrap()
    };
    assert!(stmts("per_record") > 20.0 * stmts("batched"), "{v}");
}

/// `bench plugin` finds the device component through `--plugins` (run from anywhere) and
/// reports each round's ratios beside their medians.
#[test]
fn bench_plugin_reports_every_round_and_the_medians() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let out = host.bench(&[
        "plugin",
        "--records",
        "600",
        "--batch",
        "100",
        "--rounds",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = &json_lines(&out.stdout)[0];
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{v}");
    for stage in ["associate", "project", "both"] {
        let result = &v["results"][stage];
        for field in [
            "wasm_records_per_s",
            "native_records_per_s",
            "wasm_over_native",
        ] {
            assert!(
                result[field].as_f64().unwrap() > 0.0,
                "{stage}.{field}: {v}"
            );
        }
        // The reported ratio is the middle one of the rounds'.
        let mut each: Vec<f64> = rounds.iter().map(|r| r[stage].as_f64().unwrap()).collect();
        each.sort_by(f64::total_cmp);
        assert_eq!(result["wasm_over_native"].as_f64().unwrap(), each[1], "{v}");
    }
    let zero = host.bench(&["plugin", "--rounds", "0"]);
    assert!(!zero.status.success());
    assert!(
        text(&zero.stderr).contains("--rounds"),
        "{}",
        text(&zero.stderr)
    );
}

#[test]
fn bench_tables_times_every_table_the_pipeline_writes() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let out = host.bench(&["tables", "--records", "1500", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = &json_lines(&out.stdout)[0];
    let tables: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    for table in [
        "(parse)", "intake", "queue", "keys", "keyed", "dirty", "views", "changes",
    ] {
        assert!(tables.contains(&table), "{table}: {v}");
    }
    for t in v["tables"].as_array().unwrap() {
        assert_eq!(t["rows"], v["records"], "{t}");
        assert!(t["us_per_row"].as_f64().unwrap() > 0.0, "{t}");
    }
    assert!(v["plain"]["records_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn bench_tables_is_for_sqlite_and_says_so() {
    let out = flowhost_tests::flowhost_bench(&[
        "--db",
        "postgres://postgres@127.0.0.1:5432/postgres",
        "tables",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("embedded SQLite"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn latency_under_steady_load_measures_every_record() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let out = host.bench(&["latency", "--rate", "500", "--seconds", "1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = &json_lines(&out.stdout)[0];
    assert_eq!(v["records"], v["measured"], "{v}");
    assert!(v["p99_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap());
}

#[test]
fn bench_faults_times_each_misbehaving_call_to_its_time_limit() {
    let fixtures = flowhost_tests::plugins_dir().join("fixtures");
    let out = flowhost_tests::flowhost_bench(&[
        "faults",
        "--wasm",
        fixtures.join("faulty.wasm").to_str().unwrap(),
        "--describe",
        fixtures.join("sleepy-describe.wasm").to_str().unwrap(),
        "--timeout-ms",
        "200",
        "--rounds",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = &json_lines(&out.stdout)[0];
    assert_eq!(v["limit_ms"], 200);
    for case in ["sleeps an hour", "polls an hour away", "spins"] {
        let ms = v["results"][case]["median_ms"].as_f64().unwrap();
        assert!((200.0..10_000.0).contains(&ms), "{case}: {ms} ms");
    }
    assert!(v["results"]["describe sleeps (compile + describe)"]["max_ms"].is_number());
}

#[test]
fn bench_hosts_spreads_one_workload_over_processes_on_postgres() {
    // The bench creates (and drops) databases of its own on the server of the one given.
    let Some(db) = Scratch::postgres() else {
        return;
    };
    let host = Host::new(&db.url);
    let out = host.bench(&["hosts", "--hosts", "1,2", "--records", "1500", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = &json_lines(&out.stdout)[0];
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{v}");
    for (run, n) in runs.iter().zip([1, 2]) {
        assert_eq!(run["hosts"], n, "{v}");
        assert_eq!(run["processes"].as_array().unwrap().len(), n, "{v}");
        assert!(run["records_per_s"].as_f64().unwrap() > 0.0, "{v}");
        // At least every record once (a parked record that heals is associated again).
        assert!(run["associated"].as_u64().unwrap() >= 1300, "{v}");
    }
    // A SQLite database is refused with a reason.
    let sqlite = Scratch::sqlite();
    let out = Host::new(&sqlite.url).bench(&["hosts", "--records", "10"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("PostgreSQL"),
        "{}",
        text(&out.stderr)
    );
}
