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
    let model = model.to_string();
    move |source| StoreError::Query {
        operation,
        model,
        source,
    }
}
