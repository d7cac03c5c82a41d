//! What a newcomer runs into in the first hour: `process --until-idle` beside another
//! process, the bounded `plugins test` summary, and the README's plugin walkthrough.

use flowhost_tests::{Host, Scratch, block_until_ok, execute, snapshot, text};
use std::io::BufRead;
use std::process::Stdio;

/// A host elsewhere (not this machine, so never taken for dead) that holds a lease until
/// far in the future, since a known time.
const ELSEWHERE: &str = "elsewhere.example/4242/cafe";

fn workload(records: &str) -> String {
    let out = flowhost_tests::flowhost(&["generate", "--records", records]);
    block_until_ok(&out);
    text(&out.stdout)
}

#[test]
fn process_until_idle_waits_for_another_process_at_work_and_no_wait_names_it() {
    let input = workload("600");
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        block_until_ok(&host.ingest(&input));
        execute(
            &db.url,
            &[&format!(
                "INSERT INTO leases (stage, model, holder, expires_micros, since_micros) \
                 VALUES ('associate', 'device', '{ELSEWHERE}', 9000000000000000, \
                 1764500000000000)"
            )],
        );

        // Without waiting: an error that names the holder, the stage, the model and since
        // when, and a failing exit code.
        let out = host.run(&["process", "--until-idle", "--no-wait"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", db.backend);
        for part in [
            ELSEWHERE,
            "associate lease of model 'device'",
            "since 2025-11-30T10:53:20Z",
            "records wait for association",
        ] {
            assert!(
                err.contains(part),
                "{}: '{part}' missing in: {err}",
                db.backend
            );
        }

        // Waiting: it says whom it waits for, and goes on once the lease is free.
        let mut child = host
            .command()
            .args(["process", "--until-idle"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start process");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut said = String::new();
        loop {
            let mut l = String::new();
            let n = stderr.read_line(&mut l).expect("read stderr");
            assert!(
                n > 0,
                "{}: process ended without waiting: {said}",
                db.backend
            );
            said.push_str(&l);
            if l.contains("waiting: process") && l.contains(ELSEWHERE) {
                break;
            }
        }
        assert!(child.try_wait().expect("poll").is_none(), "it waits");
        execute(
            &db.url,
            &["DELETE FROM leases WHERE holder = 'elsewhere.example/4242/cafe'"],
        );
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).expect("read stderr");
        let status = child.wait().expect("process exits");
        assert!(status.success(), "{}: {said}{rest}", db.backend);

        // The same outcome as a run nobody got in the way of.
        let alone = Scratch::sqlite();
        let reference = Host::new(&alone.url);
        block_until_ok(&reference.ingest(&input));
        reference.process();
        assert_eq!(snapshot(&host), snapshot(&reference), "{}", db.backend);
    }
}

#[test]
fn plugins_test_prints_a_bounded_summary_and_everything_only_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("workload.ndjson");
    std::fs::write(&input, workload("3000") + "not json\n{}\n[]\n\"x\"\n").expect("write");
    let device = flowhost_tests::plugin("device");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "plugins".to_string(),
            "test".into(),
            device.display().to_string(),
            input.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        flowhost_tests::flowhost(&a)
    };

    let summary = run(&[]);
    let (out, err) = (text(&summary.stdout), text(&summary.stderr));
    assert_eq!(
        summary.status.code(),
        Some(1),
        "refused lines fail it: {err}"
    );
    assert!(out.lines().count() < 40, "bounded:\n{out}");
    assert!(
        err.lines().count() <= 4,
        "three refused lines and a count:\n{err}"
    );
    assert!(err.contains("… and 1 more refused lines"), "{err}");
    for part in [
        "records of model 'device'",
        "lines of other models skipped, 4 refused",
        "keyed to a reference, e.g.",
        "references projected; the first 3:",
        "--all (readable) or --json",
    ] {
        assert!(out.contains(part), "'{part}' missing in:\n{out}");
    }
    // The examples are the first records, and the references come in file order.
    let first_ref = out
        .lines()
        .find(|l| l.starts_with("ref-"))
        .expect("a reference");
    assert!(first_ref.starts_with("ref-1 (lines [1,"), "{first_ref}");

    let all = run(&["--all"]);
    let out_all = text(&all.stdout);
    let devices: usize = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the record count");
    let decisions = out_all.lines().filter(|l| l.starts_with("line ")).count();
    assert_eq!(decisions, devices, "--all prints every decision");
    assert!(
        text(&all.stderr).lines().count() >= 4,
        "and every refused line"
    );
}

