//! The store's errors, with the operation and model they concern.

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Url(String),
    #[error("cannot open the database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot open the database {url}: no connection within {} s; is the server running, and are the address and port right?",
        wait.as_secs()
    )]
    Unreachable {
        url: String,
        wait: std::time::Duration,
    },
    #[error("cannot migrate the database {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{operation} ({model}): {source}")]
    Query {
        operation: &'static str,
        model: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{operation} ({model}): stored data is invalid: {detail}")]
    Corrupt {
        operation: &'static str,
        model: String,
        detail: String,
    },
    /// No connection became free for the statement within the pool's wait: on SQLite this
    /// process's one writer connection stayed held by other writes, on PostgreSQL every
    /// connection of the pool stayed in use. Nothing of the statement was written; worth
    /// retrying once the database is less busy.
    #[error("{operation} ({model}): the database is busy: {wait}; nothing was written")]
    ConnectionWait {
        operation: &'static str,
        model: String,
        /// Which connection it waited for and for how long, with the setting that bounds it.
        wait: &'static str,
    },
    /// A position was not where its writer read it: another process moved it meanwhile
    /// (nothing of the transaction was written).
    #[error("the position '{name}' is no longer {expected}: another process moved it")]
    PositionMoved { name: String, expected: i64 },
}

impl StoreError {
    /// For `map_err` while opening the database at `url`: the failure, with the URL (its
    /// password hidden).
    pub(crate) fn opening(url: &str) -> impl Fn(sqlx::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Open {
            url: crate::redacted(url),
            source,
        }
    }

    /// When the database refused a statement because of the data in it — a constraint, a
    /// size or an encoding it does not take — its message (the database's own words, without
    /// the statement). `None` for everything else: a lost connection, a busy or read-only
    /// database, a serialisation failure, a key race (a unique violation: deciding again
    /// resolves it), which are worth retrying.
    pub fn refused(&self) -> Option<String> {
        let StoreError::Query {
            source: sqlx::Error::Database(db),
            ..
        } = self
        else {
            return None;
        };
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let about_data = if db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            // SQLSTATE classes: 22 data exception, 23 integrity constraint, 54 program limit
            // (an index row too large). 23505 is a unique violation: a race, not the data.
            (code.starts_with("22") || code.starts_with("23") || code.starts_with("54"))
                && code != "23505"
        } else {
            // SQLite's extended codes: the primary is the low byte. 18 TOOBIG, 19 CONSTRAINT
            // (but not its UNIQUE 2067 and PRIMARYKEY 1555: races), 20 MISMATCH.
            let extended: i32 = code.parse().unwrap_or(0);
            matches!(extended & 0xff, 18..=20) && !matches!(extended, 2067 | 1555)
        };
        about_data.then(|| {
            let message: String = db.message().chars().take(300).collect();
            if code.is_empty() {
                message
            } else {
                format!("{message} (code {code})")
            }
        })
    }
}

impl CommitError {
    /// See [`StoreError::refused`].
    pub fn refused(&self) -> Option<String> {
        match self {
            CommitError::Store(e) => e.refused(),
            _ => None,
        }
    }
}

/// Why a stage's commit did not happen. Nothing of the batch was written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another worker holds the stage's lease now (ours expired).
    #[error("the lease of {stage} for {model} is held by another worker")]
    LeaseLost { stage: &'static str, model: String },
    /// Another worker claimed some of the keys first; decide the batch again.
    #[error("keys already claimed by another worker: {0:?}")]
    KeyConflict(Vec<String>),
    /// The batch ran on a plugin version that is no longer the model's current one (another
    /// process made another version current); run it again on the current version.
    #[error("the current plugin version of {model} is now {current}")]
    VersionChanged { model: String, current: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Wraps an sqlx error with the operation and model.
pub(crate) fn query_error(
    operation: &'static str,
    model: &str,
) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
    query_error_waiting(operation, model, "no connection became free in time")
}

/// [`query_error`], where a connection that did not become free in time is told as
/// [`StoreError::ConnectionWait`] with `wait` (the backend's words for what it waited for).
pub(crate) fn query_error_waiting(
    operation: &'static str,
    model: &str,
    wait: &'static str,
) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
    let model = model.to_string();
    move |source| match source {
        sqlx::Error::PoolTimedOut => StoreError::ConnectionWait {
            operation,
            model,
            wait,
        },
        source => StoreError::Query {
            operation,
            model,
            source,
        },
    }
}
