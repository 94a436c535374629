//! wss://: TLS under the frames, with rustls, on the transport seam.
//!
//! [`TlsConfig`] is what a user configures (certificate chain and key, from
//! PEM files or memory, ALPN `http/1.1`, TLS 1.2 and 1.3). [`TlsTransport`]
//! is the [`Transport`] a loop puts under a connection when the server has
//! one: TLS records in from the socket, plaintext into the loop's read
//! buffer; plaintext from the out queue, records out to the socket. The
//! protocol and the connection's lifecycle do not know it is there.
//!
//! A client that speaks plain HTTP or garbage to the TLS port gets a TLS
//! alert and its connection ends; the WebSocket handshake timeout covers the
//! TLS handshake too (both run from the accept); renegotiation never happens
//! (rustls does not implement it); a clean close sends close_notify.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::{Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;

use super::transport::{TcpTransport, Transport};

/// The server side of TLS: certificate chain, private key, protocol
/// versions (1.2 and 1.3) and ALPN (`http/1.1`, what a WebSocket upgrade
/// speaks). Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
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
    /// The certificate file could not be read or holds no PEM certificate.
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
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate { path, error } => {
                write!(f, "certificate {}: {error}", path.display())
            }
            TlsError::Key { path, error } => write!(f, "private key {}: {error}", path.display()),
            TlsError::Rejected(e) => write!(f, "certificate and key refused: {e}"),
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
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let iter = CertificateDer::pem_file_iter(cert_path).map_err(|e| TlsError::Certificate {
            path: cert_path.into(),
            error: e.to_string(),
        })?;
        let chain = certificates(iter, cert_path)?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
            path: key_path.into(),
            error: e.to_string(),
        })?;
        Self::from_parts(chain, key)
    }

    /// A rustls configuration made by the caller (client certificates,
    /// resolvers of its own ...). Its ALPN list is used as it is.
    pub fn from_rustls(server: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig { server }
    }

    fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rejected)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Rejected)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            server: Arc::new(server),
        })
    }
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
    Ok(chain)
}

/// A TLS alert record: fatal (2), decode_error (50).
const FATAL_DECODE_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50];

/// TLS over one connection's TCP socket.
pub(crate) struct TlsTransport {
    tcp: TcpTransport,
    tls: ServerConnection,
}

impl TlsTransport {
    pub(crate) fn new(tcp: TcpTransport, config: &TlsConfig) -> io::Result<TlsTransport> {
        let tls = ServerConnection::new(Arc::clone(&config.server)).map_err(io::Error::other)?;
        Ok(TlsTransport { tcp, tls })
    }

    /// Writes the records rustls holds; `Ok(true)` once it holds none.
    fn write_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(self.tcp.socket()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Transport for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(self.tcp.socket()) {
                Ok(0) => {
                    // EOF: let rustls say whether it was clean.
                    self.tls.process_new_packets().map_err(io::Error::other)?;
                    return match self.tls.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(_) => Ok(0),
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Plain HTTP or garbage to the TLS port: the alert rustls
                // queued goes out, then the connection ends.
                if self.tls.wants_write() {
                    let _ = self.write_records();
                } else {
                    // Some errors (a handshake message larger than any real
                    // one, say) queue no alert: send a fatal decode_error of
                    // our own, so the peer hears why rather than a bare close.
                    let _ = self.tcp.socket().write(&FATAL_DECODE_ERROR);
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages, key updates: answered at once.
            self.write_records()?;
        }
    }

    fn drained_by(&self, _n: usize, _asked: usize) -> bool {
        // A short read of plaintext says nothing about the socket.
        false
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records still waiting go first: rustls takes plaintext only up to
        // its buffer limit (64 KiB of records), the rest stays in the out
        // queue. Nothing taken is a push-back only when the socket itself
        // refused (then its writable edge will come); never otherwise.
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.tls.writer().write_vectored(bufs)?;
        self.write_records()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<bool> {
        self.write_records()
    }

    fn wants_write(&self) -> usize {
        usize::from(self.tls.wants_write())
    }

    fn goodbye(&mut self) {
        self.tls.send_close_notify();
        let _ = self.write_records();
    }

    fn shutdown_write(&mut self) {
        self.goodbye();
        self.tcp.shutdown_write();
    }

    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.tcp.register(registry, token)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.tcp.peer_addr()
    }
}
