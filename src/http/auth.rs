//! Request context extractors: the authenticated session and the client.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::AppState;
use crate::domain::Error;
use crate::domain::core::ClientInfo;
use crate::domain::sessions::CurrentSession;

/// Longest User-Agent kept.
const MAX_USER_AGENT: usize = 512;

/// The caller's session, from `Authorization: Bearer lk_s_…`. Any failure
/// is 401 `unauthorized`.
pub struct Authenticated(pub CurrentSession);

impl FromRequest for Authenticated {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req).map(str::to_owned);
        Box::pin(async move {
            let state = state.ok_or_else(|| Error::Internal("application state missing".into()))?;
            let token = token.ok_or(Error::Unauthorized)?;
            state.core.authenticate(&token, chrono::Utc::now()).await.map(Authenticated)
        })
    }
}

/// The bearer token of the Authorization header, if well-formed.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Who is calling: the socket peer's address and the User-Agent.
pub struct Client(pub ClientInfo);

impl FromRequest for Client {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Client(client_info(req))))
    }
}

pub fn client_info(req: &HttpRequest) -> ClientInfo {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT).collect());
    ClientInfo { ip: req.peer_addr().map(|a| a.ip()), user_agent }
}
