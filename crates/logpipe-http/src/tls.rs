//! HTTPS on a listener (`[tls]`): rustls with the ring provider, the
//! certificate and key read from PEM files and loaded again when they
//! change or on SIGHUP, for new connections (open ones keep theirs).
//!
//! Handshakes run in tasks of their own, so a client that stalls in its
//! handshake holds one task for at most [`HANDSHAKE_TIMEOUT`], never the
//! accept loop; at most [`MAX_HANDSHAKES`] run at once.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake not finished in this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 256;

/// Why the certificate or key could not be used: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct TlsError {
    pub file: String,
    pub reason: String,
}

fn error(file: &Path, reason: impl Into<String>) -> TlsError {
    TlsError {
        file: file.display().to_string(),
        reason: reason.into(),
    }
}

/// ring's provider. rustls marks it deprecated because ring has no
/// post-quantum key exchange; aws-lc-rs has one but needs cmake and a
/// C toolchain build several minutes long, which the first run pays.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a certificate chain and its key and checks they belong together.
fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| error(cert_file, format!("cannot read it: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(cert_file, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(error(cert_file, "holds no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        error(
            key_file,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}"),
        )
    })?;
    let provider = provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        error(
            key_file,
            format!("does not go with {}: {e}", cert_file.display()),
        )
    })?;
    Ok(certified)
}

/// The server's certificate, loaded again when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times at the last load.
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    /// Loads the pair now: a wrong pair stops the start.
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let certified = load(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
            stamps: Mutex::new((modified(cert_file), modified(key_file))),
        }))
    }

    /// Loads the pair again when `force` or when a file changed. A pair
    /// that does not load (a half-copied file) leaves the current one in
    /// use and is tried again next time. Returns whether it changed.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let mut last = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        if !force && *last == stamps {
            return Ok(false);
        }
        let certified = load(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        *last = stamps;
        Ok(true)
    }

    /// The rustls server settings presenting this certificate.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Checks the files every `interval` and on SIGHUP until `stop` turns
    /// true, logging each reload and each pair that does not load.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = hup => true,
                _ = stop.changed() => return,
            };
            match self.reload(force) {
                Ok(true) => tracing::info!(
                    cert = %self.cert_file.display(),
                    "TLS certificate loaded again; new connections use it"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "the TLS certificate files changed but do not load; the previous certificate stays in use"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A listener whose connections are TLS, handshaken off the accept loop.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, go on.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (it never does while this lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
