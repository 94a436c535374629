//! `sw_config_set_tls_*`, `sw_server_reload_tls`: wss:// from C.
//!
//! A library built without the `tls` feature keeps these functions; they
//! answer `SW_RESULT_UNSUPPORTED`.

use std::ffi::c_char;

use super::boundary::{bytes, c_str, call, sw_result};
use super::config::{sw_config, with_config};
use super::server::{started, sw_server};
#[cfg(feature = "tls")]
use crate::server::{TlsConfig, TlsError};

#[cfg(feature = "tls")]
fn code(e: TlsError) -> sw_result {
    match e {
        TlsError::Certificate { .. } => sw_result::TlsCertificate,
        TlsError::Key { .. } => sw_result::TlsKey,
        TlsError::Rejected(_) => sw_result::TlsRejected,
        TlsError::NotOurs => sw_result::InvalidArgument,
    }
}

/// Serves wss:// (and the HTTP pages over https) with the PEM certificate
/// chain (leaf first) and private key in these files, read now: a missing,
/// unreadable or expired certificate is `SW_RESULT_TLS_CERTIFICATE`, the key
/// `SW_RESULT_TLS_KEY`, a pair that does not match `SW_RESULT_TLS_REJECTED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_tls_files(
    config: *mut sw_config,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> sw_result {
    with_config(config, |c| {
        let cert = unsafe { c_str(cert_path) }?;
        let key = unsafe { c_str(key_path) }?;
        #[cfg(feature = "tls")]
        {
            c.tls = Some(TlsConfig::from_pem_files(cert, key).map_err(code)?);
            Ok(())
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (c, cert, key);
            Err(sw_result::Unsupported)
        }
    })
}

/// As `sw_config_set_tls_files`, from PEM in memory (copied).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_set_tls_pem(
    config: *mut sw_config,
    cert_pem: *const u8,
    cert_len: usize,
    key_pem: *const u8,
    key_len: usize,
) -> sw_result {
    with_config(config, |c| {
        let cert = unsafe { bytes(cert_pem, cert_len) }?;
        let key = unsafe { bytes(key_pem, key_len) }?;
        #[cfg(feature = "tls")]
        {
            c.tls = Some(TlsConfig::from_pem(cert, key).map_err(code)?);
            Ok(())
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (c, cert, key);
            Err(sw_result::Unsupported)
        }
    })
}

/// Adds a certificate for clients that ask for `server_name` (SNI), from
/// PEM files. Call after `sw_config_set_tls_files` (else
/// `SW_RESULT_INVALID_ARGUMENT`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_config_add_tls_sni_files(
    config: *mut sw_config,
    server_name: *const c_char,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> sw_result {
    with_config(config, |c| {
        let name = unsafe { c_str(server_name) }?;
        let cert = unsafe { c_str(cert_path) }?;
        let key = unsafe { c_str(key_path) }?;
        #[cfg(feature = "tls")]
        {
            let tls = c.tls.as_ref().ok_or(sw_result::InvalidArgument)?;
            tls.add_sni_pem_files(name, cert, key).map_err(code)
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (c, name, cert, key);
            Err(sw_result::Unsupported)
        }
    })
}

/// Hot reload: new TLS handshakes use the certificates of `fresh` (a config
/// on which `sw_config_set_tls_*` and `sw_config_add_tls_sni_files`
/// succeeded; the rest of it is ignored); open connections keep theirs. Any
/// thread. `SW_RESULT_INVALID_ARGUMENT` when the server or `fresh` has no TLS.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sw_server_reload_tls(
    server: *const sw_server,
    fresh: *const sw_config,
) -> sw_result {
    call(|| {
        let h = started(server)?;
        // SAFETY: checked for NULL; a config from sw_config_new.
        let fresh = unsafe { fresh.as_ref() }.ok_or(sw_result::NullParameter)?;
        #[cfg(feature = "tls")]
        {
            let (Some(current), Some(fresh)) = (&h.config().tls, &fresh.inner.tls) else {
                return Err(sw_result::InvalidArgument);
            };
            current.reload_from(fresh).map_err(code)
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (h, fresh);
            Err(sw_result::Unsupported)
        }
    })
}
