// Opaque, stateless tokens for links in emails (unsubscribe, click tracking, update-card), the
// browser billing-status token and the dashboard session cookie.
//
// Format: base64url(version byte 0x01 ‖ nonce (12) ‖ AES-256-GCM(JSON payload) ‖ tag (16)).
// Links travel through proxies, logs and browser history, so the payload is encrypted, not only
// signed: nothing in a token is readable without the secret. The kind ('unsubscribe', 'click',
// …) is the additional authenticated data, so a token of one kind never opens as another.
// Keys are derived from the secret with HKDF (one for encryption, one for the nonce), so the
// secret itself never keys two algorithms.
//
// The nonce is synthetic (HMAC of kind and payload, as in SIV), not random: the email sender
// re-renders a batch from its stored inputs when it re-sends it under the same provider
// idempotency key, and the provider refuses a re-send whose bytes differ. Equal payloads give
// equal tokens, which reveals nothing (the same link for the same message); different payloads
// never share a nonce (short of an HMAC collision), which is what GCM needs.
//
// Legacy tokens: until 2026-11 links were base64url(JSON).base64url(HMAC-SHA256(secret,
// kind.body)) — signed but readable (the unsubscribe token held the recipient's address). Such
// links sit in emails already delivered and must keep working for years, so verifyToken accepts
// them when the caller asks for it (unsubscribe, click, update-card links only; never sessions or
// billing-status tokens). They are never issued any more.
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';

const VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Longer than any token we issue (a click token holds a URL of up to 2 KB). */
const MAX_TOKEN_CHARS = 4096;

// KeyObjects, not Buffers: createCipheriv and createHmac turn a Buffer key into a KeyObject on
// every call, and on Node 24 that check alone (isKeyObject / isCryptoKey on a Buffer) cost more
// than the encryption: 36–44 µs a token with Buffer keys, 8–9 µs with KeyObjects (same bytes
// out). The sender signs several tokens per email: it was ~13 % of the service's CPU in the
// stripe-pipeline benchmark.
interface TokenKeys {
  encryption: KeyObject;
  nonce: KeyObject;
}

function keysOf(secret: string): TokenKeys {
  const derive = (info: string) => createSecretKey(Buffer.from(hkdfSync('sha256', secret, 'lifeline-link-tokens', info, 32)));
  return { encryption: derive('v1 aes-256-gcm'), nonce: derive('v1 synthetic nonce') };
}

const aadOf = (kind: string) => Buffer.from(`lifeline-token\0v${VERSION}\0${kind}`);

export interface VerifyOptions {
  /** also accept the old signed-but-readable format (links in emails already sent) */
  acceptLegacy?: boolean;
}

/**
 * Tokens under one secret, its keys derived once: deriving them is about half the cost of a
 * token, and the email sender makes several per email (hold one per sender, not per call).
 */
export interface TokenCodec {
  /** An opaque token for `payload`, usable only as a token of `kind`. */
  sign(kind: string, payload: Record<string, unknown>): string;
  /** The payload, or null when the token is malformed, tampered with, or of another kind. */
  verify<T extends Record<string, unknown>>(kind: string, token: string, options?: VerifyOptions): T | null;
}

export function tokenCodec(secret: string): TokenCodec {
  const keys = keysOf(secret);
  return {
    sign: (kind, payload) => seal(keys, kind, payload),
    verify: (kind, token, options = {}) => open(keys, secret, kind, token, options),
  };
}

/** An opaque token for `payload`, usable only as a token of `kind`. */
export function signToken(secret: string, kind: string, payload: Record<string, unknown>): string {
  return seal(keysOf(secret), kind, payload);
}

/** The payload, or null when the token is malformed, tampered with, or of another kind. */
export function verifyToken<T extends Record<string, unknown>>(secret: string, kind: string, token: string, options: VerifyOptions = {}): T | null {
  return open<T>(keysOf(secret), secret, kind, token, options);
}

function seal(keys: TokenKeys, kind: string, payload: Record<string, unknown>): string {
  const plaintext = Buffer.from(JSON.stringify(payload), 'utf8');
  const nonce = createHmac('sha256', keys.nonce).update(aadOf(kind)).update(plaintext).digest().subarray(0, NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', keys.encryption, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aadOf(kind));
  const sealed = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.of(VERSION), nonce, sealed, cipher.getAuthTag()]).toString('base64url');
}

function asObject<T>(json: string): T | null {
  try {
    const value = JSON.parse(json) as unknown;
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as T) : null;
  } catch {
    return null;
  }
}

function open<T>(keys: TokenKeys, secret: string, kind: string, token: string, options: VerifyOptions): T | null {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_CHARS) return null;
  if (token.includes('.')) return options.acceptLegacy ? verifyLegacyToken<T>(secret, kind, token) : null;
  if (!/^[A-Za-z0-9_-]+$/.test(token)) return null;
  const raw = Buffer.from(token, 'base64url');
  // One spelling per token: base64url's spare low bits in the last character would otherwise
  // let a changed character decode to the same bytes.
  if (raw.toString('base64url') !== token) return null;
  if (raw.length < 1 + NONCE_BYTES + TAG_BYTES || raw[0] !== VERSION) return null;
  const nonce = raw.subarray(1, 1 + NONCE_BYTES);
  const tag = raw.subarray(raw.length - TAG_BYTES);
  const sealed = raw.subarray(1 + NONCE_BYTES, raw.length - TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', keys.encryption, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(aadOf(kind));
    decipher.setAuthTag(tag);
    const plaintext = Buffer.concat([decipher.update(sealed), decipher.final()]);
    return asObject<T>(plaintext.toString('utf8'));
  } catch {
    // wrong key, wrong kind, or any changed byte: GCM's tag does not verify
    return null;
  }
}

/** The pre-2026-11 format (see the header): verified, never issued. */
function verifyLegacyToken<T>(secret: string, kind: string, token: string): T | null {
  const dot = token.indexOf('.');
  if (dot <= 0 || dot !== token.lastIndexOf('.')) return null;
  const body = token.slice(0, dot);
  const given = Buffer.from(token.slice(dot + 1), 'base64url');
  const expected = createHmac('sha256', secret).update(`${kind}.${body}`).digest();
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  return asObject<T>(Buffer.from(body, 'base64url').toString('utf8'));
}
