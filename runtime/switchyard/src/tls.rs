//! TLS on the public listener (`[tls] cert`, `key`): `https://` and
//! `wss://` served by rustls (ring provider, ALPN `http/1.1`), with the
//! certificate reloaded when its files change.
//!
//! - [`TlsFiles::load`] reads the PEM certificate chain and private key and
//!   checks them (present, unencrypted, the key matches the certificate);
//!   its errors name the file and the reason, and the server refuses to
//!   start on one, before it binds.
//! - [`Tls`] holds the certificate in an [`ArcSwap`] behind a
//!   [`ResolvesServerCert`]: every new handshake reads the current one, so a
//!   reload reaches new connections at once and open ones keep the session
//!   they negotiated.
//! - [`TlsWatcher`] watches the directories of both files (inotify, else
//!   polling), so a write in place and a write-then-rename both count, as
//!   does Kubernetes' swap of a secret volume's `..data` link. Events are
//!   debounced, so a certificate written a moment before its key is loaded
//!   with it rather than half-way. A reload that fails keeps the old
//!   certificate and logs the file and the reason; a successful one logs
//!   the new certificate's subject and expiry.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::counters::Counters;

/// Quiet time after the last change before the files are reloaded: long
/// enough for a tool that writes the certificate and then the key.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest a steady stream of changes may delay a reload.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Interval of the polling fallback, where inotify is unavailable.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a certificate or key could not be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// The file is missing or unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// `tls.cert` or `tls.key`.
        file: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file has a PEM block that does not parse.
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem {
        file: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{}: no certificate found (expected a PEM `BEGIN CERTIFICATE` block)", path.display())]
    NoCertificate { path: PathBuf },
    /// The key file holds no private key block.
    #[error(
        "{}: no private key found (expected a PEM `BEGIN PRIVATE KEY`, \
         `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` block)",
        path.display()
    )]
    NoKey { path: PathBuf },
    /// The key is encrypted with a passphrase.
    #[error(
        "{}: the private key is encrypted; give an unencrypted key \
         (`openssl pkey -in {} -out plain.pem` decrypts it)",
        path.display(), path.display()
    )]
    EncryptedKey { path: PathBuf },
    /// rustls (ring) cannot sign with the key.
    #[error("{}: unsupported private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    /// The end-entity certificate does not parse.
    #[error("{}: invalid certificate: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    /// The key is not the one the certificate was issued for.
    #[error(
        "the private key in {} does not match the certificate in {}",
        key.display(), cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

impl TlsError {
    /// The config key of the file at fault.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Self::NoKey { .. }
            | Self::EncryptedKey { .. }
            | Self::BadKey { .. }
            | Self::KeyMismatch { .. } => "tls.key",
            Self::NoCertificate { .. } | Self::BadCertificate { .. } => "tls.cert",
            Self::Read { file, .. } | Self::Pem { file, .. } => file,
        }
    }
}

/// The certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// A certificate and key, checked and ready for rustls.
#[derive(Debug)]
pub(crate) struct Loaded {
    certified: Arc<CertifiedKey>,
    /// The end-entity certificate's subject (RFC 4514) and expiry.
    info: CertInfo,
    /// What the files held, to tell a change from a touch.
    bytes: (Vec<u8>, Vec<u8>),
}

/// What a reload logs about a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    subject: String,
    not_after: Option<SystemTime>,
    not_after_text: String,
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject \"{}\", expires {}",
            self.subject, self.not_after_text
        )
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn read(file: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    /// Read and check both files.
    pub(crate) fn load(&self) -> Result<Loaded, TlsError> {
        let cert_pem = read("tls.cert", &self.cert)?;
        let key_pem = read("tls.key", &self.key)?;
        self.parse(cert_pem, key_pem)
    }

    fn parse(&self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Loaded, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| TlsError::Pem {
                file: "tls.cert",
                path: self.cert.clone(),
                reason: err.to_string(),
            })?;
        let Some(end_entity) = chain.first() else {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        };
        let info = cert_info(end_entity);
        // rustls-pki-types skips blocks it does not know, such as
        // `ENCRYPTED PRIVATE KEY`; say why instead of "no key".
        let text = String::from_utf8_lossy(&key_pem);
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || text.contains("Proc-Type: 4,ENCRYPTED")
        {
            return Err(TlsError::EncryptedKey {
                path: self.key.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| match err {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
                path: self.key.clone(),
            },
            other => TlsError::Pem {
                file: "tls.key",
                path: self.key.clone(),
                reason: other.to_string(),
            },
        })?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|err| TlsError::BadKey {
                path: self.key.clone(),
                reason: err.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                });
            }
            Err(err) => {
                return Err(TlsError::BadCertificate {
                    path: self.cert.clone(),
                    reason: err.to_string(),
                });
            }
        }
        Ok(Loaded {
            certified: Arc::new(certified),
            info,
            bytes: (cert_pem, key_pem),
        })
    }
}

/// The subject and expiry of `cert`, for the log; `?` where the certificate
/// does not parse as strict DER (rustls accepted it, which is what counts).
fn cert_info(cert: &CertificateDer<'_>) -> CertInfo {
    use x509_cert::der::Decode as _;
    match x509_cert::Certificate::from_der(cert.as_ref()) {
        Ok(parsed) => {
            let tbs = parsed.tbs_certificate;
            CertInfo {
                subject: tbs.subject.to_string(),
                not_after: Some(tbs.validity.not_after.to_system_time()),
                not_after_text: tbs.validity.not_after.to_string(),
            }
        }
        Err(_) => CertInfo {
            subject: "?".to_owned(),
            not_after: None,
            not_after_text: "?".to_owned(),
        },
    }
}

