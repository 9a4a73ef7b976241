//! The Flight `Handshake`: a login with Basic credentials that opens a token session and returns its bearer token.

use std::pin::Pin;
use std::time::Duration;

use arrow_flight::{BasicAuth, HandshakeRequest, HandshakeResponse};
use futures::{stream, Stream};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::credentials::{parse_basic, Credentials};
use super::sessions::{SessionKind, SessionStore};
use super::throttle::{seconds, LoginThrottle};
use crate::error::{Error, Result};

pub type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// Check the caller's credentials against `expected` (any are accepted when it is `None`), open a token session
/// and return its token in the `authorization: Bearer …` response header and as the payload.
///
/// With auth on, failed logins are counted per client address and for the user by `throttle`, and an attempt
/// during a back-off wait is refused (`RESOURCE_EXHAUSTED`) before its password is looked at. A server full of
/// sessions in use refuses the login (`RESOURCE_EXHAUSTED`) rather than the first call after it.
pub async fn handshake(
    store: &SessionStore,
    expected: Option<&Credentials>,
    throttle: &LoginThrottle,
    request: Request<Streaming<HandshakeRequest>>,
) -> Result<Response<HandshakeStream>> {
    let peer = super::connection::ConnectionInfo::of(request.extensions())
        .and_then(|c| c.remote)
        .map(|a| a.ip());
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut credentials = header.as_deref().and_then(parse_basic);
    if credentials.is_none() && expected.is_some() {
        // Older clients send a BasicAuth message as the handshake payload instead of a header.
        let mut requests = request.into_inner();
        if let Ok(Ok(Some(first))) =
            tokio::time::timeout(Duration::from_secs(5), requests.message()).await
        {
            credentials = BasicAuth::decode(first.payload)
                .ok()
                .map(|b| (b.username, b.password));
        }
    }
    if let Some(expected) = expected {
        let Some((user, password)) = &credentials else {
            return Err(Error::unauthenticated(
                "authentication required: send 'authorization: Basic <base64 user:password>' in the handshake",
            ));
        };
        // Only the configured user has a count of its own; other names count against their address only.
        let counted_user = (user == expected.user()).then_some(user.as_str());
        throttle.check(peer, counted_user)?;
        if !expected.matches(user, password) {
            let wait = throttle.failed(peer, counted_user);
            tracing::warn!(user = %user, peer = ?peer, "failed login");
            return Err(Error::unauthenticated(match wait {
                None => "invalid user name or password".to_string(),
                Some(d) => format!(
                    "invalid user name or password (too many failed logins: the next attempt is accepted in {} s)",
                    seconds(d)
                ),
            }));
        }
        throttle.succeeded(peer, user);
    }
    store.check_room()?;
    let session = store.create(SessionKind::Token);
    tracing::info!(
        session = session.id(),
        user = credentials.as_ref().map(|c| c.0.as_str()),
        "login"
    );
    let token = session.secret().to_string();
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|e| Error::internal("encoding the bearer token", e))?;
    let output = stream::iter(vec![Ok(HandshakeResponse {
        protocol_version: 0,
        payload: token.into_bytes().into(),
    })]);
    let mut response: Response<HandshakeStream> = Response::new(Box::pin(output));
    response.metadata_mut().insert("authorization", value);
    Ok(response)
}
