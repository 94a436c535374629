//! An echo server on tokio-tungstenite, written as the crate's own
//! `examples/echo-server.rs` writes it: the stream split in two, text and
//! binary messages forwarded from the read half into the write half (which
//! lets the sink batch pipelined replies and flush once), on a
//! single-threaded tokio runtime (the benchmark pins each server to one core).
//!   tungstenite-echo ADDR:PORT
use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::TcpListener;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("tungstenite-echo listening on ws://{}", listener.local_addr().unwrap());
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
                let (write, read) = ws.split();
                let _ = read
                    .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
                    .forward(write)
                    .await;
            });
        }
    });
}
