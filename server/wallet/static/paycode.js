// The farego payment code, version 1 (DESIGN.md, "Payment code, version 1"):
// the credential the server issues, the code the wallet makes offline, its
// rider signature and its text form "FG1:" + Base45 (RFC 9285).
// Integers are big-endian.

export const CREDENTIAL_SIZE = 124;
export const CODE_SIZE = 194;
export const TEXT_PREFIX = "FG1:";
export const MAX_COUNTER = 0xffff;
const SIGNED_SIZE = 130; // bytes 0..129 of a code are signed by the rider
const CODE_CONTEXT = new TextEncoder().encode("farego-code-v1");
const PROFILES = ["adult", "child", "senior", "student"];

// The RFC 9285 alphabet: the 45 characters of the QR alphanumeric mode.
const BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

/** base45Encode returns the RFC 9285 Base45 text of bytes. */
export function base45Encode(bytes) {
  let out = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const n = bytes[i] * 256 + bytes[i + 1];
    out += BASE45[n % 45] + BASE45[Math.floor(n / 45) % 45] + BASE45[Math.floor(n / 2025)];
  }
  if (bytes.length % 2 === 1) {
    const n = bytes[bytes.length - 1];
    out += BASE45[n % 45] + BASE45[Math.floor(n / 45)];
  }
  return out;
}

/** hexToBytes decodes lower- or upper-case hex; it throws on anything else. */
export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error("paycode: not hex");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

/** bytesToHex returns lower-case hex. */
export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * parseCredential reads the 124-byte credential. It checks the size, the
 * version and the profile; the issuer signature is the validator's to check.
 */
export function parseCredential(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== CREDENTIAL_SIZE) {
    throw new Error("paycode: a credential is 124 bytes");
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint8(0) !== 1) throw new Error("paycode: unsupported credential version");
  const profile = v.getUint8(25);
  return {
    keyId: v.getUint32(1),
    account: v.getBigUint64(5).toString(),
    serial: v.getUint32(13),
    notBefore: v.getUint32(17),
    notAfter: v.getUint32(21),
    profile: PROFILES[profile] ?? "reserved",
    riderKey: bytes.slice(28, 60),
  };
}

/**
 * codeBytes lays out an unsigned code: the credential, the code time (unix
 * seconds) and the counter, with room for the rider signature.
 */
export function codeBytes(credential, time, counter) {
  if (credential.length !== CREDENTIAL_SIZE) throw new Error("paycode: a credential is 124 bytes");
  if (!Number.isInteger(time) || time < 0 || time > 0xffffffff) throw new Error("paycode: code time out of range");
  if (!Number.isInteger(counter) || counter < 0 || counter > MAX_COUNTER) throw new Error("paycode: counter out of range");
  const out = new Uint8Array(CODE_SIZE);
  out.set(credential, 0);
  const v = new DataView(out.buffer);
  v.setUint32(CREDENTIAL_SIZE, time);
  v.setUint16(CREDENTIAL_SIZE + 4, counter);
  return out;
}

/** signedMessage is what the rider signs: "farego-code-v1" ‖ bytes 0..129. */
export function signedMessage(code) {
  const m = new Uint8Array(CODE_CONTEXT.length + SIGNED_SIZE);
  m.set(CODE_CONTEXT, 0);
  m.set(code.subarray(0, SIGNED_SIZE), CODE_CONTEXT.length);
  return m;
}

/**
 * makeCode builds and signs a code with the rider's Ed25519 private key (a
 * WebCrypto CryptoKey, which may be non-extractable). It resolves to the
 * 194 bytes and the text the QR holds.
 */
export async function makeCode(credential, privateKey, time, counter) {
  const code = codeBytes(credential, time, counter);
  const sig = await crypto.subtle.sign({ name: "Ed25519" }, privateKey, signedMessage(code));
  code.set(new Uint8Array(sig), SIGNED_SIZE);
  return { bytes: code, text: TEXT_PREFIX + base45Encode(code) };
}

/**
 * codeSignedByPass tells whether a code's rider signature verifies with
 * the rider key its own credential names: a validator refuses it
 * (bad_code_signature) otherwise.
 */
export async function codeSignedByPass(code) {
  const pub = await crypto.subtle.importKey("raw", code.subarray(28, 60), { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, pub, code.subarray(SIGNED_SIZE, CODE_SIZE), signedMessage(code));
}

/**
 * newRiderKey makes the rider's key pair: the private key cannot be
 * exported (it never leaves the browser); the public key is returned raw
 * (32 bytes) for the credential request.
 */
export async function newRiderKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: raw };
}
