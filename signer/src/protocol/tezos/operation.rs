//! What a Tezos sign request is: the magic byte, then for consensus messages the chain, level and
//! round (the high-water mark), and for generic operations the kind of every operation in the batch.
//!
//! Everything is table-driven. Supporting a new consensus tag or a new operation kind is one entry
//! in [`MAGIC`], [`CONSENSUS`] or [`OPERATIONS`]; anything not in a table is refused by name, so a
//! protocol upgrade can never make sigil guess. Offsets: octez's `block_header_repr.ml` and
//! `operation_repr.ml`
//! (<https://github.com/tezos/tezos-mirror/tree/master/src/proto_alpha/lib_protocol>), with
//! level and round read where octez-signer reads them
//! (<https://github.com/tezos/tezos-mirror/blob/master/src/bin_signer/handler.ml>).

use std::fmt;

use crate::policy::SignKind;

/// The ratchet streams of a Tezos key on a chain: each kind that can double-sign has its own mark.
pub const STREAMS: [&str; 3] = ["block", "preattestation", "attestation"];

/// The kinds a policy can allow, one per magic byte (generic operations are refined per operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    Block,
    Preattestation,
    Attestation,
    /// 0x03: manager operations, ballots, proposals, ... (each operation has its own kind).
    Generic,
    /// 0x05: Michelson data packed for off-chain signing.
    Michelson,
}

impl RequestKind {
    /// The kind as the sign path and its metrics know it (`tezos_block`, ...).
    pub fn sign_kind(self) -> SignKind {
        let name = match self {
            RequestKind::Block => "tezos_block",
            RequestKind::Preattestation => "tezos_preattestation",
            RequestKind::Attestation => "tezos_attestation",
            RequestKind::Generic => "tezos_generic",
            RequestKind::Michelson => "tezos_michelson",
        };
        SignKind::new("tezos", name)
    }

    /// The name used in `tezos.keys.<name>.allow`, metrics and errors.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Block => "block",
            RequestKind::Preattestation => "preattestation",
            RequestKind::Attestation => "attestation",
            RequestKind::Generic => "generic",
            RequestKind::Michelson => "michelson",
        }
    }

    /// The ratchet stream for kinds that can double-sign.
    pub fn stream(self) -> Option<&'static str> {
        match self {
            RequestKind::Block => Some(STREAMS[0]),
            RequestKind::Preattestation => Some(STREAMS[1]),
            RequestKind::Attestation => Some(STREAMS[2]),
            RequestKind::Generic | RequestKind::Michelson => None,
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded sign request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    /// For watermarked kinds: the chain, level and round.
    pub watermark: Option<Watermark>,
    /// For generic operations: every operation's kind, in order.
    pub operations: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub chain_id: [u8; 4],
    pub level: u32,
    pub round: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty request")]
    Empty,
    #[error("unknown magic byte 0x{0:02x}: sigil signs 0x03, 0x05, 0x11, 0x12 and 0x13")]
    UnknownMagic(u8),
    /// Emmy's watermarks, retired with Tenderbake in protocol Ithaca (2022): no baker of a
    /// current protocol sends them, and their level sits where nothing checks it.
    #[error(
        "magic byte 0x{0:02x} is a pre-Tenderbake (Emmy) {1}, retired since protocol Ithaca (2022); sigil does not \
         sign it"
    )]
    Retired(u8, &'static str),
    #[error("{kind} request too short: {len} bytes, needs at least {needed}")]
    TooShort { kind: RequestKind, len: usize, needed: usize },
    #[error("unknown consensus operation tag {tag} in a {kind} request")]
    UnknownConsensusTag { kind: RequestKind, tag: u8 },
    #[error("unknown operation tag {tag} at byte {at}: this operation kind is not known to sigil, so it is refused")]
    UnknownOperation { tag: u8, at: usize },
    #[error("malformed {operation} operation at byte {at}: {reason}")]
    Malformed { operation: &'static str, at: usize, reason: &'static str },
    #[error("generic request with no operations")]
    NoOperations,
    #[error("malformed block header: {0}")]
    BadBlock(&'static str),
    /// `stake`, `unstake`, `finalize_unstake` and `set_delegate_parameters` are transactions from
    /// an implicit account to itself; the same entrypoint on any other destination is a contract
    /// call (or an operation the protocol rejects), never a staking operation.
    #[error(
        "transaction to the reserved entrypoint {entrypoint} of another account ({destination}) is not a \
         staking operation; refused (generic:{entrypoint} only allows it from an account to itself)"
    )]
    ReservedEntrypointToOther { entrypoint: &'static str, destination: String },
}

