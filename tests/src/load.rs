//! What the load generators share: keep-alive HTTP/1.1 connections over loopback, and the report
//! (throughput and latency percentiles) every benchmark prints as one JSON line.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive connection; refuses anything but loopback.
pub async fn connect(addr: SocketAddr) -> Result<Sender> {
    if !addr.ip().is_loopback() {
        bail!("load is only ever sent to loopback addresses, not {addr}");
    }
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads the whole answer: (status, body).
pub async fn send(sender: &mut Sender, request: http::Request<Full<Bytes>>) -> Result<(http::StatusCode, Bytes)> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// Throughput and latency percentiles (µs) of `latencies` (ns) collected over `elapsed`.
pub fn report(mut latencies: Vec<u64>, elapsed: Duration) -> serde_json::Value {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    serde_json::json!({
        "requests": latencies.len(),
        "seconds": elapsed.as_secs_f64(),
        "signatures_per_second": latencies.len() as f64 / elapsed.as_secs_f64(),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
    })
}
