//! Starting and stopping the Flight SQL server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use marrow_engine::{Config, Database};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{Credentials, Limits, LoginLimits, SessionLayer, SessionStore};
use crate::service::MarrowFlightService;

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 50051;
/// Largest message the server accepts (bulk ingest sends big batches).
pub const MAX_DECODING_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How to run the server: the database to serve and how to reach it.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The database: data directory, file roots, memory limit per session, models.
    pub engine: Config,
    pub host: String,
    /// 0 picks a free port (see [`RunningServer::local_addr`]).
    pub port: u16,
    /// With a user, every call needs a bearer token from a Basic-auth handshake. A user without a password logs in
    /// with an empty password.
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Allow listening on a non-loopback address without authentication.
    pub allow_insecure_remote: bool,
    /// How many client sessions are kept, and for how long (see [`crate::auth::sessions`]).
    pub sessions: Limits,
    /// How failed logins are slowed down (see [`crate::auth::throttle`]).
    pub logins: LoginLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            engine: Config::new("./marrow-data"),
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            user: None,
            password: None,
            tls_cert: None,
            tls_key: None,
            allow_insecure_remote: false,
            sessions: Limits::default(),
            logins: LoginLimits::default(),
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The options are inconsistent or unsafe.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] marrow_engine::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("Flight server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the server task failed: {0}")]
    Task(String),
}

impl ServeOptions {
    fn credentials(&self) -> Result<Option<Credentials>, ServeError> {
        match (&self.user, &self.password) {
            (None, None) => Ok(None),
            (Some(user), password) => {
                if user.is_empty() {
                    return Err(ServeError::Config("the user name must not be empty".into()));
                }
                if password.as_deref().unwrap_or("").is_empty() {
                    tracing::warn!("user '{user}' has an empty password");
                }
                Ok(Some(Credentials::new(
                    user.clone(),
                    password.clone().unwrap_or_default(),
                )))
            }
            (None, Some(_)) => Err(ServeError::Config(
                "a password needs a user (--user)".into(),
            )),
        }
    }

    fn tls(&self) -> Result<Option<ServerTlsConfig>, ServeError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let read = |p: &PathBuf, what: &str| {
                    std::fs::read(p).map_err(|e| {
                        ServeError::Config(format!("cannot read TLS {what} {}: {e}", p.display()))
                    })
                };
                let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
                Ok(Some(ServerTlsConfig::new().identity(identity)))
            }
            _ => Err(ServeError::Config(
                "TLS needs both a certificate (--tls-cert) and a key (--tls-key)".into(),
            )),
        }
    }
}

/// A server running in the background. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    tls: bool,
    sessions: Arc<SessionStore>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RunningServer {
    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The client sessions (for monitoring: how many are established, how many pending).
    pub fn sessions(&self) -> &Arc<SessionStore> {
        &self.sessions
    }

    /// `grpc://host:port`, or `grpc+tls://…` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stop accepting calls, let running calls finish, and wait for the server to end.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join().await
    }

    /// Wait until the server ends (it ends by itself only on a fatal error).
    pub async fn join(&mut self) -> Result<(), ServeError> {
        match self.task.take() {
            None => Ok(()),
            Some(task) => match task.await {
                Ok(result) => Ok(result?),
                Err(e) => Err(ServeError::Task(e.to_string())),
            },
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Check the options and bind `host:port`, then serve in the background.
pub async fn start(opts: ServeOptions) -> Result<RunningServer, ServeError> {
    // Fail on bad options before touching the network.
    opts.credentials()?;
    opts.tls()?;
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    start_on(opts, listener).await
}

/// Serve on an already bound listener (`opts.host` and `opts.port` are ignored).
pub async fn start_on(
    opts: ServeOptions,
    listener: TcpListener,
) -> Result<RunningServer, ServeError> {
    let credentials = opts.credentials()?;
    let tls = opts.tls()?;
    let local_addr = listener.local_addr()?;
    if !local_addr.ip().is_loopback() && credentials.is_none() {
        if !opts.allow_insecure_remote {
            return Err(ServeError::Config(format!(
                "refusing to listen on {local_addr} without authentication: anyone who can reach it could read and \
                 change all data. Set --user/--password (and TLS), or bind 127.0.0.1, or force it with \
                 --allow-insecure-remote"
            )));
        }
        tracing::warn!("listening on {local_addr} WITHOUT authentication (forced)");
    } else if !local_addr.ip().is_loopback() && tls.is_none() {
        tracing::warn!(
            "listening on {local_addr} without TLS: passwords and data travel in clear text"
        );
    }

    let db = Database::open(opts.engine.clone()).await?;

    let store = Arc::new(SessionStore::new(db, opts.sessions));
    let service =
        MarrowFlightService::with_login_limits(store.clone(), credentials.clone(), opts.logins);
    let flight = FlightServiceServer::new(service)
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
        .max_encoding_message_size(usize::MAX);
    let layered = SessionLayer::new(flight, store.clone(), credentials.clone());

    let mut builder = Server::builder();
    if let Some(tls) = tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let router = builder.add_service(layered);
    let incoming = crate::auth::connection::connections(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        store.clone(),
    );
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    tracing::debug!(
        addr = %local_addr,
        auth = credentials.is_some(),
        tls = tls.is_some(),
        data_dir = %opts.engine.data_dir.display(),
        "Marrow Flight SQL server started"
    );
    Ok(RunningServer {
        local_addr,
        tls: tls.is_some(),
        sessions: store,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Run the server until `shutdown` completes (for example on Ctrl-C), then stop it gracefully.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let auth = opts.user.is_some();
    let data_dir = opts.engine.data_dir.clone();
    let mut server = start(opts).await?;
    // The one line the default log filter of the `marrow` binary shows at start (with `--port 0` it is how a user,
    // or python/tests/conftest.py, learns the port): keep the `listening on <url>` form.
    tracing::info!(
        auth,
        tls = server.tls,
        data_dir = %data_dir.display(),
        "listening on {}",
        server.url()
    );
    tokio::select! {
        _ = shutdown => {}
        result = server.join() => return result,
    }
    tracing::info!("shutting down");
    server.shutdown().await
}
