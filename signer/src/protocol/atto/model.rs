//! Atto objects as the node sends them (JSON), their canonical bytes and the digests that get
//! signed. Layouts: attocash/commons's `AttoBlock.kt`, `AttoVote.kt` and `AttoSigner.kt`
//! (<https://github.com/attocash/commons/tree/v7.0.2/commons-core/src/commonMain/kotlin/cash/atto/commons>).

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Smallest challenge upstream accepts (`fromHexToByteArrayAtLeast(64)`).
pub const CHALLENGE_MIN_BYTES: usize = 64;
/// Largest challenge we accept: the node's is its public URI plus 128 random bytes.
pub const CHALLENGE_MAX_BYTES: usize = 4096;

/// BLAKE2b with the given output length, unkeyed (AttoHasher).
pub fn blake2b<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut hasher = Blake2bVar::new(N).expect("BLAKE2b output length is 1..=64");
    for part in parts {
        hasher.update(part);
    }
    let mut out = [0u8; N];
    hasher.finalize_variable(&mut out).expect("output buffer has the requested length");
    out
}

/// Fixed-length bytes written as hex in JSON: either case in, uppercase out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(HexVisitor(|text: &str| {
            let mut out = [0u8; N];
            hex::decode_to_slice(text, &mut out)
                .map_err(|_| format!("expected {} hex characters, got {:?}", N * 2, truncate(text)))?;
            Ok(Hex(out))
        }))
    }
}

/// Decodes a JSON string with `parse`, whether serde hands it over borrowed or not.
struct HexVisitor<F>(F);

impl<T, F: FnOnce(&str) -> Result<T, String>> de::Visitor<'_> for HexVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a hex string")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Network {
    Live,
    Beta,
    Dev,
    Local,
}

impl Network {
    fn code(self) -> u8 {
        match self {
            Network::Live => 0,
            Network::Beta => 1,
            Network::Dev => 2,
            Network::Local => 3,
        }
    }
}

/// `AttoAlgorithm`: only V1 (BLAKE2b + Ed25519, code 0) exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    V1,
}

