/**
 * Instance tokens: 32 random bytes, base64url, shown once; stored only as a SHA-256 hash plus an
 * 8-character prefix (db/secrets.ts). Lookups go by hash, and the stored hash is compared in
 * constant time, so a guess learns nothing from timing.
 *
 * Boot credentials: while a workspace has no live token (after a dead verdict revoked them), a
 * register must carry the one-time credential its box was last started with (the restart
 * writes it into the box); the register it lets through consumes it and mints the new token.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Store, StoredToken } from '../db/store.js';
import { hashSecret, newSecret } from '../db/secrets.js';

/** The header a register carries the boot credential in. */
export const BOOT_CREDENTIAL_HEADER = 'x-boot-credential';

/** The instance token of an `Authorization: Bearer …` header; undefined when absent or malformed. */
export function bearerToken(authorization: string | undefined): string | undefined {
  return /^Bearer ([A-Za-z0-9_-]{16,128})$/.exec(authorization ?? '')?.[1];
}

/** The boot credential of an `X-Boot-Credential` header; undefined when absent or malformed. */
export function bootCredential(header: string | string[] | undefined): string | undefined {
  const value = typeof header === 'string' ? header.trim() : undefined;
  return value !== undefined && /^[A-Za-z0-9_-]{16,128}$/.test(value) ? value : undefined;
}

/** A new instance token: the secret, shown once, and what is stored of it. */
export function newInstanceToken(): { token: string; stored: StoredToken } {
  const token = newSecret();
  return { token, stored: { hash: hashSecret(token), prefix: token.slice(0, 8) } };
}

/** Mints a token for a workspace that has no live one; null when it already has one. */
export async function mintTokenIfNone(store: Store, workspaceId: string): Promise<string | null> {
  const { token, stored } = newInstanceToken();
  return (await store.addTokenIfNone(workspaceId, stored.hash, stored.prefix)) ? token : null;
}

/**
 * Mints a token by consuming the boot credential (by its hash) that authorized the register;
 * null when a concurrent register consumed it first, or a token became live meanwhile.
 */
export async function mintTokenWithBootCredential(
  store: Store,
  workspaceId: string,
  credentialHash: Buffer,
): Promise<string | null> {
  const { token, stored } = newInstanceToken();
  const minted = await store.addTokenWithBootCredential(workspaceId, credentialHash, stored.hash, stored.prefix);
  return minted ? token : null;
}

export type AuthOutcome =
  | {
      ok: true;
      /** The hash of the boot credential that let a register in (the workspace had no live token). */
      bootCredential?: Buffer;
      /** A register let in without any credential (ApiSettings.bootstrapWithoutCredential). */
      trustOnFirstUse?: true;
    }
  | { ok: false; status: 401 | 403; reason: string };

/** Which runtime call is being authorized: only a register may bootstrap. */
export type RuntimeCall = 'register' | 'heartbeat';

/** What a runtime call presents: its `Authorization` header and, for a register, its boot credential. */
export interface RuntimeCredentials {
  authorization: string | undefined;
  bootCredential?: string | string[] | undefined;
}

export const NO_BOOT_CREDENTIAL =
  'the workspace has no live token: register with the boot credential its box was started with ' +
  '(header X-Boot-Credential, from the file boot-credential in the box)';
export const WRONG_BOOT_CREDENTIAL =
  'the workspace has no live token, and the boot credential is wrong or already used: register with the one ' +
  'its box was last started with (header X-Boot-Credential, from the file boot-credential in the box)';

/**
 * The runtime's bearer rule: a workspace with no live token is in bootstrap, and only a
 * *register* carrying the workspace's pending boot credential passes then (it consumes the
 * credential and mints the workspace's token); every other call needs a live token of this
 * workspace. A token of another workspace is 403; none, an unknown or a revoked one is 401.
 * Store errors propagate (the caller answers 503: fail closed).
 */
export async function authorizeRuntime(
  store: Store,
  workspaceId: string,
  call: RuntimeCall,
  credentials: RuntimeCredentials,
  /** The workspace's live tokens, as the caller already read them with its status. */
  liveTokens: number,
  /** A register without a boot credential passes in bootstrap (ApiSettings.bootstrapWithoutCredential). */
  bootstrapWithoutCredential = false,
): Promise<AuthOutcome> {
  const bootstrap = (): Promise<AuthOutcome> => {
    if (call !== 'register')
      return Promise.resolve({ ok: false, status: 401, reason: 'the workspace has no live token: register first' });
    const header = credentials.bootCredential;
    if (bootstrapWithoutCredential && (header === undefined || header === ''))
      return Promise.resolve({ ok: true, trustOnFirstUse: true });
    return checkBootCredential(store, workspaceId, header);
  };
  if (liveTokens === 0) return bootstrap();
  const bearer = bearerToken(credentials.authorization);
  if (bearer === undefined) return { ok: false, status: 401, reason: 'missing or malformed bearer token' };
  const hash = hashSecret(bearer);
  const owner = await store.tokenOwner(hash);
  if (owner === null || !timingSafeEqual(owner.tokenHash, hash)) {
    // Revoked in between (e.g. by dead detection): the workspace is back in bootstrap.
    if ((await store.liveTokenCount(workspaceId)) === 0) return bootstrap();
    return { ok: false, status: 401, reason: 'invalid token' };
  }
  if (owner.workspaceId !== workspaceId)
    return { ok: false, status: 403, reason: 'token belongs to another workspace' };
  return { ok: true };
}

/**
 * Whether the header carries the workspace's pending boot credential, compared by hash in
 * constant time. It is consumed only when the register mints (mintTokenWithBootCredential), so
 * a register that fails on the way (Temporal unavailable) can be retried with it.
 */
async function checkBootCredential(
  store: Store,
  workspaceId: string,
  header: string | string[] | undefined,
): Promise<AuthOutcome> {
  if (header === undefined || header === '') return { ok: false, status: 401, reason: NO_BOOT_CREDENTIAL };
  const credential = bootCredential(header);
  if (credential === undefined) return { ok: false, status: 401, reason: WRONG_BOOT_CREDENTIAL };
  const hash = hashSecret(credential);
  const stored = await store.bootCredentialHash(workspaceId);
  if (stored === null || !timingSafeEqual(stored, hash))
    return { ok: false, status: 401, reason: WRONG_BOOT_CREDENTIAL };
  return { ok: true, bootCredential: hash };
}

/** Constant-time comparison of the admin token. */
export function isAdmin(authorization: string | undefined, adminToken: string): boolean {
  const bearer = /^Bearer (.+)$/.exec(authorization ?? '')?.[1] ?? '';
  return timingSafeEqual(hashSecret(bearer), hashSecret(adminToken));
}
