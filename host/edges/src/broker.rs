//! What a broker edge (NATS JetStream intake and the change-feed relay, `flowhost-nats`)
//! says of itself, for the HTTP API to show: `/health/ready` lists its problems as
//! `degraded` (the host stays ready: HTTP intake and processing go on without the broker),
//! `/metrics` shows its lags.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared between the broker's tasks (writers) and the HTTP handlers (readers).
#[derive(Clone, Debug, Default)]
pub struct BrokerStatus(Arc<Mutex<BrokerState>>);

/// A snapshot of the broker edge's state.
#[derive(Clone, Debug, Default)]
pub struct BrokerState {
    /// The broker's address (credentials left out).
    pub url: String,
    /// Whether the connection is up now.
    pub connected: bool,
    /// Since when it is down (microseconds since the epoch), when it is.
    pub down_since_micros: Option<i64>,
    /// The last failure of each part (`intake`, `relay`), cleared when that part works again.
    pub problems: BTreeMap<&'static str, String>,
    /// Messages in the intake stream not yet appended (the shared consumer's pending count),
    /// when known.
    pub intake_lag: Option<u64>,
    /// The last intake stream sequence whose records are durable.
    pub intake_position: i64,
    /// Changes recorded but not yet relayed to the changes stream, when known.
    pub outbox_lag: Option<i64>,
    /// The last change relayed.
    pub relay_position: i64,
}

impl BrokerStatus {
    pub fn new(url: String) -> Self {
        let status = Self::default();
        status.update(|s| {
            s.url = url;
            s.down_since_micros = Some(flowhost_store::now_micros());
        });
        status
    }

    /// Changes the state under its lock.
    pub fn update(&self, change: impl FnOnce(&mut BrokerState)) {
        change(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn snapshot(&self) -> BrokerState {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records that the connection came up or went down.
    pub fn set_connected(&self, up: bool) {
        self.update(|s| {
            if s.connected != up {
                s.down_since_micros = (!up).then(flowhost_store::now_micros);
            }
            s.connected = up;
        });
    }

    /// Records a part's failure (`Some`) or that it works again (`None`).
    pub fn set_problem(&self, part: &'static str, problem: Option<String>) {
        self.update(|s| match problem {
            Some(p) => {
                s.problems.insert(part, p);
            }
            None => {
                s.problems.remove(part);
            }
        });
    }

    /// What is wrong, one line each; empty when all is well.
    pub fn degraded(&self) -> Vec<String> {
        let s = self.snapshot();
        let mut out = Vec::new();
        if !s.connected {
            let since = s
                .down_since_micros
                .map(|m| format!(" since {}", crate::models::when(m)))
                .unwrap_or_default();
            out.push(format!(
                "NATS at {} is not connected{since}: intake from it and the change relay wait (HTTP intake and processing go on)",
                s.url
            ));
        }
        for (part, problem) in &s.problems {
            out.push(format!("NATS {part}: {problem}"));
        }
        out
    }
}
