//! Tezos sign requests as octez sends them, for load generators and tests. Layouts: octez's
//! `block_header_repr.ml` and `operation_repr.ml`
//! (<https://github.com/tezos/tezos-mirror/tree/master/src/proto_alpha/lib_protocol>).

/// Mainnet's chain id, `NetXdQprcVkpaWU`.
pub const MAINNET: [u8; 4] = [0x7a, 0x06, 0xa7, 0x70];

/// A preattestation (magic 0x12, tag 20) or attestation (0x13, tag 21): chain, branch, slot,
/// level, round, and a block payload hash made of `payload`, so that two payloads conflict.
pub fn consensus(magic: u8, chain: [u8; 4], level: u32, round: u32, payload: u8) -> Vec<u8> {
    let mut data = vec![magic];
    data.extend_from_slice(&chain);
    data.extend_from_slice(&[0x5a; 32]);
    data.push(if magic == 0x12 { 20 } else { 21 });
    data.extend_from_slice(&3u16.to_be_bytes());
    data.extend_from_slice(&level.to_be_bytes());
    data.extend_from_slice(&round.to_be_bytes());
    data.extend_from_slice(&[payload; 32]);
    data
}

/// A preattestation (tag 40) or attestation (tag 41) as a tz4 key signs it ("BLS mode"): no
/// slot, so the level is at byte 38.
pub fn bls_consensus(magic: u8, chain: [u8; 4], level: u32, round: u32, payload: u8) -> Vec<u8> {
    let mut data = consensus(magic, chain, level, round, payload);
    data[37] = if magic == 0x12 { 40 } else { 41 };
    data.drain(38..40);
    data
}

/// A Tenderbake block header (magic 0x11) at `level`, its fitness ending with `round`, and a
/// payload hash made of `payload`.
pub fn block(chain: [u8; 4], level: u32, round: u32, payload: u8) -> Vec<u8> {
    let mut data = vec![0x11];
    data.extend_from_slice(&chain);
    data.extend_from_slice(&level.to_be_bytes());
    data.push(1);
    data.extend_from_slice(&[0x5a; 32]); // predecessor
    data.extend_from_slice(&(1_700_000_000u64 + u64::from(level)).to_be_bytes());
    data.push(4); // validation passes
    data.extend_from_slice(&[0x33; 32]); // operations hash
    let elements: [&[u8]; 5] = [&[2], &level.to_be_bytes(), &[], &0u32.to_be_bytes(), &round.to_be_bytes()];
    let fitness: Vec<u8> = elements.iter().flat_map(|e| [&(e.len() as u32).to_be_bytes()[..], e].concat()).collect();
    data.extend_from_slice(&(fitness.len() as u32).to_be_bytes());
    data.extend_from_slice(&fitness);
    data.extend_from_slice(&[0x44; 32]); // context
    data.extend_from_slice(&[payload; 32]); // payload hash
    data.extend_from_slice(&0u32.to_be_bytes()); // payload round
    data.extend_from_slice(&[0; 8]); // proof of work nonce
    data.push(0); // no seed nonce hash
    data.push(2); // per-block votes: pass
    data
}

/// POSTs `data` to a Tezos signer's `/keys/<pkh>` as octez does, blocking: the HTTP status and the
/// body.
pub fn sign(addr: std::net::SocketAddr, pkh: &str, data: &[u8]) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let body = format!("\"{}\"", hex::encode(data));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    write!(
        stream,
        "POST /keys/{pkh} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// The signature in a signer's 200 answer.
pub fn signature(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["signature"].as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_signer::protocol::tezos::operation::{parse, RequestKind, Watermark};

    #[test]
    fn sigil_reads_what_these_build() {
        let request = parse(&block(MAINNET, 7, 2, 1)).unwrap();
        assert_eq!(request.kind, RequestKind::Block);
        assert_eq!(request.watermark, Some(Watermark { chain_id: MAINNET, level: 7, round: 2 }));
        let request = parse(&consensus(0x12, MAINNET, 9, 1, 1)).unwrap();
        assert_eq!((request.kind, request.watermark.unwrap().level), (RequestKind::Preattestation, 9));
        let request = parse(&bls_consensus(0x13, MAINNET, 11, 2, 1)).unwrap();
        assert_eq!(request.watermark, Some(Watermark { chain_id: MAINNET, level: 11, round: 2 }));
    }
}
