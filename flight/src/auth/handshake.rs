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
use crate::error::{Error, Result};

pub type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// Check the caller's credentials against `expected` (any are accepted when it is `None`), open a token session
/// and return its token in the `authorization: Bearer …` response header and as the payload.
pub async fn handshake(
    store: &SessionStore,
    expected: Option<&Credentials>,
    request: Request<Streaming<HandshakeRequest>>,
) -> Result<Response<HandshakeStream>> {
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
        match &credentials {
            Some((user, password)) if expected.matches(user, password) => {}
            Some((user, _)) => {
                tracing::warn!(user = %user, "failed login");
                return Err(Error::unauthenticated("invalid user name or password"));
            }
            None => {
                return Err(Error::unauthenticated(
                    "authentication required: send 'authorization: Basic <base64 user:password>' in the handshake",
                ))
            }
        }
    }
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
