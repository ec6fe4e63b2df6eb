//! Local mode's `Host` allow-list (threat row 39): a defence against DNS rebinding.
//!
//! A web page on `evil.example` can make its own name resolve to 127.0.0.1 and then talk to
//! `http://evil.example:8787/` from the victim's browser as a same-origin page: Origin checks pass, since
//! the browser believes it is talking to evil.example. What the page cannot change is the `Host` header, which
//! stays `evil.example:8787`. So every route of the local server (request API, Slack interactions,
//! simulator, health) answers `421 misdirected_request` unless `Host` is the listen address or one of
//! `localhost:PORT`, `127.0.0.1:PORT`, `[::1]:PORT`. A request without a `Host` (HTTP/1.0) is refused too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use countersign_lambda::http::error::ApiError;

/// The `Host` values the server answers to, lower-case.
#[derive(Debug, Clone)]
pub struct AllowedHosts(Arc<Vec<String>>);

impl AllowedHosts {
    /// For a server listening on `addr` (the address it actually bound, port included).
    pub fn for_listener(addr: SocketAddr) -> Self {
        let port = addr.port();
        let hosts =
            [addr.to_string(), format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
        Self(Arc::new(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect()))
    }

    /// Host names are case-insensitive; nothing else is normalized (no default port, no trailing dot).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.contains(&host)
    }
}

fn misdirected(message: &str) -> Response {
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, "misdirected_request", message).into_response()
}

/// `axum::middleware::from_fn_with_state(allowed, require_local_host)`, around the whole router.
pub async fn require_local_host(State(allowed): State<AllowedHosts>, req: Request, next: Next) -> Response {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().ok(),
        _ => None,
    };
    // An absolute-form target (`GET http://evil.example/ HTTP/1.1`) names the host too: it must agree.
    let target = req.uri().authority().map(|a| a.as_str());
    let ok = match (host, target) {
        (Some(h), None) => allowed.allows(h),
        (Some(h), Some(t)) => allowed.allows(h) && allowed.allows(t),
        (None, _) => false,
    };
    if ok {
        return next.run(req).await;
    }
    tracing::warn!(
        host = host.unwrap_or("(none)"),
        path = %req.uri().path(),
        "refused a request for another host (DNS rebinding?)"
    );
    misdirected(
        "this local Countersign server answers only to its listen address, localhost, 127.0.0.1 and [::1] \
         (with its port) in the Host header",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn t39_only_the_listen_address_and_loopback_names_with_the_port_are_allowed() {
        let allowed = AllowedHosts::for_listener("127.0.0.1:8787".parse().unwrap());
        for ok in ["127.0.0.1:8787", "localhost:8787", "LOCALHOST:8787", "[::1]:8787"] {
            assert!(allowed.allows(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:8787",
            "localhost",
            "127.0.0.1",
            "localhost:8788",
            "localhost.:8787",
            "localhost.evil.example:8787",
            "127.0.0.1:8787.evil.example",
            "127.0.0.1:8787@evil.example",
            "[::ffff:127.0.0.1]:8787",
            "",
        ] {
            assert!(!allowed.allows(no), "{no}");
        }
        let lan = AllowedHosts::for_listener("192.168.1.5:9000".parse().unwrap());
        assert!(lan.allows("192.168.1.5:9000") && lan.allows("localhost:9000"));
        assert!(!lan.allows("evil.example:9000"));
    }
}
