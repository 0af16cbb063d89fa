//! The connection to one validator node: sigil dials the node's `priv_validator_laddr` and keeps
//! dialing. `tcp://` is wrapped in SecretConnection (the `cometbft-p2p` crate, the one tmkms uses);
//! `unix://` carries the same length-delimited protobuf messages in the clear, as CometBFT does.
//!
//! The node gives a signer 3 s to connect at startup and then exits, so sigil redials within a
//! second, forever. Requests are answered one at a time (the node sends one at a time), and a
//! refusal is an answer: only a broken or idle connection is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cometbft_p2p::{AsyncReadMsg, AsyncSecretConnection, AsyncSecretReader, AsyncSecretWriter, AsyncWriteMsg, PeerId};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::proto::Message;
use super::validator::Validator;
use crate::metrics::ChainLabels;

/// The node's per-message deadline is 5 s; sigil answers within it or the node gives up anyway.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// An idle node pings every ~3.3 s; after this long without a message the connection is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A vote may carry a 1 MiB extension.
pub const MAX_MESSAGE: usize = 1024 * 1024 + 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

/// Why `connect` or `nodeId` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("put the node id in nodeId, not in the address")]
    NodeIdInAddress,
    #[error("{0:?}: expected tcp://host:port")]
    NotHostPort(String),
    #[error("{0:?}: expected unix:///absolute/path")]
    RelativeSocket(String),
    #[error("{0:?}: expected tcp://host:port or unix:///path")]
    UnknownScheme(String),
    #[error("nodeId {0:?} is not hex")]
    NodeIdNotHex(String),
    #[error("nodeId {0:?} is not 20 bytes (40 hex characters)")]
    NodeIdLength(String),
}

