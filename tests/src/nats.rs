//! NATS JetStream for the tests: the machine's server (127.0.0.1:4222, or
//! `FLOWHOST_TEST_NATS`), with stream and subject names of each test's own, and a private
//! `nats-server` process for tests that stop and start the broker.

use std::path::PathBuf;
use std::time::Duration;

/// The machine's NATS server.
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// A test's own names on a NATS server: streams `T<n>_IN`, `T<n>_CH`, `T<n>_REF` over
/// subjects `t<n>.intake.>`, `t<n>.changes.>`, `t<n>.refused.>`; deleted when dropped.
pub struct NatsNames {
    pub url: String,
    pub prefix: String,
    pub intake_stream: String,
    pub changes_stream: String,
    pub refused_stream: String,
    runtime: tokio::runtime::Runtime,
    pub js: async_nats::jetstream::Context,
}

/// A runtime of its own for the test's NATS client.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

impl NatsNames {
    /// Names on the machine's server; `None` when it is unreachable outside CI (under
    /// `CI=true` that fails the test).
    pub fn machine() -> Option<NatsNames> {
        let url = std::env::var("FLOWHOST_TEST_NATS").unwrap_or_else(|_| NATS_URL.to_string());
        match Self::on(&url) {
            Ok(names) => Some(names),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "NATS at {url} is unreachable under CI: {e}"
                );
                eprintln!("NATS unreachable ({e}); this test does not run");
                None
            }
        }
    }

    /// Names on the server at `url`.
    pub fn on(url: &str) -> Result<NatsNames, String> {
        let runtime = runtime();
        let js = runtime
            .block_on(async {
                async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await
                    .map(async_nats::jetstream::new)
            })
            .map_err(|e| e.to_string())?;
        let n = crate::scratch::unique_suffix().replace('_', "x");
        Ok(NatsNames {
            url: url.to_string(),
            prefix: format!("t{n}"),
            intake_stream: format!("T{n}_IN"),
            changes_stream: format!("T{n}_CH"),
            refused_stream: format!("T{n}_REF"),
            js,
            runtime,
        })
    }

    /// The `--set` arguments that point `serve` at these names.
    pub fn settings(&self) -> Vec<String> {
        let p = &self.prefix;
        [
            format!("intake.nats_url={}", self.url),
            format!("intake.nats_stream={}", self.intake_stream),
            format!("intake.nats_subjects={p}.intake.>"),
            format!("intake.nats_consumer={p}"),
            format!("intake.nats_refused_subject={p}.refused"),
            format!("intake.nats_refused_stream={}", self.refused_stream),
            format!("changes.nats_stream={}", self.changes_stream),
            format!("changes.nats_subject={p}.changes"),
        ]
        .into_iter()
        .flat_map(|s| ["--set".to_string(), s])
        .collect()
    }

    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// Creates the intake stream as the host would.
    pub fn create_intake_stream(&self) {
        let config = async_nats::jetstream::stream::Config {
            name: self.intake_stream.clone(),
            subjects: vec![format!("{}.intake.>", self.prefix)],
            ..Default::default()
        };
        self.block_on(self.js.get_or_create_stream(config))
            .expect("create the intake stream");
    }

    /// Publishes each body to `<prefix>.intake.<model>`, awaiting every acknowledgement;
    /// returns the last stream sequence.
    pub fn publish(&self, model: &str, bodies: &[String]) -> u64 {
        self.publish_to(&format!("{}.intake.{model}", self.prefix), bodies)
    }

    /// Publishes each body to `subject`, awaiting every acknowledgement (256 at a time);
    /// returns the last stream sequence.
    pub fn publish_to(&self, subject: &str, bodies: &[String]) -> u64 {
        self.block_on(async {
            let mut acks = Vec::with_capacity(bodies.len());
            let mut last = 0;
            for chunk in bodies.chunks(256) {
                for body in chunk {
                    let ack = self
                        .js
                        .publish(subject.to_string(), body.clone().into())
                        .await
                        .expect("publish");
                    acks.push(ack);
                }
                for ack in acks.drain(..) {
                    last = ack.await.expect("the stream takes the message").sequence;
                }
            }
            last
        })
    }

    /// Every message of a stream, oldest first: (subject, body).
    pub fn read_all(&self, stream: &str) -> Vec<(String, String)> {
        use futures::StreamExt;
        self.block_on(async {
            let Ok(mut s) = self.js.get_stream(stream).await else {
                return Vec::new();
            };
            let total = s.info().await.expect("stream info").state.messages as usize;
            if total == 0 {
                return Vec::new();
            }
            let consumer = s
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    ..Default::default()
                })
                .await
                .expect("an ordered consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut out = Vec::with_capacity(total);
            while out.len() < total {
                let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
                    .await
                    .expect("messages within 30 s")
                    .expect("a message")
                    .expect("no error");
                out.push((
                    m.subject.to_string(),
                    String::from_utf8_lossy(&m.payload).into_owned(),
                ));
            }
            out
        })
    }
}

impl Drop for NatsNames {
    fn drop(&mut self) {
        let js = self.js.clone();
        let streams = [
            self.intake_stream.clone(),
            self.changes_stream.clone(),
            self.refused_stream.clone(),
        ];
        self.runtime.block_on(async move {
            for s in streams {
                let _ = js.delete_stream(s).await;
            }
        });
    }
}

/// A `nats-server` of the test's own (JetStream on, its store in a temporary folder), on a
/// port of its own: stopped and started again to play a broker outage.
pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

/// Where `nats-server` is.
fn nats_server_binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// A port nothing listens on yet, and the server not started.
    pub fn new() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        NatsServer {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it and waits until it answers.
    pub fn start(&mut self) {
        let child = std::process::Command::new(nats_server_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        self.child = Some(child);
        let port = self.port;
        crate::wait_for("nats-server to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills it (SIGKILL): the broker is gone at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Default for NatsServer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
