//! HTTPS for `servos serve`, so a small install needs nothing in front of it.
//!
//! Two sources of certificates:
//! - **files** (`SERVOS_TLS_CERT_FILE` + `SERVOS_TLS_KEY_FILE`, PEM): loaded at start-up,
//!   checked (the key must match the certificate), reloaded on SIGHUP; a reload that fails
//!   keeps the certificate being served and logs why.
//! - **ACME** (`SERVOS_ACME_DOMAINS`, optional `SERVOS_ACME_EMAIL`, `SERVOS_ACME_DIRECTORY`):
//!   see [`crate::acme`]. The TLS-ALPN-01 challenge is answered on this same listener, so
//!   the control plane needs only its one port (which the CA must reach as 443).
//!
//! The listener does TLS handshakes in their own tasks (bounded, with a timeout) so a slow
//! or hostile client cannot stall `accept` for everyone else, and hands finished streams to
//! axum through [`axum::serve::Listener`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Let's Encrypt's production directory, the default ACME CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_PENDING_HANDSHAKES: usize = 256;

/// A TLS problem, naming the setting or file it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{var}={path}: {problem}")]
    File { var: &'static str, path: String, problem: String },
    #[error("the key in SERVOS_TLS_KEY_FILE={key} does not belong to the certificate in SERVOS_TLS_CERT_FILE={cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("{0}")]
    Config(String),
}

/// TLS settings of `servos serve` (each flag mirrors an environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve HTTPS with (needs --tls-key-file). Reloaded on SIGHUP.
    #[arg(long, env = "SERVOS_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "SERVOS_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Get the certificate by ACME (TLS-ALPN-01 on the listen port) for these names,
    /// comma-separated. The CA must reach this listener on port 443.
    #[arg(long, env = "SERVOS_ACME_DOMAINS", value_delimiter = ',')]
    pub acme_domains: Vec<String>,
    /// Contact e-mail for the ACME account (optional).
    #[arg(long, env = "SERVOS_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// ACME directory URL.
    #[arg(long, env = "SERVOS_ACME_DIRECTORY", default_value = LETS_ENCRYPT)]
    pub acme_directory: String,
    /// Extra PEM root to trust for the ACME directory's own HTTPS (a private CA).
    #[arg(long, env = "SERVOS_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,
}

/// How `servos serve` terminates TLS.
#[derive(Debug, Clone)]
pub enum TlsMode {
    Off,
    Files { cert: PathBuf, key: PathBuf },
    Acme(AcmeSettings),
}

/// What the ACME manager needs.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    pub ca_file: Option<PathBuf>,
}

impl TlsArgs {
    /// Checks the combination of settings and names the one that is wrong.
    pub fn resolve(&self) -> Result<TlsMode, TlsError> {
        let domains: Vec<String> =
            self.acme_domains.iter().map(|d| d.trim().to_ascii_lowercase()).filter(|d| !d.is_empty()).collect();
        match (&self.tls_cert_file, &self.tls_key_file, domains.is_empty()) {
            (Some(_), Some(_), false) | (Some(_), None, false) | (None, Some(_), false) => Err(TlsError::Config(
                "set either SERVOS_TLS_CERT_FILE and SERVOS_TLS_KEY_FILE, or SERVOS_ACME_DOMAINS, not both".into(),
            )),
            (Some(cert), Some(key), true) => Ok(TlsMode::Files { cert: cert.clone(), key: key.clone() }),
            (Some(_), None, true) => Err(TlsError::Config("SERVOS_TLS_CERT_FILE is set but SERVOS_TLS_KEY_FILE is not".into())),
            (None, Some(_), true) => Err(TlsError::Config("SERVOS_TLS_KEY_FILE is set but SERVOS_TLS_CERT_FILE is not".into())),
            // SERVOS_ACME_EMAIL alone is fine: the servers' proxies use it too.
            (None, None, true) => Ok(TlsMode::Off),
            (None, None, false) => {
                for d in &domains {
                    servos_core::validate::hostname("SERVOS_ACME_DOMAINS", d, false)
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                }
                if let Some(email) = &self.acme_email
                    && (!email.contains('@') || email.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    return Err(TlsError::Config(format!(
                        "SERVOS_ACME_EMAIL={} is not an e-mail address",
                        servos_core::validate::show(email)
                    )));
                }
                if !self.acme_directory.starts_with("https://") {
                    return Err(TlsError::Config(format!(
                        "SERVOS_ACME_DIRECTORY={} must be an https:// URL",
                        servos_core::validate::show(&self.acme_directory)
                    )));
                }
                Ok(TlsMode::Acme(AcmeSettings {
                    domains,
                    email: self.acme_email.clone(),
                    directory: self.acme_directory.clone(),
                    ca_file: self.acme_ca_file.clone(),
                }))
            }
        }
    }
}

/// Loads a PEM certificate chain and its private key, and checks they belong together.
pub fn load_pem_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |problem: String| TlsError::File { var: "SERVOS_TLS_CERT_FILE", path: cert.display().to_string(), problem };
    let key_err = |problem: String| TlsError::File { var: "SERVOS_TLS_KEY_FILE", path: key.display().to_string(), problem };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_problem(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(pem_problem(&e)))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(pem_problem(&e)))?;
    certified_key(chain, private).map_err(|e| match e {
        CertKeyError::Mismatch => TlsError::KeyMismatch { cert: cert.display().to_string(), key: key.display().to_string() },
        CertKeyError::Unusable(problem) => key_err(problem),
    })
}

/// Why a certificate and key cannot be served together.
#[derive(Debug)]
pub enum CertKeyError {
    Mismatch,
    Unusable(String),
}