impl Endpoint {
    /// `tcp://host:port` or `unix:///path/to.sock`.
    pub fn parse(text: &str) -> Result<Endpoint, AddressError> {
        if let Some(address) = text.strip_prefix("tcp://") {
            if address.contains('@') {
                return Err(AddressError::NodeIdInAddress);
            }
            if address.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
                return Err(AddressError::NotHostPort(text.into()));
            }
            return Ok(Endpoint::Tcp(address.to_string()));
        }
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(AddressError::RelativeSocket(text.into()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        Err(AddressError::UnknownScheme(text.into()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(address) => write!(f, "tcp://{address}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

pub struct Client {
    pub validator: Validator,
    pub endpoint: Endpoint,
    /// sigil's SecretConnection identity.
    pub identity: ed25519_dalek::SigningKey,
    /// The node's SecretConnection identity, when the operator pins it.
    pub node_id: Option<[u8; 20]>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("timed out connecting")]
    ConnectTimeout,
    #[error("SecretConnection handshake failed: {0}")]
    Handshake(cometbft_p2p::Error),
    #[error("the node's identity is {actual}, not the pinned nodeId {expected}")]
    WrongNode { actual: String, expected: String },
    #[error("the node closed the connection")]
    Closed,
    #[error("no message from the node for {0:?}")]
    Idle(Duration),
    #[error("cannot read from the node: {0}")]
    Read(String),
    #[error("cannot write to the node: {0}")]
    Write(String),
}

enum Connection {
    Secret(AsyncSecretReader<TcpStream>, AsyncSecretWriter<TcpStream>),
    Plain(UnixStream),
}

impl Connection {
    async fn read(&mut self) -> Result<Message, SessionError> {
        match self {
            Connection::Secret(reader, _) => reader.read_msg::<Message>().await.map_err(|e| match e {
                cometbft_p2p::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => SessionError::Closed,
                other => SessionError::Read(other.to_string()),
            }),
            Connection::Plain(stream) => read_delimited(stream).await,
        }
    }

    async fn write(&mut self, message: Message) -> Result<(), SessionError> {
        match self {
            Connection::Secret(_, writer) => {
                writer.write_msg(message).await.map_err(|e| SessionError::Write(e.to_string()))
            }
            Connection::Plain(stream) => stream
                .write_all(&message.encode_length_delimited_to_vec())
                .await
                .map_err(|e| SessionError::Write(e.to_string())),
        }
    }
}

/// uvarint length ‖ protobuf, bounded by [`MAX_MESSAGE`].
async fn read_delimited(stream: &mut UnixStream) -> Result<Message, SessionError> {
    let mut length: u64 = 0;
    for shift in (0..).step_by(7).take(10) {
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(SessionError::Closed),
            Err(e) => return Err(SessionError::Read(e.to_string())),
        };
        length |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > MAX_MESSAGE {
        return Err(SessionError::Read(format!("message of {length} bytes is over the {MAX_MESSAGE}-byte limit")));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.map_err(|e| SessionError::Read(e.to_string()))?;
    Message::decode(body.as_slice()).map_err(|e| SessionError::Read(format!("malformed message: {e}")))
}

impl Client {
    fn labels(&self) -> ChainLabels {
        ChainLabels { chain: self.validator.chain_id.clone() }
    }

    /// Dials, serves, redials, until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut served = false;
            let result = tokio::select! {
                result = self.session(&mut served) => result,
                _ = stop.wait_for(|s| *s) => return,
            };
            self.validator.signer.metrics().cometbft_connected.get_or_create(&self.labels()).set(0);
            let endpoint = self.endpoint.to_string();
            match result {
                Err(SessionError::Closed) => {
                    tracing::info!(%endpoint, chain = %self.validator.chain_id, "node closed the connection; redialing")
                }
                Err(error) if served => {
                    tracing::warn!(%endpoint, chain = %self.validator.chain_id, %error, "connection lost; redialing")
                }
                // Not the node sigil was told to serve: a misconfiguration, or someone on its port.
                Err(error @ SessionError::WrongNode { .. }) => {
                    tracing::warn!(%endpoint, chain = %self.validator.chain_id, %error, "refusing to serve this peer; redialing")
                }
                Err(error) => tracing::debug!(%endpoint, %error, "node not reachable yet; redialing"),
                Ok(()) => {}
            }
            if served {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                // Backoff between dials, not synchronisation.
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The connection, and the node's SecretConnection id (none over a Unix socket).
    async fn connect(&self) -> Result<(Connection, Option<String>), SessionError> {
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                    .await
                    .map_err(|_| SessionError::ConnectTimeout)?
                    .map_err(SessionError::Connect)?;
                Ok((Connection::Plain(stream), None))
            }
            Endpoint::Tcp(address) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
                    .await
                    .map_err(|_| SessionError::ConnectTimeout)?
                    .map_err(SessionError::Connect)?;
                let _ = stream.set_nodelay(true);
                let connection =
                    tokio::time::timeout(WRITE_TIMEOUT, AsyncSecretConnection::new(stream, &self.identity))
                        .await
                        .map_err(|_| SessionError::ConnectTimeout)?
                        .map_err(SessionError::Handshake)?;
                let actual = connection.peer_public_key().peer_id();
                if let Some(expected) = self.node_id {
                    if actual.verify(PeerId::new(expected)).is_err() {
                        return Err(SessionError::WrongNode {
                            actual: hex::encode(actual.as_bytes()),
                            expected: hex::encode(expected),
                        });
                    }
                }
                let (reader, writer) = connection.split();
                Ok((Connection::Secret(reader, writer), Some(hex::encode(actual.as_bytes()))))
            }
        }
    }

    async fn session(&self, served: &mut bool) -> Result<(), SessionError> {
        let (mut connection, node_id) = self.connect().await?;
        let (endpoint, chain) = (&self.endpoint, &self.validator.chain_id);
        match (&node_id, self.node_id) {
            (Some(node_id), None) => tracing::warn!(
                %endpoint, %chain, %node_id,
                "connected to a node that is not pinned (cometbft[].nodeId): whatever listens on this address is \
                 served, within maxHeightJump. Pin the node's id if it keeps its privval identity"
            ),
            (Some(node_id), Some(_)) => tracing::info!(%endpoint, %chain, %node_id, "connected to the pinned node"),
            (None, _) => tracing::info!(%endpoint, %chain, "connected to the node over its Unix socket"),
        }
        self.validator.signer.metrics().cometbft_connected.get_or_create(&self.labels()).set(1);
        *served = true;
        loop {
            let message = tokio::time::timeout(IDLE_TIMEOUT, connection.read())
                .await
                .map_err(|_| SessionError::Idle(IDLE_TIMEOUT))??;
            let Some(request) = message.sum else {
                return Err(SessionError::Read("empty message".into()));
            };
            let answer = self.validator.handle(request).await;
            let response = Message { sum: Some(answer.response) };
            tokio::time::timeout(WRITE_TIMEOUT, connection.write(response))
                .await
                .map_err(|_| SessionError::Write("timed out".into()))??;
        }
    }
}

/// Why the SecretConnection identity key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create identity key file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Load(#[from] crate::backend::local::LocalKeyError),
    #[error("identity key {path} is {algorithm}, not ed25519")]
    NotEd25519 { path: PathBuf, algorithm: crate::keys::Algorithm },
}

/// sigil's SecretConnection identity: read from `path` (any local key form), created there (mode
/// 600) when missing, or a fresh one per start without a path.
pub fn load_identity(path: Option<&std::path::Path>) -> Result<ed25519_dalek::SigningKey, IdentityError> {
    use crate::backend::local::LocalKeyConfig;
    use crate::keys::{Algorithm, SecretKey};
    let Some(path) = path else {
        return Ok(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng));
    };
    if !path.exists() {
        let key = SecretKey::generate(Algorithm::Ed25519);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(*key.to_bytes())));
        options
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()).and_then(|_| f.sync_all()))
            .map_err(|source| IdentityError::Create { path: path.to_path_buf(), source })?;
        tracing::info!(path = %path.display(), "created a SecretConnection identity key");
    }
    let config = LocalKeyConfig { secret_key_file: Some(path.to_path_buf()), ..Default::default() };
    let (key, _) = config.load()?;
    match key {
        SecretKey::Ed25519(_) => Ok(ed25519_dalek::SigningKey::from_bytes(&key.to_bytes())),
        other => Err(IdentityError::NotEd25519 { path: path.to_path_buf(), algorithm: other.algorithm() }),
    }
}

