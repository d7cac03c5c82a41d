//! `flowhost serve`: runs the stages continuously, picks up what another process ingests
//! into the same database, and on SIGTERM finishes in-flight batches and exits 0.

use flowhost_tests::{Host, Scratch, block_until_ok, line, wait_for};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn serve_processes_what_another_process_ingests_and_stops_cleanly() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        // The database exists (and knows the models) before the service starts.
        block_until_ok(&host.ingest(&line("device", "bms", "D-1", json!({"serial":"A"}))));
        let mut server = host
            .command()
            .args(["--listen", "127.0.0.1:0", "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        wait_for("the first device", Duration::from_secs(60), || {
            host.export("canonical", "device").len() == 1
        });
        // Another process ingests while the service runs: devices, and a sensor before
        // its device.
        block_until_ok(&host.ingest(
            &(line(
                "sensor",
                "bms",
                "S-2",
                json!({"code":"T2","device_id":"D-2"}),
            ) + &line("device", "bms", "D-2", json!({"serial":"B"}))
                + &line("device", "oem", "X-2", json!({"serial":"b "}))),
        ));
        wait_for("the service to catch up", Duration::from_secs(60), || {
            host.export("canonical", "device").len() == 2
                && host.export("root", "sensor").len() == 1
                && host.parked().is_empty()
        });
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
        let status = server.wait().expect("serve exits");
        assert!(
            status.success(),
            "{}: serve exits 0 on SIGTERM: {status}",
            db.backend
        );
        let devices = host.export("canonical", "device");
        assert_eq!(devices[1]["canonical"]["serial"], json!(["B"]));
    }
}

#[test]
fn processes_opening_a_new_sqlite_file_at_once_all_succeed() {
    for _ in 0..3 {
        let db = Scratch::sqlite();
        let host = Host::new(&db.url);
        // The service and CLI commands often start together on a file that does not exist yet.
        let children: Vec<_> = (0..4)
            .map(|_| {
                host.command()
                    .args(["parked"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start flowhost")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("flowhost exits");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_host_without_plugins_says_so_until_one_arrives() {
    use flowhost_tests::{Http, Server, plugin, text};
    let db = Scratch::sqlite();
    let empty = tempfile::tempdir().unwrap();
    let host = Host {
        db: db.url.clone(),
        plugins: empty.path().to_path_buf(),
    };
    let said = format!("no plugins in {}", empty.path().display());
    let out = host.run(&["plugins", "list"]);
    assert!(
        !out.status.success(),
        "plugins list with nothing to list fails"
    );
    assert!(text(&out.stderr).contains(&said), "{}", text(&out.stderr));

    let mut server = Server::start(&host, &[]);
    let http = Http::new(&server.url());
    let ready = http.get("/health/ready");
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains(&said), "{}", ready.body);
    // A plugin dropped into the folder makes the host ready.
    std::fs::copy(plugin("device"), empty.path().join("device.wasm")).unwrap();
    wait_for("readiness", Duration::from_secs(30), || {
        http.get("/health/ready").status == 200
    });
    let (status, log) = server.stop_with_log();
    assert!(status.success());
    assert!(log.contains(&said), "serve warns: {log}");
}
