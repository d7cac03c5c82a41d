//! The operator page (`GET /`) in a real browser: Debian's Chromium driven by
//! `tests/browser/page.mjs` (playwright-core) against a running `serve` with the demo data.
//! The counts on the page equal `GET /v1/models`; parked records filter by reason; a
//! re-queue without the token shows the refusal, with it the records leave parked; a
//! rollback changes the version shown; the page fits a phone's width. Screenshots are left
//! in `target/screenshots/`. `cargo xtask test` installs Chromium and the script's package
//! when they are missing; without them this test fails under `CI=true` and is passed over
//! elsewhere.

use flowhost_tests::{
    Host, Http, Scratch, Server, block_until_ok, flowhost, own_plugins, plugin, replace_atomically,
    root, target_dir, text, version_of, wait_for,
};
use std::time::Duration;

const TOKEN: &str = "page-test-token";

/// Chromium, node and the script's package, or why not.
fn browser_ready() -> Result<(), String> {
    let chromium =
        std::env::var("FLOWHOST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Err(format!("{chromium} is missing (apt-get install chromium)"));
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Err("tests/browser/node_modules is missing (npm ci --prefix tests/browser)".into());
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("node is missing".into()),
    }
}

#[test]
fn the_operator_page_shows_the_models_filters_parked_records_and_acts_with_the_token() {
    if let Err(why) = browser_ready() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the browser test cannot run under CI: {why}"
        );
        eprintln!("the browser test does not run: {why}");
        return;
    }
    // The demo data, processed before the host starts.
    let db = Scratch::sqlite();
    let folder = own_plugins();
    let host = Host::with_plugins(&db.url, folder.path());
    let workload = {
        let out = flowhost(&["generate", "--records", "3000"]);
        block_until_ok(&out);
        text(&out.stdout)
    };
    block_until_ok(&host.ingest(&workload));
    host.process();

    // Association and projection stay idle while the page acts (a re-queued record stays
    // pending, so the test can see it leave parked).
    let mut server = Server::start(
        &host,
        &[
            "--admin-token",
            TOKEN,
            "--set",
            "stages.idle_poll_ms=600000",
            "--set",
            "stages.intake_wakes_association=false",
        ],
    );
    let base = server.url();
    let http = Http::new(&base);

    // A second device version, so the page has one to roll back from.
    let v1 = version_of(&plugin("device"));
    let v2_file = flowhost_tests::plugins_dir().join("fixtures/device-v2.wasm");
    let v2 = version_of(&v2_file);
    replace_atomically(&v2_file, &folder.path().join("device.wasm"));
    wait_for("device v2 to be current", Duration::from_secs(120), || {
        http.get("/v1/models").json()["models"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["model"] == "device" && m["plugin_version"] == v2.as_str())
    });

    // Version 1 tried beside it in a shadow run, which the page shows under the plugin.
    std::fs::create_dir_all(folder.path().join("shadow")).unwrap();
    replace_atomically(&plugin("device"), &folder.path().join("shadow/device.wasm"));
    wait_for("the shadow run to start", Duration::from_secs(120), || {
        http.get("/v1/plugins/device/shadow").status == 200
    });

    let shots = target_dir().join("screenshots");
    let out = std::process::Command::new("node")
        .arg(root().join("tests/browser/page.mjs"))
        .args([base.as_str(), TOKEN])
        .arg(&shots)
        .arg(&v1)
        .output()
        .expect("run node");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    eprintln!("{stdout}");
    assert!(shots.join("operator-page.png").exists());
    assert!(shots.join("operator-page-phone.png").exists());
    assert!(server.stop().success());
}

#[test]
fn the_page_and_its_assets_carry_a_strict_content_security_policy() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut server = Server::start(&host, &[]);
    let http = Http::new(&server.url());
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let answer = http.get(path);
        assert_eq!(answer.status, 200, "{path}");
        assert!(
            answer.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        let csp = answer.header("content-security-policy").expect("a policy");
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert_eq!(
            answer.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    let page = http.get("/").body;
    assert!(!page.contains("<script>"), "no inline script");
    assert!(!page.contains("style="), "no inline style");
    assert!(server.stop().success());
}