impl Algorithm {
    fn code(self) -> u8 {
        0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenBlock {
    pub network: Network,
    pub version: u16,
    pub algorithm: Algorithm,
    pub public_key: Hex<32>,
    pub balance: u64,
    pub timestamp: i64,
    pub send_hash_algorithm: Algorithm,
    pub send_hash: Hex<32>,
    pub representative_algorithm: Algorithm,
    pub representative_public_key: Hex<32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveBlock {
    pub network: Network,
    pub version: u16,
    pub algorithm: Algorithm,
    pub public_key: Hex<32>,
    pub height: u64,
    pub balance: u64,
    pub timestamp: i64,
    pub previous: Hex<32>,
    pub send_hash_algorithm: Algorithm,
    pub send_hash: Hex<32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendBlock {
    pub network: Network,
    pub version: u16,
    pub algorithm: Algorithm,
    pub public_key: Hex<32>,
    pub height: u64,
    pub balance: u64,
    pub timestamp: i64,
    pub previous: Hex<32>,
    pub receiver_algorithm: Algorithm,
    pub receiver_public_key: Hex<32>,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeBlock {
    pub network: Network,
    pub version: u16,
    pub algorithm: Algorithm,
    pub public_key: Hex<32>,
    pub height: u64,
    pub balance: u64,
    pub timestamp: i64,
    pub previous: Hex<32>,
    pub representative_algorithm: Algorithm,
    pub representative_public_key: Hex<32>,
}

/// `AttoBlock`, discriminated by `"type"`. Output-only fields the node adds (`address`,
/// `receiverAddress`, `representativeAddress`, OPEN's `height`) are ignored, never hashed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum Block {
    Open(OpenBlock),
    Receive(ReceiveBlock),
    Send(SendBlock),
    Change(ChangeBlock),
}

/// Little-endian writer for the canonical layouts.
struct Bytes(Vec<u8>);

impl Bytes {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
}

impl Block {
    pub fn public_key(&self) -> &[u8; 32] {
        match self {
            Block::Open(b) => &b.public_key.0,
            Block::Receive(b) => &b.public_key.0,
            Block::Send(b) => &b.public_key.0,
            Block::Change(b) => &b.public_key.0,
        }
    }

    /// The serialized block (AttoBlock.toBuffer), 119 to 134 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Bytes(Vec::with_capacity(134));
        match self {
            Block::Open(b) => {
                w.u8(0).u8(b.network.code()).u16(b.version).u8(b.algorithm.code()).raw(&b.public_key.0);
                w.u64(b.balance).i64(b.timestamp);
                w.u8(b.send_hash_algorithm.code()).raw(&b.send_hash.0);
                w.u8(b.representative_algorithm.code()).raw(&b.representative_public_key.0);
            }
            Block::Receive(b) => {
                w.u8(1).u8(b.network.code()).u16(b.version).u8(b.algorithm.code()).raw(&b.public_key.0);
                w.u64(b.height).u64(b.balance).i64(b.timestamp).raw(&b.previous.0);
                w.u8(b.send_hash_algorithm.code()).raw(&b.send_hash.0);
            }
            Block::Send(b) => {
                w.u8(2).u8(b.network.code()).u16(b.version).u8(b.algorithm.code()).raw(&b.public_key.0);
                w.u64(b.height).u64(b.balance).i64(b.timestamp).raw(&b.previous.0);
                w.u8(b.receiver_algorithm.code()).raw(&b.receiver_public_key.0).u64(b.amount);
            }
            Block::Change(b) => {
                w.u8(3).u8(b.network.code()).u16(b.version).u8(b.algorithm.code()).raw(&b.public_key.0);
                w.u64(b.height).u64(b.balance).i64(b.timestamp).raw(&b.previous.0);
                w.u8(b.representative_algorithm.code()).raw(&b.representative_public_key.0);
            }
        }
        w.0
    }

    /// BLAKE2b-256 of the block bytes: what the key signs.
    pub fn hash(&self) -> [u8; 32] {
        blake2b(&[&self.to_bytes()])
    }
}

/// `AttoVote`. A final vote has `timestamp == i64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vote {
    pub version: u16,
    pub algorithm: Algorithm,
    pub public_key: Hex<32>,
    pub block_algorithm: Algorithm,
    pub block_hash: Hex<32>,
    pub timestamp: i64,
}

impl Vote {
    /// The 76 serialized vote bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Bytes(Vec::with_capacity(76));
        w.u16(self.version).u8(self.algorithm.code()).raw(&self.public_key.0);
        w.u8(self.block_algorithm.code()).raw(&self.block_hash.0).i64(self.timestamp);
        w.0
    }

    /// BLAKE2b-256 of the vote bytes: what the key signs.
    pub fn hash(&self) -> [u8; 32] {
        blake2b(&[&self.to_bytes()])
    }
}

/// The challenge bytes of a handshake, hex in JSON, 64 to 4096 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge(pub Vec<u8>);

impl<'de> Deserialize<'de> for Challenge {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(HexVisitor(|text: &str| {
            let bytes = hex::decode(text).map_err(|_| "challenge must be hex".to_string())?;
            if !(CHALLENGE_MIN_BYTES..=CHALLENGE_MAX_BYTES).contains(&bytes.len()) {
                return Err(format!(
                    "challenge must be {CHALLENGE_MIN_BYTES} to {CHALLENGE_MAX_BYTES} bytes, got {}",
                    bytes.len()
                ));
            }
            Ok(Challenge(bytes))
        }))
    }
}

impl Challenge {
    /// BLAKE2b-512(signer public key ‖ challenge ‖ timestamp LE): what the key signs.
    pub fn digest(&self, public_key: &[u8; 32], timestamp: i64) -> [u8; 64] {
        blake2b(&[public_key, &self.0, &timestamp.to_le_bytes()])
    }
}

/// Body of `POST /blocks` and `POST /votes`.
#[derive(Debug, Deserialize)]
pub struct TargetRequest<T> {
    pub target: T,
}

/// Body of `POST /challenges`.
#[derive(Debug, Deserialize)]
pub struct ChallengeRequest {
    pub target: Challenge,
    pub timestamp: i64,
}