/// How each magic byte is read.
struct Magic {
    byte: u8,
    kind: RequestKind,
    parse: fn(&[u8]) -> Result<Request, ParseError>,
}

const MAGIC: &[Magic] = &[
    Magic { byte: 0x03, kind: RequestKind::Generic, parse: generic },
    Magic { byte: 0x05, kind: RequestKind::Michelson, parse: michelson },
    Magic { byte: 0x11, kind: RequestKind::Block, parse: block },
    Magic { byte: 0x12, kind: RequestKind::Preattestation, parse: consensus },
    Magic { byte: 0x13, kind: RequestKind::Attestation, parse: consensus },
];

/// Consensus operation tags: (tag, magic byte it may appear under, whether a slot precedes the level).
/// BLS (tz4) tags drop the slot.
const CONSENSUS: &[(u8, u8, bool)] = &[
    (20, 0x12, true),  // preattestation
    (21, 0x13, true),  // attestation
    (23, 0x13, true),  // attestation_with_dal
    (40, 0x12, false), // preattestation, BLS mode
    (41, 0x13, false), // attestation, BLS mode
];

/// Decodes the POSTed bytes (watermark included).
pub fn parse(data: &[u8]) -> Result<Request, ParseError> {
    let first = *data.first().ok_or(ParseError::Empty)?;
    match first {
        0x01 => return Err(ParseError::Retired(first, "block")),
        0x02 => return Err(ParseError::Retired(first, "endorsement")),
        _ => {}
    }
    let magic = MAGIC.iter().find(|m| m.byte == first).ok_or(ParseError::UnknownMagic(first))?;
    (magic.parse)(data)
}

