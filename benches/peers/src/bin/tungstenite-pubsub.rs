//! A pub/sub server on tokio-tungstenite, written the way the crate's chat
//! example (`examples/server.rs`) writes one: a map of peers, each with an
//! unbounded channel; a message a peer sends is cloned into the channel of
//! every other peer, and each peer's channel is forwarded into its socket.
//! The only change is that peers are grouped by the path they connected to
//! (`/topic-K`, what `sockwave-bench --mode fanout` speaks), on a
//! single-threaded tokio runtime (the benchmark pins each server to one core).
//!   tungstenite-pubsub ADDR:PORT
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{future, pin_mut, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Tx = UnboundedSender<Message>;
type Topics = Arc<Mutex<HashMap<String, HashMap<SocketAddr, Tx>>>>;

async fn handle_connection(topics: Topics, stream: TcpStream, addr: SocketAddr) {
    let mut path = String::new();
    let remember_path = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, remember_path).await else { return };
    let (tx, rx) = unbounded();
    topics.lock().unwrap().entry(path.clone()).or_default().insert(addr, tx);
    let (outgoing, incoming) = ws.split();
    let publish = incoming.try_for_each(|msg| {
        if msg.is_text() || msg.is_binary() {
            let topics = topics.lock().unwrap();
            for (peer, tx) in topics.get(&path).into_iter().flatten() {
                if *peer != addr {
                    let _ = tx.unbounded_send(msg.clone());
                }
            }
        }
        future::ok(())
    });
    let deliver = rx.map(Ok).forward(outgoing);
    pin_mut!(publish, deliver);
    future::select(publish, deliver).await;
    if let Some(peers) = topics.lock().unwrap().get_mut(&path) {
        peers.remove(&addr);
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9004".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    rt.block_on(async move {
        let topics = Topics::default();
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("tungstenite-pubsub listening on ws://{}", listener.local_addr().unwrap());
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(handle_connection(topics.clone(), stream, peer));
        }
    });
}
