//! The OpenAPI document (`GET /openapi.json`): built from the handlers' `#[utoipa::path]`
//! descriptions by the same router that serves them (`utoipa_axum`), so a route cannot be
//! served without being described, nor described without being served.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document's frame; the routes add their paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "flowhost",
        description = "Records in; one canonical, lineage-tracked view per real-world thing out. \
                       Views and parked records as NDJSON pages, the change feed, the models, \
                       plugins and hosts, health and metrics, and the admin actions.",
    ),
    modifiers(&AdminToken),
    tags(
        (name = "intake", description = "Records in"),
        (name = "read", description = "Views, parked records, the change feed, models, plugins, hosts"),
        (name = "admin", description = "Actions; need `Authorization: Bearer <token>` when `server.admin_token` is set"),
        (name = "health", description = "Probes and metrics"),
    )
)]
pub(crate) struct ApiDoc;

/// The bearer token of the admin routes.
struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every error answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Described, never built: the handlers answer through `ApiError`.
pub(crate) struct ApiErrorBody {
    /// What is wrong and what to do.
    error: String,
    /// The HTTP status again.
    status: u16,
    /// When the database failed: the id under which the service's log has the details.
    error_id: Option<String>,
}

/// The answer to an intake request.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Described, never built: the handler answers with JSON it builds.
pub(crate) struct IntakeAnswer {
    accepted: u64,
    duplicates: u64,
    refused: u64,
    /// The first 100 refused lines.
    errors: Vec<RefusedLine>,
    /// How many refused lines are not listed.
    errors_not_listed: Option<u64>,
}

/// One refused line.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Described, never built.
pub(crate) struct RefusedLine {
    line: u64,
    error: String,
}