/// The fenced block after `<!-- walkthrough -->` in README.md.
fn readme_walkthrough() -> String {
    let readme =
        std::fs::read_to_string(flowhost_tests::root().join("README.md")).expect("README.md");
    let after = readme
        .split("<!-- walkthrough -->")
        .nth(1)
        .expect("README.md has a walkthrough block");
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a sh block after the marker");
    block.to_string()
}

#[test]
fn the_readme_plugin_walkthrough_works_as_written_against_a_running_host() {
    // A copy of the repository (what git tracks, and new files), so the walkthrough's new
    // plugin folder does not touch this checkout; its build lands in a target folder kept
    // under this checkout's, so only the first run compiles the SDK for wasm.
    let root = flowhost_tests::root();
    let files = std::process::Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ])
        .current_dir(&root)
        .output()
        .expect("git ls-files");
    assert!(files.status.success(), "{}", text(&files.stderr));
    let copy = tempfile::tempdir().expect("temp dir");
    for file in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = std::path::Path::new(std::str::from_utf8(file).expect("UTF-8 path"));
        let (from, to) = (root.join(rel), copy.path().join(rel));
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&from, &to).expect("copy");
    }
    let target = flowhost_tests::target_dir().join("walkthrough");
    std::fs::create_dir_all(&target).expect("target");
    std::os::unix::fs::symlink(&target, copy.path().join("target")).expect("symlink");

    // A running host on its own folder and database, serving the example plugins.
    let db = Scratch::sqlite();
    let folder = tempfile::tempdir().expect("plugins folder");
    for model in ["device", "sensor", "reading"] {
        std::fs::copy(
            flowhost_tests::plugin(model),
            folder.path().join(format!("{model}.wasm")),
        )
        .expect("copy plugin");
    }
    let host = Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    };
    let mut server = flowhost_tests::Server::start(&host, &[]);
    let http = flowhost_tests::Http::new(&server.url());

    let bin_dir = flowhost_tests::binary()
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &readme_walkthrough()])
        .current_dir(copy.path())
        .env("PATH", path)
        .env("FLOWHOST_PLUGINS", folder.path())
        .env("FLOWHOST_DB", &db.url)
        .env("FLOWHOST_CACHE_DIR", flowhost_tests::cache_dir())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run the walkthrough");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{stdout}\n{stderr}"
    );
    assert!(
        copy.path()
            .join("target/wasm32-wasip2/plugin/plugin_pump.wasm")
            .is_file(),
        "the component is where the README says"
    );
    assert!(
        stdout.contains("pump"),
        "check and test speak of pump:\n{stdout}"
    );
    assert!(stdout.contains("2 keyed to a reference"), "{stdout}");

    // What the README says happens next.
    flowhost_tests::wait_for(
        "the host to serve pump",
        std::time::Duration::from_secs(120),
        || {
            http.get("/v1/plugins").json()["plugins"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["model"] == "pump"))
        },
    );
    block_until_ok(&host.run(&[
        "ingest",
        &copy.path().join("pump.ndjson").display().to_string(),
    ]));
    flowhost_tests::wait_for("one pump", std::time::Duration::from_secs(60), || {
        host.export("canonical", "pump").len() == 1
    });
    let pump = &host.export("canonical", "pump")[0];
    assert_eq!(
        pump["canonical"]["vendor"],
        serde_json::json!(["Acme"]),
        "{pump}"
    );
    assert_eq!(
        pump["canonical"]["name"],
        serde_json::json!(["Pump 7"]),
        "{pump}"
    );
    server.stop();
}
