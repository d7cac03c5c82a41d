//! A `flowhost serve` child process.

use crate::{Host, wait_for};
use std::path::PathBuf;
use std::process::Command;

/// A running `flowhost serve`, its log in a file; stopped (SIGKILL) when dropped.
pub struct Server {
    child: std::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `serve` for `host` with extra global arguments, logging at info.
    pub fn start(host: &Host, args: &[&str]) -> Server {
        Self::start_command(host.command(), args)
    }

    /// Starts `serve` from a prepared command (`Host::command` with changes, say another
    /// environment) with extra global arguments, logging at info.
    pub fn start_command(mut command: Command, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("serve.log");
        let file = std::fs::File::create(&log).expect("log file");
        if !args.contains(&"--log") {
            command.args(["--log", "info"]);
        }
        // Tests run side by side: each server takes a free port (see `url`).
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let child = command
            .args(args)
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start serve");
        Server {
            child,
            log,
            _dir: dir,
        }
    }

    /// What the service has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP API's base URL (`http://127.0.0.1:PORT`), once the server says it listens.
    pub fn url(&mut self) -> String {
        let mut found = None;
        let deadline = std::time::Duration::from_secs(120);
        wait_for("the server to listen", deadline, || {
            let log = self.log();
            // Whole lines only: the last one may be half written yet.
            found = log
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(|u| u.trim_end_matches(',').to_string());
            assert!(
                found.is_some() || self.running(),
                "serve exited before listening:\n{log}"
            );
            found.is_some()
        });
        found.expect("found")
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the process to exit, with its status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("serve exits")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the exit status and everything the service logged.
    pub fn stop_with_log(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("serve exits");
        (status, self.log())
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("serve exits")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
