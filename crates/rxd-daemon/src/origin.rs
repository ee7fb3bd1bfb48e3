//! Requests a web page makes on another site's behalf: refused before authentication, for every
//! route. A browser that holds the admin's client certificate presents it to any page's requests,
//! so a page on evil.example could otherwise trust its own certificate or start a container.
//!
//! Our clients (Debian's `lxc`, pylxd, `rxc`, curl) send no `Origin` and no `Sec-Fetch-Site`;
//! pylxd's websockets send `Origin: ws+unix://localhost` (or `wss://<host>` over HTTPS), which no
//! browser can send, since a browser's `Origin` is the page's own http(s) origin.

use crate::error::{ApiError, ApiResult};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method};

/// The layer: a request that changes state (any method but GET, HEAD and OPTIONS) or opens a
/// websocket (which CORS does not protect) must not come from another site.
pub async fn refuse_cross_site(req: Request, next: Next) -> Response {
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let upgrade = req.headers().contains_key(http::header::UPGRADE);
    if changes_state || upgrade {
        if let Err(e) = check_origin(req.headers()) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Refuse a request a browser marks as coming from another site (`Sec-Fetch-Site: cross-site` or
/// `same-site`, since a sibling subdomain is another party too), or whose `Origin` is not this
/// server: `https://<Host>` (or `http://` on the unix socket), or a websocket client's
/// `wss://<Host>`, `ws://<Host>` or `ws+unix://localhost`. No `Origin` at all is a CLI tool.
pub fn check_origin(headers: &HeaderMap) -> ApiResult<()> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(ApiError::Forbidden(format!(
                "Cross-site request refused (Sec-Fetch-Site: {site}): \
                 use a client, not a web page, to change this server"
            )));
        }
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if origin == "ws+unix://localhost" || is_own(origin, headers) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "Cross-site request refused: origin {origin:?} is not this server"
    )))
}

/// Is `origin` this server as the request's `Host` names it?
fn is_own(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if host.is_empty() {
        return false;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "https" | "http" | "wss" | "ws") && rest.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], ok: bool) {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        assert_eq!(check_origin(&h).is_ok(), ok, "{pairs:?}");
    }

    #[test]
    fn origins() {
        check(&[], true);
        check(&[("host", "h:8443")], true);
        check(&[("host", "h:8443"), ("origin", "https://h:8443")], true);
        check(&[("host", "h:8443"), ("origin", "HTTPS://H:8443")], false);
        check(&[("host", "H:8443"), ("origin", "https://h:8443")], true);
        check(&[("host", "h:8443"), ("origin", "wss://h:8443")], true);
        check(&[("host", "x"), ("origin", "ws+unix://localhost")], true);
        check(&[("host", "h:8443"), ("origin", "https://h:8444")], false);
        check(
            &[("host", "h:8443"), ("origin", "https://evil.example")],
            false,
        );
        check(
            &[("host", "h"), ("origin", "https://h.evil.example")],
            false,
        );
        check(&[("host", "h"), ("origin", "null")], false);
        check(&[("origin", "https://h")], false);
        check(&[("host", "h"), ("origin", "ftp://h")], false);
        check(&[("sec-fetch-site", "same-origin")], true);
        check(&[("sec-fetch-site", "none")], true);
        check(&[("sec-fetch-site", "same-site")], false);
        check(&[("sec-fetch-site", "cross-site")], false);
        check(
            &[
                ("host", "h"),
                ("origin", "https://h"),
                ("sec-fetch-site", "cross-site"),
            ],
            false,
        );
    }
}
