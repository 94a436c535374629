//! The unwind boundary, pointer checks, result codes and small shared types.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result codes. The numbers are part of the ABI: never renumbered, never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum sw_result {
    /// Success.
    Ok = 0,
    /// A required pointer was NULL.
    NullParameter = 1,
    /// An argument was out of range or malformed.
    InvalidArgument = 2,
    /// A string was not valid UTF-8.
    InvalidUtf8 = 3,
    /// The operating system refused (bind, listen, thread creation).
    Io = 4,
    /// The connection is closed or closing, or the id is stale.
    Closed = 5,
    /// The message was dropped: the connection's send buffer is at its cap.
    Backpressure = 6,
    /// The server is not running (stopped, or not started yet).
    NotRunning = 7,
    /// The call would wait for the calling thread itself (e.g. stopping the
    /// server from inside one of its callbacks).
    WrongThread = 8,
    /// A panic inside sockwave was caught at the API boundary.
    Panic = 9,
    /// TLS: the certificate file could not be read, holds no PEM certificate,
    /// or its certificate has expired or is not valid yet.
    TlsCertificate = 10,
    /// TLS: the key file could not be read or holds no PEM private key.
    TlsKey = 11,
    /// TLS: the key does not belong to the certificate, or its type is not supported.
    TlsRejected = 12,
    /// This library was built without the feature the call needs (TLS).
    Unsupported = 13,
}

/// A borrowed UTF-8 string: `ptr` to `len` bytes, not NUL-terminated.
/// `ptr` is NULL for "absent" (as opposed to empty).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct sw_str {
    /// The first byte (not NUL-terminated); may be NULL when `len` is 0.
    pub ptr: *const c_char,
    /// The number of bytes.
    pub len: usize,
}

impl sw_str {
    pub(crate) const NONE: sw_str = sw_str {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub(crate) fn from(s: &str) -> sw_str {
        sw_str {
            ptr: s.as_ptr().cast(),
            len: s.len(),
        }
    }
}

/// What an entry point returns when a panic is caught.
pub(crate) trait PanicDefault {
    fn panic_default() -> Self;
}

impl PanicDefault for sw_result {
    fn panic_default() -> Self {
        sw_result::Panic
    }
}

impl<T> PanicDefault for *mut T {
    fn panic_default() -> Self {
        std::ptr::null_mut()
    }
}

impl<T> PanicDefault for *const T {
    fn panic_default() -> Self {
        std::ptr::null()
    }
}

impl PanicDefault for () {
    fn panic_default() -> Self {}
}

impl PanicDefault for usize {
    fn panic_default() -> Self {
        0
    }
}

impl PanicDefault for sw_str {
    fn panic_default() -> Self {
        sw_str::NONE
    }
}

/// Runs `f`, turning a panic into the type's default instead of unwinding into C.
pub(crate) fn boundary<T: PanicDefault>(f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| T::panic_default())
}

/// Runs an entry point's whole body inside the panic boundary, from its
/// first line (argument checks included): `Err(code)` and a caught panic
/// both become the result code, so every misuse is answered the same way
/// by every function.
pub(crate) fn call(f: impl FnOnce() -> Result<(), sw_result>) -> sw_result {
    boundary(|| f().err().unwrap_or(sw_result::Ok))
}

/// `len` bytes at `ptr`; NULL is allowed only with length 0.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], sw_result> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(sw_result::NullParameter)
        };
    }
    // SAFETY: the caller promises `len` readable bytes at a non-NULL `ptr`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A NUL-terminated UTF-8 string.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char) -> Result<&'a str, sw_result> {
    if ptr.is_null() {
        return Err(sw_result::NullParameter);
    }
    // SAFETY: the caller promises a NUL-terminated string at a non-NULL `ptr`.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| sw_result::InvalidUtf8)
}

/// `len` bytes of UTF-8 at `ptr`.
pub(crate) unsafe fn str_bytes<'a>(ptr: *const c_char, len: usize) -> Result<&'a str, sw_result> {
    let b = unsafe { bytes(ptr.cast(), len) }?;
    std::str::from_utf8(b).map_err(|_| sw_result::InvalidUtf8)
}

/// A static, NUL-terminated description of a result code (pass an `sw_result`
/// value; unknown numbers get "unknown result").
#[unsafe(no_mangle)]
pub extern "C" fn sw_result_str(result: u32) -> *const c_char {
    let s: &'static CStr = match result {
        0 => c"ok",
        1 => c"a required pointer was NULL",
        2 => c"invalid argument",
        3 => c"string is not valid UTF-8",
        4 => c"operating system error",
        5 => c"connection closed",
        6 => c"dropped: send buffer full (backpressure)",
        7 => c"server not running",
        8 => c"not allowed on this thread (it would wait for itself)",
        9 => c"panic caught at the API boundary",
        10 => c"TLS certificate file unreadable or without a PEM certificate",
        11 => c"TLS key file unreadable or without a PEM private key",
        12 => {
            c"TLS certificate and key refused (they do not match, or the key type is unsupported)"
        }
        13 => c"not supported by this build (TLS left out)",
        _ => c"unknown result",
    };
    s.as_ptr()
}

/// The library version, `"MAJOR.MINOR.PATCH"` (static, NUL-terminated). The
/// header's `SW_VERSION_*` macros say which version a program was compiled against.
#[unsafe(no_mangle)]
pub extern "C" fn sw_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
