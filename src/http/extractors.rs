//! Request context extractors: the authenticated session and the client.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use std::net::IpAddr;

use actix_web::{FromRequest, HttpRequest, web};
use ipnet::IpNet;

use super::{AppState, cookies};
use crate::domain::Error;
use crate::domain::core::ClientInfo;
use crate::domain::sessions::CurrentSession;

/// Longest User-Agent kept.
const MAX_USER_AGENT: usize = 512;

/// The caller's session, from `Authorization: Bearer lk_s_…`, else from the
/// browser session cookie (a state-changing request by cookie must pass the
/// CSRF check: 403 `csrf_rejected`). Any other failure is 401
/// `unauthorized`.
pub struct Authenticated(pub CurrentSession);

impl FromRequest for Authenticated {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = match bearer(req) {
            Some(token) => Ok(Some(token.to_owned())),
            None => match cookies::read(req, cookies::SESSION_COOKIE) {
                Ok(Some(token)) => cookies::check_csrf(req).map(|()| Some(token)),
                other => other,
            },
        };
        let client = Client::from_request(req, payload);
        Box::pin(async move {
            let state = state.ok_or_else(|| Error::Internal("application state missing".into()))?;
            let token = token?.ok_or(Error::Unauthorized)?;
            let Client(client) = client.await?;
            state.core.authenticate(&token, &client, chrono::Utc::now()).await.map(Authenticated)
        })
    }
}

/// The bearer token of the Authorization header, if well-formed.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Who is calling: the client's address and User-Agent.
pub struct Client(pub ClientInfo);

impl FromRequest for Client {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let proxies = req.app_data::<web::Data<AppState>>().map(|s| s.config.trusted_proxies.as_slice()).unwrap_or(&[]);
        std::future::ready(client_info(req, proxies).map(Client))
    }
}

pub fn client_info(req: &HttpRequest, trusted_proxies: &[IpNet]) -> Result<ClientInfo, Error> {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT).collect());
    let ip = client_ip(req.peer_addr().map(|a| a.ip()), req.headers(), trusted_proxies)?;
    Ok(ClientInfo { ip, user_agent })
}

/// The client address: the socket peer, unless the peer is a trusted proxy;
/// then the right-most `X-Forwarded-For` hop that is not a trusted proxy
/// (hops to its left are whatever the client claimed, and are ignored).
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &actix_web::http::header::HeaderMap,
    trusted_proxies: &[IpNet],
) -> Result<Option<IpAddr>, Error> {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(&ip.to_canonical()));
    // A dual-stack listener shows IPv4 peers as ::ffff:a.b.c.d.
    let Some(peer) = peer.map(|p| p.to_canonical()) else { return Ok(None) };
    if !trusted(&peer) {
        return Ok(Some(peer));
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().map_err(|_| malformed())?;
        for hop in text.split(',') {
            hops.push(hop.trim().parse::<IpAddr>().map_err(|_| malformed())?.to_canonical());
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !trusted(&hop) {
            break;
        }
    }
    Ok(Some(client))
}

fn malformed() -> Error {
    Error::InvalidRequest("X-Forwarded-For from a trusted proxy is not a list of IP addresses".into())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in xff {
            map.append(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_str(v).expect("value"));
        }
        map
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let peer = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        // An untrusted peer's header is ignored.
        assert_eq!(client_ip(peer("203.0.113.9"), &headers(&["1.2.3.4"]), &proxies).expect("valid"), ip("203.0.113.9"));
        // A trusted proxy: right-most untrusted hop.
        assert_eq!(
            client_ip(peer("10.0.0.2"), &headers(&["6.6.6.6, 198.51.100.7"]), &proxies).expect("valid"),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(peer("10.0.0.2"), &headers(&["6.6.6.6, 198.51.100.7, 10.1.1.1"]), &proxies).expect("valid"),
            ip("198.51.100.7"),
            "proxy chains are skipped"
        );
        assert_eq!(
            client_ip(peer("10.0.0.2"), &headers(&["6.6.6.6", "198.51.100.8"]), &proxies).expect("valid"),
            ip("198.51.100.8")
        );
        assert_eq!(client_ip(peer("10.0.0.2"), &headers(&[]), &proxies).expect("valid"), ip("10.0.0.2"));
        assert!(client_ip(peer("10.0.0.2"), &headers(&["not-an-ip"]), &proxies).is_err());
        assert!(client_ip(peer("10.0.0.2"), &headers(&["1.2.3.4,"]), &proxies).is_err());
        assert_eq!(client_ip(peer("203.0.113.9"), &headers(&["garbage"]), &proxies).expect("valid"), ip("203.0.113.9"));
    }
}
