//! [`TlsConfig`]: what a user configures for wss:// (certificate chain and
//! key, from PEM files or memory, more certificates by SNI, hot reload, ALPN
//! `http/1.1`, TLS 1.2 and 1.3). `tls_transport.rs` runs it in the loop.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The server side of TLS: a default certificate, more chosen by SNI,
/// protocol versions (1.2 and 1.3) and ALPN (`http/1.1`, what a WebSocket
/// upgrade speaks). Cheap to clone; clones share their certificates, so
/// [`TlsConfig::reload_from`] on any clone (the one a server was started
/// with included) changes what new handshakes get. Open connections keep
/// the certificate they were made with.
#[derive(Clone)]
pub struct TlsConfig {
    pub(super) server: Arc<rustls::ServerConfig>,
    /// `None` for [`TlsConfig::from_rustls`], whose certificates are the caller's.
    resolver: Option<Arc<Resolver>>,
}

/// The certificates new handshakes choose from.
#[derive(Debug)]
struct Certificates {
    default: Arc<CertifiedKey>,
    /// By lowercase server name (SNI).
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

/// Picks a certificate by SNI, the default otherwise; swapped whole on reload.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<Certificates>>,
}

impl Resolver {
    fn certificates(&self) -> Arc<Certificates> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, certificates: Certificates) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certificates);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certificates();
        let by_name = hello
            .server_name()
            .and_then(|n| certs.by_name.get(&n.to_ascii_lowercase()));
        Some(Arc::clone(by_name.unwrap_or(&certs.default)))
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &self.server.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// Why a TLS configuration could not be made; each says which input.
#[derive(Debug)]
pub enum TlsError {
    /// The certificate file could not be read, holds no PEM certificate, or
    /// its certificate has expired or is not valid yet.
    Certificate {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
    /// The key file could not be read or holds no PEM private key.
    Key {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
    /// rustls refused the pair (the key does not match the certificate, an
    /// unsupported key type ...).
    Rejected(rustls::Error),
    /// A reload or an SNI entry on a configuration made by
    /// [`TlsConfig::from_rustls`], whose certificates are the caller's.
    NotOurs,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate { path, error } => {
                write!(f, "certificate {}: {error}", path.display())
            }
            TlsError::Key { path, error } => write!(f, "private key {}: {error}", path.display()),
            TlsError::Rejected(e) => write!(f, "certificate and key refused: {e}"),
            TlsError::NotOurs => {
                f.write_str("this TLS configuration's certificates are the caller's")
            }
        }
    }
}

impl std::error::Error for TlsError {}

const MEMORY: &str = "<memory>";

impl TlsConfig {
    /// From a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1), in memory.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<TlsConfig, TlsError> {
        let chain = certificates(
            CertificateDer::pem_slice_iter(cert_chain),
            Path::new(MEMORY),
        )?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key {
            path: MEMORY.into(),
            error: e.to_string(),
        })?;
        Self::from_parts(chain, key)
    }

    /// From PEM files: the certificate chain (leaf first) and the private key.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let (chain, key) = read_pem_files(cert_chain.as_ref(), key.as_ref())?;
        Self::from_parts(chain, key)
    }

    /// A rustls configuration made by the caller (client certificates,
    /// resolvers of its own ...). Its ALPN list is used as it is; SNI entries
    /// and reloads are the caller's business.
    pub fn from_rustls(server: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig {
            server,
            resolver: None,
        }
    }

    /// Adds (or replaces) the certificate served to clients that ask for
    /// `server_name` (SNI, matched without regard to case), from PEM files.
    /// Takes effect for new handshakes.
    pub fn add_sni_pem_files(
        &self,
        server_name: &str,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<(), TlsError> {
        let resolver = self.resolver.as_ref().ok_or(TlsError::NotOurs)?;
        let (chain, key) = read_pem_files(cert_chain.as_ref(), key.as_ref())?;
        let added = certified(chain, key)?;
        let current = resolver.certificates();
        let mut by_name = current.by_name.clone();
        by_name.insert(server_name.to_ascii_lowercase(), added);
        resolver.replace(Certificates {
            default: Arc::clone(&current.default),
            by_name,
        });
        Ok(())
    }

    /// Makes new handshakes use `fresh`'s certificates (default and SNI
    /// entries, all at once); connections already open are untouched. Build
    /// `fresh` from the files again: if that fails, nothing changes here.
    pub fn reload_from(&self, fresh: &TlsConfig) -> Result<(), TlsError> {
        let (Some(mine), Some(theirs)) = (&self.resolver, &fresh.resolver) else {
            return Err(TlsError::NotOurs);
        };
        let certs = theirs.certificates();
        mine.replace(Certificates {
            default: Arc::clone(&certs.default),
            by_name: certs.by_name.clone(),
        });
        Ok(())
    }

    /// The server names with a certificate of their own, sorted.
    pub fn sni_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .resolver
            .as_ref()
            .map(|r| r.certificates().by_name.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, TlsError> {
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(Certificates {
                default: certified(chain, key)?,
                by_name: HashMap::new(),
            })),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rejected)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            server: Arc::new(server),
            resolver: Some(resolver),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, checked to belong together.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(TlsError::Rejected)
}

fn read_pem_files(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let iter = CertificateDer::pem_file_iter(cert_path).map_err(|e| TlsError::Certificate {
        path: cert_path.into(),
        error: e.to_string(),
    })?;
    let chain = certificates(iter, cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.into(),
        error: e.to_string(),
    })?;
    Ok((chain, key))
}

fn certificates<E: fmt::Display>(
    iter: impl Iterator<Item = Result<CertificateDer<'static>, E>>,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |error: String| TlsError::Certificate {
        path: path.into(),
        error,
    };
    let chain = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if chain.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    check_dates(&chain, path)?;
    Ok(chain)
}

/// Refuses a chain whose certificates have expired or are not valid yet:
/// the server would start, and every client would refuse it. The chain is
/// checked against its own last certificate as the anchor, so only the
/// dates can fail here; whether clients trust the issuer is theirs to say.
fn check_dates(chain: &[CertificateDer<'static>], path: &Path) -> Result<(), TlsError> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::CertificateError;
    let (Some(leaf), Some(anchor)) = (chain.first(), chain.last()) else {
        return Ok(());
    };
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(anchor.clone()).is_err() {
        // Not even parseable as an anchor: rustls judges the pair next.
        return Ok(());
    }
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
    else {
        return Ok(());
    };
    let name = ServerName::try_from("sockwave.invalid").expect("a valid name");
    match verifier.verify_server_cert(leaf, &chain[1..], &name, &[], UnixTime::now()) {
        Err(rustls::Error::InvalidCertificate(
            e @ (CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }),
        )) => Err(TlsError::Certificate {
            path: path.into(),
            error: e.to_string(),
        }),
        _ => Ok(()),
    }
}