fn need(kind: RequestKind, data: &[u8], needed: usize) -> Result<(), ParseError> {
    if data.len() < needed {
        return Err(ParseError::TooShort { kind, len: data.len(), needed });
    }
    Ok(())
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn chain_at(data: &[u8]) -> [u8; 4] {
    [data[1], data[2], data[3], data[4]]
}

fn watermarked(kind: RequestKind, data: &[u8], level: u32, round: u32) -> Request {
    Request { kind, watermark: Some(Watermark { chain_id: chain_at(data), level, round }), operations: Vec::new() }
}

/// 0x11 ‖ chain(4) ‖ shell header (level at 5, fitness length at 83) ‖ ... The round is the last
/// fitness element, not `payload_round` (Signatory's v1.4 fix for re-proposals).
fn block(data: &[u8]) -> Result<Request, ParseError> {
    const FITNESS: usize = 87;
    need(RequestKind::Block, data, FITNESS)?;
    let level = u32_at(data, 5);
    let fitness_len = u32_at(data, 83) as usize;
    let end = FITNESS.checked_add(fitness_len).filter(|end| *end <= data.len());
    let end = end.ok_or(ParseError::BadBlock("fitness runs past the end"))?;
    // The fitness is a list of length-prefixed elements; the round is the last one, 4 bytes.
    let mut at = FITNESS;
    let mut last = None;
    while at < end {
        if at + 4 > end {
            return Err(ParseError::BadBlock("bad fitness element"));
        }
        let start = at + 4;
        let len = u32_at(data, at) as usize;
        at = start.checked_add(len).filter(|n| *n <= end).ok_or(ParseError::BadBlock("bad fitness element"))?;
        last = Some((start, len));
    }
    match last {
        Some((start, 4)) => Ok(watermarked(RequestKind::Block, data, level, u32_at(data, start))),
        _ => Err(ParseError::BadBlock("the fitness does not end with a 4-byte round")),
    }
}

/// 0x12/0x13 ‖ chain(4) ‖ branch(32) ‖ tag ‖ [slot(2)] ‖ level(4) ‖ round(4) ‖ payload hash(32) ‖ ...
fn consensus(data: &[u8]) -> Result<Request, ParseError> {
    let magic = MAGIC.iter().find(|m| m.byte == data[0]).map(|m| m.kind).unwrap_or(RequestKind::Attestation);
    need(magic, data, 38)?;
    let tag = data[37];
    let &(_, _, slot) = CONSENSUS
        .iter()
        .find(|(t, m, _)| *t == tag && *m == data[0])
        .ok_or(ParseError::UnknownConsensusTag { kind: magic, tag })?;
    let level_at = if slot { 40 } else { 38 };
    need(magic, data, level_at + 8 + 32)?;
    Ok(watermarked(magic, data, u32_at(data, level_at), u32_at(data, level_at + 4)))
}

fn michelson(_data: &[u8]) -> Result<Request, ParseError> {
    Ok(Request { kind: RequestKind::Michelson, watermark: None, operations: Vec::new() })
}

/// The shape of one field of an operation body, enough to find where the next operation starts.
#[derive(Debug, Clone, Copy)]
enum Field {
    Fixed(usize),
    /// A public key hash: curve tag then 20 bytes.
    Pkh,
    /// A manager operation's source: a [`Pkh`] whose position is kept.
    Source,
    /// A public key: curve tag then 32/33/33/48 bytes.
    PublicKey,
    /// A contract id: always 22 bytes, `0x00` ‖ pkh for implicit accounts, `0x01` ‖ 20 bytes ‖
    /// `0x00` for originated ones.
    Contract,
    /// A transaction's destination: a [`Contract`] whose position is kept.
    Destination,
    /// An unbounded natural or integer (Zarith): 7 bits per byte, high bit = more.
    Zarith,
    /// A uint30-length-prefixed byte string.
    Dynamic,
    /// 0x00, or 0xff followed by the inner fields.
    Optional(&'static [Field]),
    /// An entrypoint: a reserved tag, or 0xff then a one-byte-length-prefixed name.
    Entrypoint,
    /// A ballot's vote: one byte, 0 yay, 1 nay, 2 pass.
    Vote,
}

use Field::*;

/// source, fee, counter, gas_limit, storage_limit: the header every manager operation starts with.
const MANAGER: [Field; 5] = [Source, Zarith, Zarith, Zarith, Zarith];

/// An operation kind: its tag, name, and body after the tag.
struct Operation {
    tag: u8,
    name: &'static str,
    manager: bool,
    body: &'static [Field],
}

const fn op(tag: u8, name: &'static str, body: &'static [Field]) -> Operation {
    Operation { tag, name, manager: false, body }
}

const fn manager(tag: u8, name: &'static str, body: &'static [Field]) -> Operation {
    Operation { tag, name, manager: true, body }
}

/// Operation kinds a signer is asked to sign inside 0x03 requests (octez `operation_repr.ml`).
/// Anonymous operations (nonce revelations, denunciations) are never signed and so are absent.
const OPERATIONS: &[Operation] = &[
    op(5, "proposals", &[Pkh, Fixed(4), Dynamic]),
    op(6, "ballot", &[Pkh, Fixed(4), Fixed(32), Vote]),
    op(9, "drain_delegate", &[Pkh, Pkh, Pkh]),
    op(17, "failing_noop", &[Dynamic]),
    manager(107, "reveal", &[PublicKey, Optional(&[Dynamic])]),
    manager(108, "transaction", &[Zarith, Destination, Optional(&[Entrypoint, Dynamic])]),
    manager(109, "origination", &[Zarith, Optional(&[Pkh]), Dynamic, Dynamic]),
    manager(110, "delegation", &[Optional(&[Pkh])]),
    manager(111, "register_global_constant", &[Dynamic]),
    manager(112, "set_deposits_limit", &[Optional(&[Zarith])]),
    manager(113, "increase_paid_storage", &[Zarith, Contract]),
    manager(114, "update_consensus_key", &[PublicKey, Optional(&[Dynamic])]),
    manager(115, "update_companion_key", &[PublicKey, Optional(&[Dynamic])]),
    manager(158, "transfer_ticket", &[Dynamic, Dynamic, Contract, Zarith, Contract, Dynamic]),
    manager(201, "smart_rollup_add_messages", &[Dynamic]),
];

/// Transactions from an implicit account to itself with these entrypoints are staking operations;
/// policies name them as such. To any other destination they are refused
/// ([`ParseError::ReservedEntrypointToOther`]): octez rejects such pseudo-operations
/// (`Invalid_self_transaction_destination`, tezos/tezos-mirror `src/proto_alpha/lib_protocol/apply.ml`),
/// and to a contract they are a call that `generic:stake` must not let through.
const PSEUDO_OPERATIONS: &[(u8, &str)] =
    &[(6, "stake"), (7, "unstake"), (8, "finalize_unstake"), (9, "set_delegate_parameters")];

/// A ballot is named with its vote (`ballot:yay`), so that a policy can allow some votes only,
/// as tacoinfra's `voting` setting and Signatory's `ballot:` kinds do; `generic:ballot` allows all.
pub const BALLOTS: [&str; 3] = ["ballot:yay", "ballot:nay", "ballot:pass"];

/// Every operation kind name a policy may use after `generic:`.
pub fn operation_names() -> impl Iterator<Item = &'static str> {
    OPERATIONS.iter().map(|o| o.name).chain(PSEUDO_OPERATIONS.iter().map(|(_, n)| *n)).chain(BALLOTS)
}

/// 0x03 ‖ branch(32) ‖ operation ‖ operation ‖ ...
fn generic(data: &[u8]) -> Result<Request, ParseError> {
    need(RequestKind::Generic, data, 33)?;
    let mut reader = Reader { data, at: 33 };
    let mut operations = Vec::new();
    while reader.at < data.len() {
        let at = reader.at;
        let tag = reader.byte("operation", "missing tag")?;
        let operation = OPERATIONS.iter().find(|o| o.tag == tag).ok_or(ParseError::UnknownOperation { tag, at })?;
        let mut captured = Captured::default();
        if operation.manager {
            reader.fields(operation.name, &MANAGER, &mut captured)?;
        }
        reader.fields(operation.name, operation.body, &mut captured)?;
        let pseudo = captured.entrypoint.and_then(|e| PSEUDO_OPERATIONS.iter().find(|(t, _)| *t == e));
        match pseudo {
            Some(&(_, entrypoint)) => {
                let (source, destination) = captured.parties(data);
                let to_self = matches!((source, destination), (Some(s), Some([0x00, d @ ..])) if s == d);
                if !to_self {
                    let destination =
                        destination.map(crate::keys::tezos::contract_b58).unwrap_or_else(|| "none".into());
                    return Err(ParseError::ReservedEntrypointToOther { entrypoint, destination });
                }
                operations.push(entrypoint);
            }
            None => match captured.vote {
                Some(vote) => operations.push(BALLOTS[usize::from(vote)]),
                None => operations.push(operation.name),
            },
        }
    }
    if operations.is_empty() {
        return Err(ParseError::NoOperations);
    }
    Ok(Request { kind: RequestKind::Generic, watermark: None, operations })
}

/// What [`Reader::fields`] keeps of an operation besides its length: where its source and
/// destination are, and the reserved entrypoint it calls, if any.
#[derive(Debug, Default)]
struct Captured {
    source: Option<usize>,
    destination: Option<usize>,
    /// A reserved entrypoint's tag; a named entrypoint spelled like a reserved one counts as it.
    entrypoint: Option<u8>,
    /// A ballot's vote (an index into [`BALLOTS`]).
    vote: Option<u8>,
}

impl Captured {
    /// The source (21 bytes) and destination (22 bytes), where the operation has them.
    fn parties<'a>(&self, data: &'a [u8]) -> (Option<&'a [u8; 21]>, Option<&'a [u8; 22]>) {
        let source = self.source.and_then(|at| data.get(at..at + 21)).and_then(|s| s.try_into().ok());
        let destination = self.destination.and_then(|at| data.get(at..at + 22)).and_then(|d| d.try_into().ok());
        (source, destination)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn malformed(&self, operation: &'static str, reason: &'static str) -> ParseError {
        ParseError::Malformed { operation, at: self.at, reason }
    }

    fn byte(&mut self, operation: &'static str, reason: &'static str) -> Result<u8, ParseError> {
        let byte = *self.data.get(self.at).ok_or_else(|| self.malformed(operation, reason))?;
        self.at += 1;
        Ok(byte)
    }

    fn skip(&mut self, operation: &'static str, len: usize, reason: &'static str) -> Result<(), ParseError> {
        match self.at.checked_add(len).filter(|end| *end <= self.data.len()) {
            Some(end) => {
                self.at = end;
                Ok(())
            }
            None => Err(self.malformed(operation, reason)),
        }
    }

    /// Reads `fields`; records positions and a reserved entrypoint in `captured`.
    fn fields(&mut self, operation: &'static str, fields: &[Field], captured: &mut Captured) -> Result<(), ParseError> {
        for field in fields {
            match *field {
                Fixed(len) => self.skip(operation, len, "truncated")?,
                Pkh => self.pkh(operation)?,
                Source => {
                    captured.source = Some(self.at);
                    self.pkh(operation)?;
                }
                PublicKey => {
                    let len = match self.byte(operation, "truncated public key")? {
                        0 => 32,
                        1 | 2 => 33,
                        3 => 48,
                        _ => return Err(self.malformed(operation, "unknown public key curve")),
                    };
                    self.skip(operation, len, "truncated public key")?;
                }
                Contract => self.skip(operation, 22, "truncated contract")?,
                Destination => {
                    captured.destination = Some(self.at);
                    self.skip(operation, 22, "truncated contract")?;
                }
                Zarith => {
                    // Amounts are int64 at most: 10 bytes of 7 bits cover them.
                    let mut len = 0;
                    while self.byte(operation, "truncated number")? & 0x80 != 0 {
                        len += 1;
                        if len == 10 {
                            return Err(self.malformed(operation, "number too long"));
                        }
                    }
                }
                Dynamic => {
                    if self.at + 4 > self.data.len() {
                        return Err(self.malformed(operation, "truncated length"));
                    }
                    let len = u32_at(self.data, self.at) as usize;
                    self.at += 4;
                    self.skip(operation, len, "length runs past the end")?;
                }
                Optional(inner) => match self.byte(operation, "truncated option")? {
                    0x00 => {}
                    0xff => self.fields(operation, inner, captured)?,
                    _ => return Err(self.malformed(operation, "option tag is neither 0x00 nor 0xff")),
                },
                Entrypoint => {
                    let tag = self.byte(operation, "truncated entrypoint")?;
                    if tag == 0xff {
                        let len = self.byte(operation, "truncated entrypoint")? as usize;
                        let start = self.at;
                        self.skip(operation, len, "truncated entrypoint name")?;
                        // octez decodes a name to the reserved entrypoint it spells.
                        let name = &self.data[start..self.at];
                        captured.entrypoint =
                            PSEUDO_OPERATIONS.iter().find(|(_, n)| n.as_bytes() == name).map(|(t, _)| *t);
                    } else {
                        captured.entrypoint = Some(tag);
                    }
                }
                Vote => {
                    let vote = self.byte(operation, "truncated ballot")?;
                    if usize::from(vote) >= BALLOTS.len() {
                        return Err(self.malformed(operation, "a vote is 0 (yay), 1 (nay) or 2 (pass)"));
                    }
                    captured.vote = Some(vote);
                }
            }
        }
        Ok(())
    }

    fn pkh(&mut self, operation: &'static str) -> Result<(), ParseError> {
        let tag = self.byte(operation, "truncated key hash")?;
        if tag > 3 {
            return Err(self.malformed(operation, "unknown key hash curve"));
        }
        self.skip(operation, 20, "truncated key hash")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signatory's "block ok" fixture: level 20878, round 0
    /// (<https://github.com/ecadlabs/signatory/blob/v1.4.0/pkg/signatory/signatory_test.go>).
    const BLOCK: &str = "11ed9d217c0000518e0118425847ac255b6d7c30ce8fec23b8eaf13b741de7d18509ac2ef83c741209630000000061947af504805682ea5d089837764b3efcc90b91db24294ff9ddb66019f332ccba17cc4741000000210000000102000000040000518e0000000000000004ffffffff0000000400000000eb1320a71e8bf8b0162a3ec315461e9153a38b70d00d5dde2df85eb92748f8d068d776e356683a9e23c186ccfb72ddc6c9857bb1704487972922e7c89a7121f800000000a8e1dd3c000000000000";
    /// Signatory's "endorsement ok" fixture: slot 18, level 20877, round 0.
    const ATTESTATION: &str = "13ed9d217cfc81eee810737b04018acef4db74d056b79edc43e6be46cae7e4c217c22a82f01500120000518d0000000003e7ea1f67dbb0bb6cfa372cb092cd9cf786b4f1b5e5139da95b915fb95e698d";

    #[test]
    fn blocks_and_attestations_from_signatory_fixtures() {
        let block = parse(&hex::decode(BLOCK).unwrap()).unwrap();
        assert_eq!(block.kind, RequestKind::Block);
        assert_eq!(block.watermark, Some(Watermark { chain_id: [0xed, 0x9d, 0x21, 0x7c], level: 20878, round: 0 }));
        let attestation = parse(&hex::decode(ATTESTATION).unwrap()).unwrap();
        assert_eq!(attestation.kind, RequestKind::Attestation);
        assert_eq!(attestation.watermark.unwrap().level, 20877);
    }

    #[test]
    fn block_round_is_the_last_fitness_element() {
        let mut data = hex::decode(BLOCK).unwrap();
        // Fitness starts at 87; its last element is at 87 + 33 - 4.
        data[87 + 33 - 4..87 + 33].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(parse(&data).unwrap().watermark.unwrap().round, 7);
        data[86] = 200; // fitness length past the end
        assert!(matches!(parse(&data), Err(ParseError::BadBlock(_))));
    }

    #[test]
    fn consensus_tags_choose_the_offsets() {
        let mut data = hex::decode(ATTESTATION).unwrap();
        data[37] = 41; // BLS attestation: no slot, level right after the tag
        let bls = parse(&data).unwrap().watermark.unwrap();
        assert_eq!((bls.level, bls.round), (u32::from_be_bytes([0x00, 0x12, 0x00, 0x00]), 0x518d0000));
        data[37] = 20; // a preattestation tag under the attestation magic
        assert_eq!(
            parse(&data).unwrap_err(),
            ParseError::UnknownConsensusTag { kind: RequestKind::Attestation, tag: 20 }
        );
        data[0] = 0x12;
        assert_eq!(parse(&data).unwrap().kind, RequestKind::Preattestation);
        data[37] = 22;
        assert!(parse(&data).unwrap_err().to_string().contains("unknown consensus operation tag 22"));
    }

    /// Signatory's auth_test.go generic operation: a transaction.
    const TRANSACTION: &str = "03a11f5f176e553a11cf184bb2b15f09f55dfc5dcb2d26d79bf5dd099d074d5f5d6c0079cae4c9a1885f17d3995619bf28636c4394458b820af19172c35000904e0000712c4c4270d9e7f512115310d8ec6acfcd878bef00";

    #[test]
    fn generic_operations_are_listed_by_kind() {
        let request = parse(&hex::decode(TRANSACTION).unwrap()).unwrap();
        assert_eq!(request.kind, RequestKind::Generic);
        assert_eq!(request.operations, vec!["transaction"]);
        assert_eq!(request.watermark, None);
    }

    /// 0x03 ‖ branch ‖ ballot (tag 6): source tz1, period 7, a proposal hash, then the vote.
    fn ballot(vote: u8) -> Vec<u8> {
        let mut data = vec![0x03];
        data.extend([0xa1; 32]);
        data.push(6);
        data.push(0);
        data.extend(source()[1..].iter());
        data.extend(7u32.to_be_bytes());
        data.extend([0x5e; 32]);
        data.push(vote);
        data
    }

    #[test]
    fn ballots_are_named_with_their_vote() {
        for (vote, name) in [(0, "ballot:yay"), (1, "ballot:nay"), (2, "ballot:pass")] {
            assert_eq!(parse(&ballot(vote)).unwrap().operations, vec![name]);
        }
        assert!(matches!(
            parse(&ballot(3)),
            Err(ParseError::Malformed { operation: "ballot", reason: "a vote is 0 (yay), 1 (nay) or 2 (pass)", .. })
        ));
        assert!(matches!(parse(&ballot(0)[..91]), Err(ParseError::Malformed { operation: "ballot", .. })));
    }

    #[test]
    fn emmy_watermarks_are_refused_by_name() {
        // An Emmy block and endorsement, long enough for the old parser's level offsets.
        for (magic, what) in [(0x01, "block"), (0x02, "endorsement")] {
            let mut data = vec![magic, 0x7a, 0x06, 0xa7, 0x70];
            data.extend([0u8; 60]);
            let error = parse(&data).unwrap_err();
            assert_eq!(error, ParseError::Retired(magic, what));
            assert!(error.to_string().contains("retired since protocol Ithaca"), "{error}");
        }
    }

    /// The fixture's source (tz1Wk1Wdczh5BzyZ1uz2DW9xdFg9B5cFuGFm) and destination.
    fn source() -> [u8; 21] {
        hex::decode(TRANSACTION).unwrap()[34..55].try_into().unwrap()
    }

    /// The fixture sent to `destination` with `entrypoint` (its encoding: a reserved tag, or 0xff,
    /// a length and a name) and a Unit argument.
    fn transaction_to(destination: &[u8], entrypoint: &[u8]) -> Vec<u8> {
        let mut data = hex::decode(TRANSACTION).unwrap();
        // The fixture ends with its destination (22 bytes) and "no parameters" (0x00).
        data.truncate(data.len() - 23);
        data.extend_from_slice(destination);
        data.push(0xff);
        data.extend_from_slice(entrypoint);
        data.extend_from_slice(&[0, 0, 0, 2, 0x03, 0x0b]);
        data
    }

    fn implicit(pkh: &[u8; 21]) -> Vec<u8> {
        [&[0x00][..], pkh].concat()
    }

    /// KT1Ni4pYV3UGWcDp7MgR5prgcD4NCK1MpXiR, binary (0x01 ‖ hash ‖ 0x00).
    const KT1: &str = "019af3138763ec09dde90926f5a6b60783a21607d500";

    #[test]
    fn staking_entrypoints_to_oneself_are_staking_operations() {
        let me = implicit(&source());
        for (tag, name) in PSEUDO_OPERATIONS {
            assert_eq!(parse(&transaction_to(&me, &[*tag])).unwrap().operations, vec![*name]);
        }
        // octez reads a name that spells a reserved entrypoint as that entrypoint.
        let named = [&[0xff, 5][..], b"stake"].concat();
        assert_eq!(parse(&transaction_to(&me, &named)).unwrap().operations, vec!["stake"]);
    }

    #[test]
    fn staking_entrypoints_to_another_account_are_refused_by_name() {
        let other = hex::decode("0000712c4c4270d9e7f512115310d8ec6acfcd878bef").unwrap();
        let refused = parse(&transaction_to(&other, &[6])).unwrap_err();
        assert_eq!(
            refused,
            ParseError::ReservedEntrypointToOther {
                entrypoint: "stake",
                destination: "tz1VxS7ff4YnZRs8b4mMP4WaMVpoQjuo1rjf".into()
            }
        );
        let message = refused.to_string();
        assert!(message.starts_with("transaction to the reserved entrypoint stake of another account"), "{message}");
        assert!(message.contains("not a staking operation; refused"), "{message}");

        let contract = hex::decode(KT1).unwrap();
        let refused = parse(&transaction_to(&contract, &[7])).unwrap_err();
        assert_eq!(
            refused,
            ParseError::ReservedEntrypointToOther {
                entrypoint: "unstake",
                destination: "KT1Ni4pYV3UGWcDp7MgR5prgcD4NCK1MpXiR".into()
            }
        );
        let named = [&[0xff, 23][..], b"set_delegate_parameters"].concat();
        assert!(matches!(
            parse(&transaction_to(&contract, &named)),
            Err(ParseError::ReservedEntrypointToOther { entrypoint: "set_delegate_parameters", .. })
        ));
        // The same 20-byte hash under another curve is another account.
        let mut other_curve = implicit(&source());
        other_curve[1] = 1;
        assert!(matches!(
            parse(&transaction_to(&other_curve, &[8])),
            Err(ParseError::ReservedEntrypointToOther { entrypoint: "finalize_unstake", .. })
        ));
    }

    #[test]
    fn other_entrypoints_to_other_accounts_stay_transactions() {
        let contract = hex::decode(KT1).unwrap();
        let named = [&[0xff, 8][..], b"transfer"].concat();
        assert_eq!(parse(&transaction_to(&contract, &named)).unwrap().operations, vec!["transaction"]);
        let other = hex::decode("0000712c4c4270d9e7f512115310d8ec6acfcd878bef").unwrap();
        assert_eq!(parse(&transaction_to(&other, &[0])).unwrap().operations, vec!["transaction"]);
        assert_eq!(parse(&transaction_to(&other, &named)).unwrap().operations, vec!["transaction"]);
    }

    #[test]
    fn unknown_and_malformed_input_is_refused_by_name() {
        assert_eq!(parse(&[]), Err(ParseError::Empty));
        assert_eq!(parse(&[0x04, 1, 2]), Err(ParseError::UnknownMagic(0x04)));
        assert!(matches!(parse(&[0x11, 0, 0]), Err(ParseError::TooShort { .. })));
        let mut unknown = hex::decode(TRANSACTION).unwrap();
        unknown[33] = 250;
        assert_eq!(parse(&unknown), Err(ParseError::UnknownOperation { tag: 250, at: 33 }));
        let truncated = hex::decode(&TRANSACTION[..TRANSACTION.len() - 10]).unwrap();
        assert!(matches!(parse(&truncated), Err(ParseError::Malformed { operation: "transaction", .. })));
        assert_eq!(parse(&[0x03; 33]), Err(ParseError::NoOperations));
        assert_eq!(parse(&[0x05, 1, 2]).unwrap().kind, RequestKind::Michelson);
    }

    #[test]
    fn every_table_entry_is_unique() {
        let mut tags: Vec<u8> = OPERATIONS.iter().map(|o| o.tag).collect();
        tags.dedup();
        assert_eq!(tags.len(), OPERATIONS.len());
        let names: std::collections::BTreeSet<&str> = operation_names().collect();
        assert_eq!(names.len(), OPERATIONS.len() + PSEUDO_OPERATIONS.len() + BALLOTS.len());
    }
}
