// Plays the Atto node against a running sigil-signer: builds blocks, votes and challenges with
// the real @attocash/commons-core library, sends them as the node's remote-signer client does
// (raw Authorization header, JSON in and out), and checks every signature two ways: it must equal
// the library's own signature for the same key (Ed25519 is deterministic), and it must verify with
// Node's crypto over the library's hash. Prints one JSON summary line; exit 1 on any failure.
//
// env: SIGNER_URL, SIGNER_TOKEN, SIGNER_SECRET (hex, to compute the expected signatures),
//      ATTO_COMMONS (path to the @attocash/commons-core package directory)
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const lib = await import(pathToFileURL(join(process.env.ATTO_COMMONS, 'commons-commons-core.mjs')).href);
const { AttoBlock, AttoPrivateKey, AttoVote, AttoChallenge, AttoInstant, AttoSignature, AttoHash, toHex } = lib;

const base = process.env.SIGNER_URL.replace(/\/$/, '');
const token = process.env.SIGNER_TOKEN;
const signer = await AttoPrivateKey.Companion.parse(process.env.SIGNER_SECRET).toSigner();
const failures = [];
const counts = { blocks: 0, votes: 0, challenges: 0 };

const bytes = (int8) => Buffer.from(Uint8Array.from(int8, (v) => v & 0xff));
const hex = (n) => randomBytes(n).toString('hex').toUpperCase();
const u64 = () => BigInt('0x' + randomBytes(8).toString('hex')) % 18000000000000000001n;
const now = () => BigInt(Date.now());

async function call(method, path, body) {
  // What the node's Ktor client sends: JSON content type, Accept JSON, the token verbatim.
  const response = await fetch(`${base}/${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', Authorization: token },
    body,
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${method} /${path} -> ${response.status} ${text}`);
  if (!(response.headers.get('content-type') || '').startsWith('application/json')) {
    throw new Error(`/${path}: content-type ${response.headers.get('content-type')}`);
  }
  return JSON.parse(text);
}

const { publicKey } = await call('GET', 'public-keys');
if (publicKey !== signer.publicKey.toString()) failures.push(`public key ${publicKey} != library ${signer.publicKey}`);
if (publicKey !== publicKey.toUpperCase()) failures.push('public key not uppercase');
const verifier = createPublicKey({
  key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(publicKey, 'hex')]),
  format: 'der',
  type: 'spki',
});

function check(what, signatureHex, expected, digest) {
  const parsed = AttoSignature.Companion.parse(signatureHex); // the node parses the reply like this
  if (signatureHex !== signatureHex.toUpperCase()) failures.push(`${what}: signature not uppercase`);
  if (parsed.toString() !== expected.toString()) failures.push(`${what}: ${parsed} != library ${expected}`);
  if (!verify(null, digest, verifier, bytes(parsed.value))) failures.push(`${what}: does not verify`);
}

const common = () => `"network":"${['LIVE', 'BETA', 'DEV', 'LOCAL'][Math.floor(Math.random() * 4)]}","version":0,"algorithm":"V1","publicKey":"${publicKey}","balance":${u64()},"timestamp":${now()}`;
const templates = [
  () => `{"type":"OPEN",${common()},"sendHashAlgorithm":"V1","sendHash":"${hex(32)}","representativeAlgorithm":"V1","representativePublicKey":"${hex(32)}"}`,
  () => `{"type":"RECEIVE",${common()},"height":${2n + u64() % 1000000n},"previous":"${hex(32)}","sendHashAlgorithm":"V1","sendHash":"${hex(32)}"}`,
  () => `{"type":"SEND",${common()},"height":${2n + u64() % 1000000n},"previous":"${hex(32)}","receiverAlgorithm":"V1","receiverPublicKey":"${hex(32)}","amount":${u64()}}`,
  () => `{"type":"CHANGE",${common()},"height":${2n + u64() % 1000000n},"previous":"${hex(32)}","representativeAlgorithm":"V1","representativePublicKey":"${hex(32)}"}`,
];

for (let i = 0; i < 40; i++) {
  const block = AttoBlock.fromJson(templates[i % 4]());
  // block.toJson() is the node's serialization, address fields included.
  const { signature } = await call('POST', 'blocks', `{"target":${block.toJson()}}`);
  check(`block ${block.type.name}`, signature, await signer.signBlock(block), bytes(block.hash.value));
  counts.blocks++;
}

const sample = AttoBlock.fromJson(templates[1]());
const finalTimestamp = AttoVote.Companion.finalTimestamp;
for (let i = 0; i < 40; i++) {
  const timestamp = i % 4 === 0 ? finalTimestamp : AttoInstant.Companion.fromEpochMilliseconds(now() - BigInt(i));
  const blockHash = AttoHash.Companion.parse(hex(32));
  const vote = new AttoVote(sample.version, sample.algorithm, sample.publicKey, sample.algorithm, blockHash, timestamp);
  const body = `{"target":{"version":0,"algorithm":"V1","publicKey":"${publicKey}","blockAlgorithm":"V1","blockHash":"${blockHash}","timestamp":${timestamp.toEpochMilliseconds()}}}`;
  const { signature } = await call('POST', 'votes', body);
  check(vote.isFinal() ? 'final vote' : 'vote', signature, await signer.signVote(vote), bytes(vote.hash.value));
  counts.votes++;
}

for (let i = 0; i < 20; i++) {
  const raw = Buffer.concat([Buffer.from('wss://node-' + i + '.example.com:8082'), randomBytes(128)]);
  const challenge = new AttoChallenge(Int8Array.from(raw, (v) => (v << 24) >> 24));
  const timestamp = AttoInstant.Companion.fromEpochMilliseconds(now());
  const { signature } = await call('POST', 'challenges', `{"target":"${raw.toString('hex')}","timestamp":${timestamp.toEpochMilliseconds()}}`);
  const ts = Buffer.alloc(8);
  ts.writeBigInt64LE(timestamp.toEpochMilliseconds());
  const digest = AttoHash.Companion.hash(64, [bytes(lib.fromHexToByteArray(publicKey)), raw, ts].map((b) => Int8Array.from(b, (v) => (v << 24) >> 24)));
  check('challenge', signature, await signer.signChallenge(challenge, timestamp), bytes(digest.value));
  counts.challenges++;
}

console.log(JSON.stringify({ library: '@attocash/commons-core', ...counts, failures }));
process.exit(failures.length ? 1 : 0);
