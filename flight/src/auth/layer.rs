//! The tower layer in front of the Flight service: it identifies each call's session from its bearer token or
//! session cookie and hands it to the service as a [`CallContext`].

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

use super::connection::ConnectionInfo;
use super::credentials::{parse_bearer, Credentials};
use super::sessions::{CallContext, ClientSession, SessionKind, SessionStore};
use super::SESSION_COOKIE;
use crate::error::Error;

const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// The session cookie among the request's `cookie` headers (HTTP/2 may split them into several).
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// The tower service in front of the Flight service: identifies the caller's session, enforces auth on every call
/// but `Handshake`, and adds the session cookie to responses.
#[derive(Clone)]
pub struct SessionLayer<S> {
    inner: S,
    store: Arc<SessionStore>,
    auth: Option<Credentials>,
}

impl<S> SessionLayer<S> {
    pub fn new(inner: S, store: Arc<SessionStore>, auth: Option<Credentials>) -> Self {
        Self { inner, store, auth }
    }

    fn identify(
        &self,
        headers: &HeaderMap,
        connection: Option<u64>,
    ) -> Result<Option<Arc<ClientSession>>, Error> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        if let Some(value) = authorization {
            if let Some(token) = parse_bearer(value) {
                return match self.store.lookup(token, SessionKind::Token)? {
                    Some(s) => Ok(Some(s)),
                    None => Err(Error::unauthenticated(
                        "invalid or expired bearer token: perform a Handshake to get a new one",
                    )),
                };
            }
            if self.auth.is_some() {
                return Err(Error::unauthenticated(
                    "this server accepts a bearer token only: send Basic credentials in a Handshake first",
                ));
            }
        }
        if self.auth.is_some() {
            return Err(Error::unauthenticated(
                "authentication required: perform a Handshake with Basic credentials and send the bearer token",
            ));
        }
        // An unknown or expired cookie is no error: the call gets a new session (and cookie) if it needs one.
        // Without a cookie, the session of the call's transport connection (if an earlier call on it made one).
        match (session_cookie(headers), connection) {
            (Some(cookie), _) => self.store.lookup(&cookie, SessionKind::Cookie),
            (None, Some(connection)) => self.store.for_connection(connection),
            (None, None) => Ok(None),
        }
    }
}

impl<S: NamedService> NamedService for SessionLayer<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for SessionLayer<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // One line per RPC at trace level (`RUST_LOG=marrow::rpc=trace`): how benchmarks count round trips.
        tracing::trace!(target: "marrow::rpc", path = req.uri().path(), "rpc");
        let connection = ConnectionInfo::of(req.extensions()).map(|c| c.id);
        let caller = if req.uri().path() == HANDSHAKE_PATH {
            // The handshake authenticates itself; it may carry a stale token, which must not block a new login.
            Ok(None)
        } else {
            self.identify(req.headers(), connection)
        };
        let caller = match caller {
            Ok(c) => c,
            Err(e) => {
                let status = Status::from(e);
                tracing::debug!(path = req.uri().path(), "rejected: {}", status.message());
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let created = Arc::new(Mutex::new(None));
        req.extensions_mut().insert(CallContext {
            caller,
            store: self.store.clone(),
            created: created.clone(),
            connection,
        });
        // The inner service is always ready (tonic's generated servers are); take the ready one and leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            let issued = created.lock().expect("created session").take();
            if let Some(session) = issued {
                let cookie = format!("{SESSION_COOKIE}={}; Path=/; HttpOnly", session.secret());
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(http::header::SET_COOKIE, v);
                }
            }
            rewrite_decode_errors(response.headers_mut());
            Ok(response)
        })
    }
}

/// arrow-flight reports an undecodable command inside a well-formed `Any` as INTERNAL; it is the client's error.
fn rewrite_decode_errors(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if crate::error::is_client_decode_error(&status) {
        let fixed = Status::from(Error::invalid(format!(
            "malformed request: {}",
            status.message()
        )));
        headers.remove("grpc-status");
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        if fixed.add_header(headers).is_err() {
            tracing::warn!("could not rewrite a decode error status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; marrow_session=xyz; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("xyz"));
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("marrow_session=q"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("q"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }
}
