//! JSON errors: every refusal names what was wrong and what to do about it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowhost_store::StoreError;
use serde_json::{Value, json};

/// An error answer: a status and a message a person can act on, with optional extra
/// fields (counts of what was already processed, for instance).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub extra: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The database failed: the request may be retried. What the database said (SQL,
    /// names, paths) goes to the log under an error id; the client gets the id only.
    /// A database too busy to give the request a connection in time is no secret: the
    /// client is told so, and that nothing of the request was written.
    pub fn store(e: StoreError) -> Self {
        Self::store_while(
            e,
            "this request",
            "nothing of this request was written; retry later",
            json!({}),
        )
    }

    /// A store failure while `doing` something ("storing the batch that ends at line 7"):
    /// a 503 whose message says whether the database was busy (its wait, which is no
    /// secret) or failed (an error id for the log, never the database's words), then
    /// `outcome` (what of the request is durable and what to do). `extra` fields are kept
    /// and the error id, if any, added to them.
    pub fn store_while(e: StoreError, doing: &str, outcome: &str, mut extra: Value) -> Self {
        let what = if let StoreError::ConnectionWait { wait, .. } = &e {
            tracing::warn!("{doing} waited too long for the database: {e}");
            format!("{doing} waited too long for the database, which is busy ({wait})")
        } else {
            let id = logged(&e);
            extra["error_id"] = json!(id);
            format!(
                "{doing} failed on the database (error id {id}; the service's log has the details)"
            )
        };
        let error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{what}; {outcome}"),
        );
        match extra.as_object() {
            Some(fields) if fields.is_empty() => error,
            _ => error.with(extra),
        }
    }

    pub fn with(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

/// Logs what the database said under a new error id, and returns the id: the client is
/// given the id, never the database's words (SQL, names, paths).
pub fn logged(e: &StoreError) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let id = id[id.len() - 12..].to_string();
    tracing::warn!(error_id = id, "request failed on the database: {e}");
    id
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "status": self.status.as_u16()});
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        // Every 503 is worth retrying, in a moment.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flowhost admin\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::store(e)
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_reaches_the_client_as_an_id_only() {
        let e = StoreError::Query {
            operation: "read views",
            model: "device".into(),
            source: sqlx::Error::Protocol("SELECT secret FROM /var/lib/flowhost/x.db".into()),
        };
        let error = ApiError::store(e);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.message.contains("SELECT"), "{}", error.message);
        assert!(!error.message.contains("/var/lib"), "{}", error.message);
        let id = error.extra.as_ref().unwrap()["error_id"].as_str().unwrap();
        assert!(error.message.contains(id));
        let response = error.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_busy_database_is_told_as_such() {
        let e = StoreError::ConnectionWait {
            operation: "append intake",
            model: "*".into(),
            wait: "this process's one writer connection stayed held",
        };
        let error = ApiError::store(e);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error.message.contains("busy"), "{}", error.message);
        assert!(
            error.message.contains("writer connection"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("nothing of this request"),
            "{}",
            error.message
        );
    }
}
