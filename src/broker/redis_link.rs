//! [`RedisLink`]: where Redis is and how to open a connection to it.
//!
//! The publishing connection is the `redis` crate's own client. The
//! subscription connection is a plain socket written and read with the
//! crate's command encoder and RESP parser: one thread writes SUBSCRIBE
//! while another blocks reading, which the crate's synchronous `PubSub`
//! (one thread that must poll with a read timeout) cannot do.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a connect (and the AUTH write) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A parsed `redis://` address.
#[derive(Debug, Clone)]
pub(crate) struct RedisLink {
    pub(crate) client: redis::Client,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl RedisLink {
    /// Parses `redis://[user:password@]host[:port][/db]`. Other schemes
    /// (`rediss://`, unix sockets) are refused: TLS to Redis is not built.
    pub(crate) fn parse(url: &str) -> io::Result<RedisLink> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if !url.starts_with("redis://") {
            return Err(invalid(format!(
                "broker URL {url:?}: only redis://host:port/ is supported"
            )));
        }
        let client = redis::Client::open(url).map_err(|e| invalid(format!("{url:?}: {e}")))?;
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            return Err(invalid(format!("broker URL {url:?}: not a TCP address")));
        };
        let settings = info.redis_settings();
        Ok(RedisLink {
            host,
            port,
            username: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
            client,
        })
    }

    /// `host:port`, for logs.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A new socket to Redis, AUTH written (its reply is the first thing
    /// the reader sees). Blocks for at most [`CONNECT_TIMEOUT`] per address.
    pub(crate) fn connect_raw(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(mut stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
                    if let Some(password) = &self.password {
                        let mut auth = redis::cmd("AUTH");
                        if let Some(user) = &self.username {
                            auth.arg(user);
                        }
                        stream.write_all(&auth.arg(password).get_packed_command())?;
                    }
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether the first reply on a raw connection was AUTH's.
    pub(crate) fn sends_auth(&self) -> bool {
        self.password.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_refuses_what_it_cannot_serve() {
        let link = RedisLink::parse("redis://127.0.0.1:7000/").unwrap();
        assert_eq!(link.address(), "127.0.0.1:7000");
        assert!(!link.sends_auth());
        let link = RedisLink::parse("redis://user:secret@localhost/2").unwrap();
        assert_eq!(link.address(), "localhost:6379");
        assert!(link.sends_auth());
        for bad in [
            "rediss://h:1/",
            "unix:///tmp/r.sock",
            "http://h/",
            "redis://",
        ] {
            assert!(RedisLink::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
