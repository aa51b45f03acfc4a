//! The caller's devices.

use actix_web::{HttpResponse, delete, get, put, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Error;
use crate::domain::devices::DeviceRecord;
use crate::domain::states::Trust;
use crate::http::AppState;
use crate::http::error::problem;
use crate::http::extractors::{Authenticated, Client};

#[derive(Serialize, ToSchema)]
pub struct DeviceItem {
    #[schema(example = "dv_3q2b7x9k")]
    pub device_id: String,
    #[schema(example = "Alice's iPhone")]
    pub name: Option<String>,
    pub trust: Trust,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub first_seen_at: DateTime<Utc>,
    #[schema(example = "2026-05-01T12:00:00Z")]
    pub last_seen_at: DateTime<Utc>,
    #[schema(example = "203.0.113.7")]
    pub last_ip: Option<String>,
    #[schema(example = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")]
    pub user_agent: Option<String>,
}

impl From<DeviceRecord> for DeviceItem {
    fn from(d: DeviceRecord) -> Self {
        Self {
            device_id: d.id,
            name: d.name,
            trust: d.trust,
            first_seen_at: d.first_seen_at,
            last_seen_at: d.last_seen_at,
            last_ip: d.last_ip,
            user_agent: d.user_agent,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceItem>,
}

/// The devices the caller has logged in from.
#[utoipa::path(
    operation_id = "list_devices",
    tag = "devices",
    security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = DeviceList), (status = 400, response = problem::TokenInQuery), (status = 401, response = problem::Unauthorized))
)]
#[get("/v1/devices")]
pub async fn list(state: web::Data<AppState>, Authenticated(session): Authenticated) -> Result<HttpResponse, Error> {
    let devices = state.core.list_devices(&session).await?;
    Ok(HttpResponse::Ok().json(DeviceList { devices: devices.into_iter().map(Into::into).collect() }))
}

/// Forget a device and revoke its sessions.
#[utoipa::path(
    tag = "devices",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 204),
        (status = 400, response = problem::TokenInQuery),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::CsrfRejected),
        (status = 404, response = problem::NotFound),
    )
)]
#[delete("/v1/devices/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state.core.remove_device(&session, &id, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustBody {
    /// `trusted` or `unknown`. A trusted device is not locked out by failed
    /// logins from elsewhere; only an admin can block or unblock.
    pub trust: Trust,
}

/// Mark one of the caller's devices trusted (or back to unknown).
#[utoipa::path(
    tag = "devices",
    security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = String, Path, description = "Device id")),
    request_body = TrustBody,
    responses(
        (status = 204),
        (status = 400, response = problem::BadRequest),
        (status = 401, response = problem::UnauthorizedOrStepUp),
        (status = 403, response = problem::DeviceTrustAdminOnly),
        (status = 404, response = problem::NotFound),
        (status = 413, response = problem::PayloadTooLarge),
        (status = 415, response = problem::UnsupportedMediaType),
    )
)]
#[put("/v1/devices/{id}/trust")]
pub async fn trust(
    state: web::Data<AppState>,
    Authenticated(session): Authenticated,
    Client(client): Client,
    id: web::Path<String>,
    body: web::Json<TrustBody>,
) -> Result<HttpResponse, Error> {
    state.core.set_own_device_trust(&session, &id, body.trust, &client, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}
