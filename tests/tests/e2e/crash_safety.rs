//! Crash safety: the real binary is killed with SIGKILL while it ingests and while it
//! processes, at several moments, then resumed; every view and every value-object record
//! must equal an uninterrupted run's: nothing lost, nothing duplicated.

use flowhost_store::Store;
use flowhost_tests::{Host, Scratch, block_until_ok, snapshot, text, wait_for};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn counts(url: &str) -> flowhost_store::Counts {
    let url = url.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let store = Store::open(&url).await.unwrap();
                let c = store.counts().await.unwrap();
                store.close().await;
                c
            })
    })
    .join()
    .unwrap()
}

fn keyed(c: &flowhost_store::Counts) -> i64 {
    c.keyed.iter().map(|(_, n)| n).sum()
}

/// Sends SIGKILL, then reaps the child; true when it was still running.
fn kill(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    running
}

fn spawn(host: &Host, args: &[&str]) -> Child {
    let mut cmd: Command = host.command();
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flowhost")
}

#[test]
fn killed_ingest_and_process_lose_and_duplicate_nothing() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("workload.ndjson");
    let generated = Host::new("sqlite://unused.db").run(&["generate", "--records", "30000"]);
    block_until_ok(&generated);
    std::fs::write(&file, &generated.stdout).unwrap();
    let file = file.to_str().unwrap().to_string();

    // The uninterrupted run.
    let reference_db = Scratch::sqlite();
    let reference = Host::new(&reference_db.url);
    block_until_ok(&reference.run(&["ingest", &file]));
    reference.process();
    let expected = snapshot(&reference);
    let total = counts(&reference_db.url);

    // The same input, killed twice during ingest and twice during process.
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut kills = 0;
    for at in [3_000, 15_000] {
        let mut child = spawn(&host, &["ingest", &file]);
        wait_for("intake to progress", Duration::from_secs(120), || {
            counts(&db.url).intake >= at || child.try_wait().unwrap().is_some()
        });
        kills += kill(&mut child) as u32;
    }
    let resumed = host.run(&["ingest", &file]);
    block_until_ok(&resumed);
    let summary = text(&resumed.stdout);
    assert_eq!(
        counts(&db.url).intake,
        total.intake,
        "every record once: {summary}"
    );

    let all = keyed(&total);
    for at in [all / 4, all * 3 / 4] {
        let mut child = spawn(&host, &["process", "--until-idle", "--batch-size", "300"]);
        wait_for("association to progress", Duration::from_secs(120), || {
            keyed(&counts(&db.url)) >= at || child.try_wait().unwrap().is_some()
        });
        kills += kill(&mut child) as u32;
    }
    assert!(
        kills >= 2,
        "the kills should land while the process runs ({kills} did)"
    );
    host.process();

    let after = counts(&db.url);
    assert_eq!(after.keyed, total.keyed, "keyed records per model");
    assert_eq!(
        after.parked, total.parked,
        "parked records per model and reason"
    );
    assert_eq!(after.references, total.references);
    assert_eq!(snapshot(&host), expected);
}
