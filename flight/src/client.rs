//! A small Flight SQL client for `marrow sql --url`: log in, run a statement, collect its rows.

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use std::sync::Arc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

pub struct Client {
    inner: FlightSqlServiceClient<Channel>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL '{0}': use grpc://host:port or grpc+tls://host:port")]
    Url(String),
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Flight(#[from] arrow_flight::error::FlightError),
}

impl Client {
    pub async fn connect(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, ClientError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("grpc+tls://") {
            (true, r)
        } else if let Some(r) = url
            .strip_prefix("grpc://")
            .or_else(|| url.strip_prefix("grpc+tcp://"))
        {
            (false, r)
        } else {
            return Err(ClientError::Url(url.to_string()));
        };
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{rest}"))
            .map_err(|_| ClientError::Url(url.to_string()))?;
        if tls {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_enabled_roots())?;
        }
        let channel = endpoint.connect().await?;
        let mut inner = FlightSqlServiceClient::new(channel);
        // A handshake gives the client one session for all its statements (with auth off too, where empty
        // credentials are accepted), so `SET` applies to the statements after it.
        inner
            .handshake(user.unwrap_or(""), password.unwrap_or(""))
            .await?;
        Ok(Self { inner })
    }

    /// Run one statement; a write statement's count comes back as a one-row `count` table.
    pub async fn execute(
        &mut self,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), ClientError> {
        let info = self.inner.execute(sql.to_string(), None).await?;
        let mut schema: SchemaRef = Arc::new(
            info.clone()
                .try_decode_schema()
                .unwrap_or_else(|_| Schema::empty()),
        );
        let mut batches = vec![];
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let stream = self.inner.do_get(ticket).await?;
            let got: Vec<RecordBatch> = stream.try_collect().await.map_err(ClientError::Flight)?;
            if let Some(b) = got.first() {
                schema = b.schema();
            }
            batches.extend(got);
        }
        Ok((schema, batches))
    }
}
