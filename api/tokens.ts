/**
 * Instance tokens: 32 random bytes, base64url, shown once; stored only as a
 * SHA-256 hash plus an 8-character prefix. Lookups go by hash, and the stored hash is compared
 * in constant time, so a guess learns nothing from timing.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../db/store.js';

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** The instance token of an `Authorization: Bearer …` header; undefined when absent or malformed. */
export function bearerToken(authorization: string | undefined): string | undefined {
  return /^Bearer ([A-Za-z0-9_-]{16,128})$/.exec(authorization ?? '')?.[1];
}

/** Mints a token for a workspace that has no live one; null when it already has one. */
export async function mintTokenIfNone(store: Store, workspaceId: string): Promise<string | null> {
  const token = randomBytes(32).toString('base64url');
  return (await store.addTokenIfNone(workspaceId, hashToken(token), token.slice(0, 8))) ? token : null;
}

export type AuthOutcome = { ok: true } | { ok: false; status: 401 | 403; reason: string };

/** Which runtime call is being authorized: only a register may bootstrap. */
export type RuntimeCall = 'register' | 'heartbeat';

/**
 * The runtime's bearer rule: a workspace with no live token is in bootstrap, and only a
 * *register* passes then (it mints the workspace's token); every other call needs a live token
 * of this workspace. A token of another workspace is 403; none, an unknown or a revoked one is
 * 401. Store errors propagate (the caller answers 503: fail closed).
 */
export async function authorizeRuntime(
  store: Store,
  workspaceId: string,
  call: RuntimeCall,
  authorization: string | undefined,
  /** The workspace's live tokens, as the caller already read them with its status. */
  liveTokens: number,
): Promise<AuthOutcome> {
  const bootstrap: AuthOutcome =
    call === 'register'
      ? { ok: true }
      : { ok: false, status: 401, reason: 'the workspace has no live token: register first' };
  if (liveTokens === 0) return bootstrap;
  const bearer = bearerToken(authorization);
  if (bearer === undefined) return { ok: false, status: 401, reason: 'missing or malformed bearer token' };
  const hash = hashToken(bearer);
  const owner = await store.tokenOwner(hash);
  if (owner === null || !timingSafeEqual(owner.tokenHash, hash)) {
    // Revoked in between (e.g. by dead detection): the workspace is back in bootstrap.
    if ((await store.liveTokenCount(workspaceId)) === 0) return bootstrap;
    return { ok: false, status: 401, reason: 'invalid token' };
  }
  if (owner.workspaceId !== workspaceId)
    return { ok: false, status: 403, reason: 'token belongs to another workspace' };
  return { ok: true };
}

/** Constant-time comparison of the admin token. */
export function isAdmin(authorization: string | undefined, adminToken: string): boolean {
  const bearer = /^Bearer (.+)$/.exec(authorization ?? '')?.[1] ?? '';
  return timingSafeEqual(hashToken(bearer), hashToken(adminToken));
}