/// The current certificate, read by every new handshake.
#[derive(Debug)]
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// TLS for the public listener: the acceptor and the certificate it serves.
pub(crate) struct Tls {
    files: TlsFiles,
    current: Arc<CurrentCert>,
    acceptor: TlsAcceptor,
    /// The certificate loaded at start.
    info: CertInfo,
    /// The file contents of the last reload attempted (successful or not),
    /// so an event that changed nothing neither reloads nor logs again.
    last_seen: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// A TLS server with the certificate in `loaded`.
    pub(crate) fn new(files: TlsFiles, loaded: Loaded) -> anyhow::Result<Self> {
        let current = Arc::new(CurrentCert(ArcSwap::new(loaded.certified)));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .context("configuring TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            info: loaded.info,
            last_seen: std::sync::Mutex::new(loaded.bytes),
        })
    }

    /// Log the certificate served at start.
    pub(crate) fn log_start(&self) {
        tracing::info!(
            cert = %self.files.cert.display(),
            key = %self.files.key.display(),
            "serving https:// and wss:// only, with {}", self.info
        );
        warn_if_expired(&self.files.cert, &self.info);
    }

    /// The TLS handshake on an accepted connection, within `timeout`.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(HandshakeError::Failed(error)),
            Err(_) => Err(HandshakeError::TimedOut),
        }
    }

    /// Read the files again; on success serve the new certificate to new
    /// connections. `Ok(None)` when the files did not change since the last
    /// attempt.
    fn reload(&self) -> Result<Option<CertInfo>, TlsError> {
        let cert_pem = read("tls.cert", &self.files.cert)?;
        let key_pem = read("tls.key", &self.files.key)?;
        {
            // A std mutex: held for a comparison, never across an await.
            let mut last = self
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.0 == cert_pem && last.1 == key_pem {
                return Ok(None);
            }
            *last = (cert_pem.clone(), key_pem.clone());
        }
        let loaded = self.files.parse(cert_pem, key_pem)?;
        self.current.0.store(loaded.certified);
        Ok(Some(loaded.info))
    }

    /// Reload whenever the files change, until the watcher is dropped. Must
    /// be called inside a tokio runtime.
    pub(crate) fn watch(self: &Arc<Self>, counters: Arc<Counters>) -> anyhow::Result<TlsWatcher> {
        let dirs = watched_dirs(&self.files)?;
        // Capacity 1: a pending signal already means "reload soon".
        let (tx, rx) = mpsc::channel::<()>(1);
        // One check right away covers changes made between loading the
        // files and watching them (it reloads only if they differ).
        let _ = tx.try_send(());
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.need_rescan() || switchyard_host::changes_files(event.kind) => {
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("certificate watch error: {err}"),
        };
        let watcher = switchyard_host::watch_dirs(
            handler,
            &dirs,
            "the TLS certificate and key",
            POLL_INTERVAL,
            false,
        )?;
        let task = tokio::spawn(reload_loop(Arc::clone(self), rx, counters));
        Ok(TlsWatcher {
            _watcher: watcher,
            task,
        })
    }
}

fn warn_if_expired(cert: &Path, info: &CertInfo) {
    if info.not_after.is_some_and(|end| end < SystemTime::now()) {
        tracing::warn!(
            cert = %cert.display(),
            "the certificate expired on {}; clients will refuse it", info.not_after_text
        );
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Not within `websocket.handshake-timeout-secs`.
    #[error("no TLS handshake within the handshake timeout")]
    TimedOut,
    /// The client is not speaking TLS, or broke off.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// The directories holding the files (each once), absolute, so events name
/// paths under them whatever the working directory.
fn watched_dirs(files: &TlsFiles) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for file in [&files.cert, &files.key] {
        let parent = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = parent
            .canonicalize()
            .with_context(|| format!("watching the directory of {}", file.display()))?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

async fn reload_loop(tls: Arc<Tls>, mut rx: mpsc::Receiver<()>, counters: Arc<Counters>) {
    while rx.recv().await.is_some() {
        if !switchyard_host::settle(&mut rx, DEBOUNCE, MAX_DELAY).await {
            return;
        }
        // Off the async threads: two small file reads and a key parse.
        let reloading = Arc::clone(&tls);
        let result = tokio::task::spawn_blocking(move || reloading.reload()).await;
        match result {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(info))) => {
                let total = Counters::bump(&counters.tls_reloads);
                tracing::info!(
                    cert = %tls.files.cert.display(),
                    total,
                    "TLS certificate reloaded: new connections get {info}"
                );
                warn_if_expired(&tls.files.cert, &info);
            }
            Ok(Err(error)) => {
                let total = Counters::bump(&counters.tls_reload_failures);
                tracing::error!(
                    total,
                    "TLS certificate reload failed, still serving the previous one: {error}"
                );
            }
            Err(error) => tracing::error!("TLS certificate reload panicked: {error}"),
        }
    }
}

/// A running certificate watcher; dropping it stops watching.
pub(crate) struct TlsWatcher {
    _watcher: Box<dyn notify::Watcher + Send>,
    task: JoinHandle<()>,
}

impl fmt::Debug for TlsWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWatcher").finish_non_exhaustive()
    }
}

impl Drop for TlsWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
