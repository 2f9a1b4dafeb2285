// SHA-256 of parts and Ed25519 signatures of manifests (the contract of cuekit.transmit.signing):
// manifest.sig = {"alg": "Ed25519", "public_key": "<64 hex>", "signature": "<128 hex>"} over the exact bytes
// of manifest.json as served. WebCrypto where the page is a secure context (https, localhost, 127.0.0.1);
// SHA-256 also has a plain-JavaScript fallback for plain-http pages on other hosts.

export class SignatureError extends Error {
  constructor(message) {
    super(message);
    this.name = "SignatureError";
  }
}

const subtle = globalThis.crypto && globalThis.crypto.subtle ? globalThis.crypto.subtle : null;

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text, bytes, what) {
  if (typeof text !== "string" || !new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`).test(text)) {
    throw new SignatureError(`${what} must be ${bytes * 2} hexadecimal characters`);
  }
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

// ---- SHA-256 (FIPS 180-4), used only without WebCrypto ----
const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2,
]);

export function sha256Js(data) {
  const n = data.length;
  const total = Math.ceil((n + 9) / 64) * 64;
  const buf = new Uint8Array(total);
  buf.set(data);
  buf[n] = 0x80;
  const dv = new DataView(buf.buffer);
  dv.setUint32(total - 8, Math.floor(n / 0x20000000), false);
  dv.setUint32(total - 4, (n * 8) >>> 0, false);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, r) => (x >>> r) | (x << (32 - r));
  for (let off = 0; off < total; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = dv.getUint32(off + i * 4, false);
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15], b = w[i - 2];
      const s0 = rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3);
      const s1 = rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  const out = new Uint8Array(32);
  const odv = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) odv.setUint32(i * 4, h[i], false);
  return out;
}

export async function sha256Hex(data) {
  if (subtle) return toHex(new Uint8Array(await subtle.digest("SHA-256", data)));
  return toHex(sha256Js(data));
}

// Verify manifest.sig (its text) over the manifest's bytes against the trusted key (64 hex).
// Throws SignatureError with the reason; returns nothing when the signature holds.
export async function verifyManifestSignature(manifestBytes, sigText, trustedHex) {
  const trusted = trustedHex.trim().toLowerCase();
  fromHex(trusted, 32, "the trusted public key");
  if (sigText === null) {
    throw new SignatureError("the package has no manifest.sig, but a trusted public key was given: refused, nothing was downloaded");
  }
  let sig;
  try {
    sig = JSON.parse(sigText);
  } catch (e) {
    throw new SignatureError("manifest.sig is not valid JSON: refused, nothing was downloaded");
  }
  if (!sig || sig.alg !== "Ed25519") {
    throw new SignatureError(`manifest.sig names algorithm ${JSON.stringify(sig && sig.alg)}, not Ed25519: refused`);
  }
  const signerHex = String(sig.public_key || "").toLowerCase();
  if (signerHex !== trusted) {
    throw new SignatureError(`manifest.sig is signed by key ${signerHex.slice(0, 16)}..., not the trusted key ${trusted.slice(0, 16)}...: refused, nothing was downloaded`);
  }
  const signature = fromHex(String(sig.signature || ""), 64, "manifest.sig's signature");
  if (!subtle) {
    throw new SignatureError("checking a signature needs WebCrypto, which browsers give only to secure pages (https, localhost or 127.0.0.1): open the page there");
  }
  let key;
  try {
    key = await subtle.importKey("raw", fromHex(trusted, 32, "the trusted public key"), { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    throw new SignatureError(`this browser cannot check Ed25519 signatures (${e.message}); use a current Chromium, Firefox or Safari`);
  }
  const ok = await subtle.verify({ name: "Ed25519" }, key, signature, manifestBytes);
  if (!ok) {
    throw new SignatureError("manifest.sig does not verify: the manifest was altered or the signature is bad. Refused, nothing was downloaded");
  }
}