/// `atto://` + lowercase base32 (RFC 4648, no padding) of algorithm ‖ public key ‖ BLAKE2b-40.
pub fn address(public_key: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(38);
    bytes.push(Algorithm::V1.code());
    bytes.extend_from_slice(public_key);
    let checksum: [u8; 5] = blake2b(&[&bytes]);
    bytes.extend_from_slice(&checksum);
    format!("atto://{}", base32_lower(&bytes))
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The digest a request body asks to sign, for each endpoint; used by the fuzz target so that the
/// fuzzer drives exactly the decoding the API runs.
pub fn decode_and_digest(endpoint: u8, body: &[u8], public_key: &[u8; 32]) -> Option<Vec<u8>> {
    match endpoint % 3 {
        0 => serde_json::from_slice::<TargetRequest<Block>>(body).ok().map(|r| r.target.hash().to_vec()),
        1 => serde_json::from_slice::<TargetRequest<Vote>>(body).ok().map(|r| r.target.hash().to_vec()),
        _ => serde_json::from_slice::<ChallengeRequest>(body)
            .ok()
            .map(|r| r.target.digest(public_key, r.timestamp).to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const ZERO_PK: &str = "3B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29";
    const REP: &str = "69C010A8A74924D083D1FC8234861B4B357530F42341484B4EBDA6B99F047105";

    fn block_json(fields: &str) -> String {
        format!(r#"{{"network":"LIVE","version":0,"algorithm":"V1","publicKey":"{ZERO_PK}",{fields}}}"#)
    }

    /// (JSON fields, serialized bytes, hash), computed with the node's own library, npm
    /// `@attocash/commons-core` 8.0.0 (the Kotlin/JS build of attocash/commons).
    fn vectors() -> Vec<(String, &'static str, &'static str)> {
        vec![
            (
                block_json(r#""type":"RECEIVE","height":2,"balance":18000000000000000000,"timestamp":1704616009216,"previous":"03783A08F51486A66A602439D9164894F07F150B548911086DAE4E4F57A9C4DD","sendHashAlgorithm":"V1","sendHash":"EE5FDA9A1ACEC7A09231792C345CDF5CD29F1059E5C413535D9FCA66A1FB2F49","address":"atto://aa5wuj54z23killcuounaktpbvzwkmqvo4o6eq5ghlaerimllhnctwl5g2ekm""#),
                "01000000003B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA290200000000000000000008C5A1D8CCF9001E08E38C01000003783A08F51486A66A602439D9164894F07F150B548911086DAE4E4F57A9C4DD00EE5FDA9A1ACEC7A09231792C345CDF5CD29F1059E5C413535D9FCA66A1FB2F49",
                "DDDB4D4BE04F23F3741CFCF3D18A42EBC521E566800A7EF34704F5D26CBD9E17",
            ),
            (
                block_json(&format!(r#""type":"SEND","height":3,"balance":17999999999999999000,"timestamp":1704616012000,"previous":"DDDB4D4BE04F23F3741CFCF3D18A42EBC521E566800A7EF34704F5D26CBD9E17","receiverAlgorithm":"V1","receiverPublicKey":"{REP}","amount":1000"#)),
                "02000000003B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29030000000000000018FC07C5A1D8CCF9E02808E38C010000DDDB4D4BE04F23F3741CFCF3D18A42EBC521E566800A7EF34704F5D26CBD9E170069C010A8A74924D083D1FC8234861B4B357530F42341484B4EBDA6B99F047105E803000000000000",
                "51101BB985898BF370696F3A5455CF461C5C15EC30A378D7B6A68EACFAAF44C5",
            ),
            (
                block_json(&format!(r#""type":"OPEN","balance":1000,"timestamp":1704616013000,"sendHashAlgorithm":"V1","sendHash":"4DC7257C0F492B8C7AC2D8DE4A6DC4078B060BB42FDB6F8032A839AAA9048DB0","representativeAlgorithm":"V1","representativePublicKey":"{REP}","height":1"#)),
                "00000000003B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29E803000000000000C82C08E38C010000004DC7257C0F492B8C7AC2D8DE4A6DC4078B060BB42FDB6F8032A839AAA9048DB00069C010A8A74924D083D1FC8234861B4B357530F42341484B4EBDA6B99F047105",
                "0CFAD8750E83423E192DBF3A08C3BE3700439344500AD8EFDB404A51BA0DEA50",
            ),
            (
                block_json(&format!(r#""type":"CHANGE","height":4,"balance":17999999999999999000,"timestamp":1704616014000,"previous":"AD675BD718F3D96F9B89C58A8BF80741D5EDB6741D235B070D56E84098894DD5","representativeAlgorithm":"V1","representativePublicKey":"{REP}""#)),
                "03000000003B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29040000000000000018FC07C5A1D8CCF9B03008E38C010000AD675BD718F3D96F9B89C58A8BF80741D5EDB6741D235B070D56E84098894DD50069C010A8A74924D083D1FC8234861B4B357530F42341484B4EBDA6B99F047105",
                "C1E858B37CC02D537F6AEEF855765EB59696862D4518F28875FE1CEA34E7D069",
            ),
        ]
    }

    #[test]
    fn blocks_serialize_and_hash_like_upstream() {
        for (json, bytes, hash) in vectors() {
            let block: Block = serde_json::from_str(&json).unwrap();
            assert_eq!(hex::encode_upper(block.to_bytes()), bytes, "{json}");
            assert_eq!(hex::encode_upper(block.hash()), hash, "{json}");
            assert_eq!(hex::encode_upper(block.public_key()), ZERO_PK);
        }
    }

    /// The LIVE and DEV genesis transactions (attocash/node application-{live,dev}.yaml): real
    /// production signatures. Our decoder must rebuild the exact block bytes from JSON, and the
    /// signature must verify over our hash.
    #[test]
    fn genesis_transactions_verify() {
        use crate::keys::{Algorithm as Curve, PublicKey, Signature};
        let genesis = [
            ("LIVE", "0000000000C55A82411E874C4BB8E114688F66B69C6DD6A78B6B1AD9CA46B0A77AEC16C912000008C5A1D8CCF92FE8705A930100000000000000000000000000000000000000000000000000000000000000000000000089A4A906C0E12AC7CE2F47E76FD4BA01F31F468DE93F4C880F060E346DFE8BD821A9A3D45090DC818FDE7D275615AE5ABAE2F352CFE90B58B8A456FDFE62240FE9CE4980029C8BFBA8D3D9BADA9C1EF6F68C548FA9F92B1B06A84E379884060F0FF023CE00000000", 1732389169199i64, "D1C37D6BBB8F9984029EA21712BB1AA6D2B3D0CD9A484C8CC3B967B7A0501C08"),
            ("DEV", "0002000000E4C619E2F65B535D414F184033A1D80B6D6D605B54CE4DE5D49BCE8C47E74A92000008C5A1D8CCF9408D6C5A930100000000000000000000000000000000000000000000000000000000000000000000000063D7FB577B1A84C10308B41B899A9B0C2AF4976FC0FB75CC5B5259A7242777A5D30667F4244A8C4B830AD0A57344D053BDA68E78C343266CEDD8606D54BE40BD64173F6995D6E6A771E4DB56BCF95B24512FD56DF82468AFFFA409765739840B26BFDF9400000000", 1732388883776, "59F7064570ACDE37CE53AD16D1C87976135AE440C135C6DFC75F694CFB5D8C4E"),
        ];
        for (network, transaction, timestamp, hash) in genesis {
            let transaction = hex::decode(transaction).unwrap();
            assert_eq!(transaction.len(), 191, "block 119 ‖ signature 64 ‖ work 8");
            let (block_bytes, signature) = (&transaction[..119], &transaction[119..183]);
            let public_key = hex::encode_upper(&block_bytes[5..37]);
            let representative = hex::encode_upper(&block_bytes[87..119]);
            let json = format!(
                r#"{{"type":"OPEN","network":"{network}","version":0,"algorithm":"V1","publicKey":"{public_key}","balance":18000000000000000000,"timestamp":{timestamp},"sendHashAlgorithm":"V1","sendHash":"{}","representativeAlgorithm":"V1","representativePublicKey":"{representative}"}}"#,
                "00".repeat(32)
            );
            let block: Block = serde_json::from_str(&json).unwrap();
            assert_eq!(block.to_bytes(), block_bytes, "{network}");
            assert_eq!(hex::encode_upper(block.hash()), hash, "{network}");
            let key = PublicKey::from_bytes(Curve::Ed25519, block.public_key()).unwrap();
            key.verify(&block.hash(), &Signature::new(Curve::Ed25519, signature.try_into().unwrap())).unwrap();
        }
    }

    #[test]
    fn hex_input_is_case_insensitive() {
        let (json, _, hash) = vectors().remove(0);
        let hexes = [ZERO_PK, "03783A08F51486A66A602439D9164894F07F150B548911086DAE4E4F57A9C4DD"];
        let lowered = hexes.iter().fold(json, |json, h| json.replace(h, &h.to_lowercase()));
        assert!(lowered.contains("3b6a27bc"));
        let block: Block = serde_json::from_str(&lowered).unwrap();
        assert_eq!(hex::encode_upper(block.hash()), hash);
    }

    #[test]
    fn votes_hash_like_upstream() {
        let vote = |ts: &str| {
            format!(
                r#"{{"version":0,"algorithm":"V1","publicKey":"{ZERO_PK}","blockAlgorithm":"V1","blockHash":"DDDB4D4BE04F23F3741CFCF3D18A42EBC521E566800A7EF34704F5D26CBD9E17","timestamp":{ts}}}"#
            )
        };
        let normal: Vote = serde_json::from_str(&vote("1704616010000")).unwrap();
        assert_eq!(
            hex::encode_upper(normal.to_bytes()),
            "0000003B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA2900DDDB4D4BE04F23F3741CFCF3D18A42EBC521E566800A7EF34704F5D26CBD9E17102108E38C010000"
        );
        assert_eq!(
            hex::encode_upper(normal.hash()),
            "AB4DFC5AF7B1950F5BCCAD7B8D3350B02FE8679B6AC70E810FD31DF4931462E7"
        );
        let final_vote: Vote = serde_json::from_str(&vote("9223372036854775807")).unwrap();
        assert_eq!(
            hex::encode_upper(final_vote.hash()),
            "7F313D0912999E9EE83365201587BE3B8D5A81B181CB129931FA6D29CE2C0F3B"
        );
    }

    #[test]
    fn challenge_digest_like_upstream() {
        let mut bytes = b"wss://atto.example.com:8082".to_vec();
        bytes.extend_from_slice(&[0xAB; 128]);
        let body = format!(r#"{{"target":"{}","timestamp":1704616011000}}"#, hex::encode(&bytes));
        let request: ChallengeRequest = serde_json::from_str(&body).unwrap();
        let pk: [u8; 32] = hex::decode(ZERO_PK).unwrap().try_into().unwrap();
        assert_eq!(
            hex::encode_upper(request.target.digest(&pk, request.timestamp)),
            "757E7A0CB3BB71D89B066A88E68F44B3551A9F959CC16C823AD1B3DA10EA928DB13232D16547BFCFF835EB02B5DDA4DF0294EC8B25E7B196D77178B6CB242687"
        );
    }

    #[test]
    fn blake2b_vectors() {
        assert_eq!(
            hex::encode_upper(blake2b::<32>(&[&[0u8; 32]])),
            "89EB0D6A8A691DAE2CD15ED0369931CE0A949ECAFA5C3F93F8121833646E15C3"
        );
        assert_eq!(hex::encode_upper(blake2b::<8>(&[b"atto"])), "41F1A46DC16757D6");
        assert_eq!(
            hex::encode_upper(blake2b::<32>(&[b"atto", b"commons"])),
            "08994FC1B1C06542E3EE7BC2B6BDA6905538303D5755C0DAD714810260B7D078"
        );
    }

    #[test]
    fn addresses_like_upstream() {
        let pk: [u8; 32] = hex::decode(ZERO_PK).unwrap().try_into().unwrap();
        assert_eq!(address(&pk), "atto://aa5wuj54z23killcuounaktpbvzwkmqvo4o6eq5ghlaerimllhnctwl5g2ekm");
    }

    #[test]
    fn rejects_what_upstream_rejects() {
        let (json, _, _) = vectors().remove(0);
        for bad in [
            json.replace("\"LIVE\"", "\"UNKNOWN\""),
            json.replace("\"RECEIVE\"", "\"BURN\""),
            json.replace("\"V1\"", "\"V2\""),
            json.replace("03783A08", "03783A0"),
            json.replace("\"height\":2", "\"height\":-2"),
            json.replace(",\"previous\"", ",\"nothing\""),
        ] {
            assert!(serde_json::from_str::<Block>(&bad).is_err(), "{bad}");
        }
        let short = format!(r#"{{"target":"{}","timestamp":1}}"#, "AB".repeat(63));
        assert!(serde_json::from_str::<ChallengeRequest>(&short).unwrap_err().to_string().contains("64 to 4096"));
        let long = format!(r#"{{"target":"{}","timestamp":1}}"#, "AB".repeat(4097));
        assert!(serde_json::from_str::<ChallengeRequest>(&long).is_err());
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        let pk = [0u8; 32];
        for input in [&b""[..], b"{", b"null", b"{\"target\":{\"type\":\"SEND\"}}", &[0xff, 0xfe, 0x00]] {
            for endpoint in 0..3 {
                assert!(decode_and_digest(endpoint, input, &pk).is_none());
            }
        }
    }
}