/// Builds the served form of a chain and key, refusing a key that is not the
/// certificate's.
pub fn certified_key(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<CertifiedKey, CertKeyError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertKeyError::Mismatch,
        other => CertKeyError::Unusable(format!("unusable private key: {other}")),
    })
}

/// Builds the served form of a certificate the control plane made itself (the
/// TLS-ALPN-01 challenge certificate), without the key check: webpki refuses to parse the
/// critical acmeIdentifier extension that such a certificate must carry.
pub fn own_certified_key(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Result<CertifiedKey, CertKeyError> {
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider.key_provider.load_private_key(key).map_err(|e| CertKeyError::Unusable(e.to_string()))?;
    Ok(CertifiedKey::new(vec![cert], signer))
}

fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind in the file".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// The certificate being served, swappable at run time, plus the TLS-ALPN-01 challenge
/// certificates of an ACME order in progress.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    pub fn set_current(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(key));
    }

    pub fn set_challenge(&self, domain: &str, key: CertifiedKey) {
        self.challenges.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(domain.to_owned(), Arc::new(key));
    }

    pub fn clear_challenges(&self) {
        self.challenges.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wants_challenge = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if wants_challenge {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&name).cloned();
        }
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The rustls configuration of the control plane: TLS 1.2 and 1.3 with rustls' safe
/// defaults, HTTP/1.1, and the ACME challenge protocol.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(resolver.clone()))
        // The ring provider supports the default versions; this branch cannot be taken,
        // but if it were, the plain builder gives the same result.
        .unwrap_or_else(|_| rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}

/// An accepted TLS connection and where it came from.
type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// A TLS listener for [`axum::serve`].
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<Accepted>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes run concurrently (at most 256 at once, 10 s
    /// each); challenge connections (ALPN `acme-tls/1`) end after the handshake.
    pub fn spawn(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel::<Accepted>(64);
        let acceptor = TlsAcceptor::from(config);
        let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let (sock, addr) = match tcp.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(client = %addr, "too many TLS handshakes in progress; connection dropped");
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            if stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                                tracing::info!(client = %addr, "answered an ACME TLS-ALPN-01 challenge");
                                return;
                            }
                            let _ = tx.send((stream, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(client = %addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Reloads the certificate files on every SIGHUP; a failed reload keeps serving the
/// current certificate.
pub fn reload_on_sighup(resolver: Arc<CertResolver>, cert: PathBuf, key: PathBuf) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP; certificate reload disabled");
            return;
        };
        while hup.recv().await.is_some() {
            match load_pem_files(&cert, &key) {
                Ok(k) => {
                    resolver.set_current(k);
                    tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                }
                Err(e) => tracing::error!(error = %e, "TLS certificate reload failed; still serving the previous one"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TlsArgs {
        TlsArgs {
            tls_cert_file: None,
            tls_key_file: None,
            acme_domains: vec![],
            acme_email: None,
            acme_directory: LETS_ENCRYPT.into(),
            acme_ca_file: None,
        }
    }

    #[test]
    fn settings_combinations_are_checked_and_named() {
        assert!(matches!(args().resolve(), Ok(TlsMode::Off)));
        let mut a = args();
        a.tls_cert_file = Some("c.pem".into());
        assert!(a.resolve().unwrap_err().to_string().contains("SERVOS_TLS_KEY_FILE is not"));
        a.tls_key_file = Some("k.pem".into());
        assert!(matches!(a.resolve(), Ok(TlsMode::Files { .. })));
        a.acme_domains = vec!["a.example.com".into()];
        assert!(a.resolve().unwrap_err().to_string().contains("not both"));
        let mut a = args();
        a.acme_domains = vec!["cp.example.com".into(), " ".into()];
        match a.resolve() {
            Ok(TlsMode::Acme(s)) => assert_eq!(s.domains, vec!["cp.example.com"]),
            other => panic!("{other:?}"),
        }
        a.acme_domains = vec!["*.example.com".into()];
        assert!(a.resolve().unwrap_err().to_string().contains("SERVOS_ACME_DOMAINS"));
        a.acme_domains = vec!["bad host$(reboot)".into()];
        assert!(a.resolve().unwrap_err().to_string().contains("SERVOS_ACME_DOMAINS"));
        let mut a = args();
        a.acme_domains = vec!["cp.example.com".into()];
        a.acme_email = Some("not an email".into());
        assert!(a.resolve().unwrap_err().to_string().contains("SERVOS_ACME_EMAIL"));
        a.acme_email = None;
        a.acme_directory = "http://insecure.example/dir".into();
        assert!(a.resolve().unwrap_err().to_string().contains("SERVOS_ACME_DIRECTORY"));
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_files_load_and_a_foreign_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = self_signed("a.test");
        let (_, key_b) = self_signed("b.test");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let other = dir.path().join("other.pem");
        std::fs::write(&cert, cert_a).unwrap();
        std::fs::write(&key, key_a).unwrap();
        std::fs::write(&other, key_b).unwrap();
        load_pem_files(&cert, &key).unwrap();

        let err = load_pem_files(&cert, &other).unwrap_err().to_string();
        assert!(err.contains("does not belong") && err.contains("other.pem"), "{err}");
        let err = load_pem_files(&key, &key).unwrap_err().to_string();
        assert!(err.contains("SERVOS_TLS_CERT_FILE") && err.contains("key.pem"), "{err}");
        let err = load_pem_files(&dir.path().join("missing.pem"), &key).unwrap_err().to_string();
        assert!(err.contains("missing.pem") && err.contains("cannot read"), "{err}");
        let err = load_pem_files(&cert, &cert).unwrap_err().to_string();
        assert!(err.contains("SERVOS_TLS_KEY_FILE"), "{err}");
    }

}