/// Parses a pinned node id: 40 hex characters (`cometbft show-node-id`).
pub fn parse_node_id(text: &str) -> Result<[u8; 20], AddressError> {
    let bytes = hex::decode(text.trim()).map_err(|_| AddressError::NodeIdNotHex(text.into()))?;
    bytes.try_into().map_err(|_| AddressError::NodeIdLength(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::parse("tcp://127.0.0.1:26659"), Ok(Endpoint::Tcp("127.0.0.1:26659".into())));
        assert_eq!(Endpoint::parse("unix:///run/pv.sock"), Ok(Endpoint::Unix("/run/pv.sock".into())));
        assert!(Endpoint::parse("tcp://127.0.0.1").unwrap_err().to_string().contains("host:port"));
        assert!(Endpoint::parse("tcp://abcd@127.0.0.1:1").unwrap_err().to_string().contains("nodeId"));
        assert!(Endpoint::parse("unix://run/pv.sock").is_err());
        assert!(Endpoint::parse("http://x:1").is_err());
        assert_eq!(Endpoint::parse("tcp://[::1]:9").unwrap().to_string(), "tcp://[::1]:9");
        assert!(parse_node_id(&"ab".repeat(20)).is_ok());
        assert!(parse_node_id("abc").is_err());
    }

    /// Over a Unix socket the length prefix is checked before anything is allocated or read: a
    /// node announcing a huge message gets an error, not a 4 GB buffer.
    #[tokio::test]
    async fn an_oversized_message_is_refused_before_it_is_read() {
        let (mut node, mut signer) = UnixStream::pair().unwrap();
        let mut announced = Vec::new();
        prost::encoding::encode_varint((MAX_MESSAGE + 1) as u64, &mut announced);
        node.write_all(&announced).await.unwrap();
        let error = read_delimited(&mut signer).await.unwrap_err().to_string();
        assert!(error.contains(&format!("over the {MAX_MESSAGE}-byte limit")), "{error}");

        let (mut node, mut signer) = UnixStream::pair().unwrap();
        let ping = Message { sum: Some(crate::protocol::cometbft::proto::Sum::PingRequest(Default::default())) };
        node.write_all(&ping.encode_length_delimited_to_vec()).await.unwrap();
        assert_eq!(read_delimited(&mut signer).await.unwrap(), ping);
    }
}
