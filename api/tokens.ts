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
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Store } from '../db/store.js';
import type { StoredToken } from '../db/tables/tokens.js';
import { hashSecret, newSecret } from '../db/secrets.js';
import { HttpError } from './errors.js';

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
  return (await store.tokens.addIfNone(workspaceId, stored.hash, stored.prefix)) ? token : null;
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
  const minted = await store.tokens.addWithBootCredential(workspaceId, credentialHash, stored.hash, stored.prefix);
  return minted ? token : null;
}

export type AuthOutcome =
  | {
      ok: true;
      /** The hash of the boot credential that let a register in (the workspace had no live token). */
      bootCredential?: Buffer;
      /**
       * A register with no credential at all (ApiSettings.bootstrapWithoutCredential): the caller
       * lets it in only while the workspace is live and has no live token.
       */
      trustOnFirstUse?: true;
    }
  | {
      ok: false;
      status: 401 | 403;
      reason: string;
      /** It carried a revoked token of this very workspace: it may learn that the workspace is removed. */
      revokedOwnToken?: true;
    };

/** Which runtime call is being authorized: only a register may bootstrap. */
export type RuntimeCall = 'register' | 'heartbeat';

/** What a runtime call presents: its `Authorization` header and, for a register, its boot credential. */
export interface RuntimeCredentials {
  authorization: string | undefined;
  bootCredential?: string | string[] | undefined;
}

/**
 * The one answer to a call whose credentials prove nothing (none, malformed, unknown, a revoked
 * token of another workspace): the same whether or not the workspace exists, and whatever state
 * it is in, so it tells an anonymous caller nothing.
 */
export const UNAUTHENTICATED =
  'missing or invalid credentials: a heartbeat needs the instance token (Authorization: Bearer); a register ' +
  'needs it, or while the workspace has no live token the boot credential its box was last started with ' +
  '(header X-Boot-Credential, from the file boot-credential in the box)';
export const REVOKED_TOKEN =
  'the instance token was revoked: register with the boot credential its box was last started with ' +
  '(header X-Boot-Credential, from the file boot-credential in the box)';
export const WRONG_BOOT_CREDENTIAL =
  'the boot credential is wrong or already used: register with the instance token, or while the workspace has ' +
  'no live token with the boot credential its box was last started with (header X-Boot-Credential, from the ' +
  'file boot-credential in the box)';
export const LIVE_TOKEN_EXISTS =
  'the workspace has a live instance token: register with it (Authorization: Bearer); the boot credential is ' +
  'for a workspace without one';

const unauthenticated: AuthOutcome = { ok: false, status: 401, reason: UNAUTHENTICATED };

/**
 * Who the runtime call is, decided from its credentials alone, before anything about the
 * workspace is read: an anonymous caller learns nothing about an id (unknown, removed, in
 * bootstrap or live all answer 401 alike), and a token of workspace A is 403 for any other id,
 * existing or not. In order:
 * - a live instance token: of this workspace, in; of another, 403;
 * - a register with a boot credential: in when it is the workspace's pending one (it is then
 *   consumed as the token is minted; the caller checks the workspace has no live token);
 * - a register with no credential, with ApiSettings.bootstrapWithoutCredential: trust on first
 *   use, which the caller grants only to a live workspace without a live token;
 * - a revoked token of this workspace: 401 saying to register with the boot credential (its
 *   holder had the workspace's token, so it may be told so, and that the workspace is removed);
 * - anything else: 401, one answer.
 * Store errors propagate (the caller answers 503: fail closed).
 */
export async function authorizeRuntime(
  store: Store,
  workspaceId: string,
  call: RuntimeCall,
  credentials: RuntimeCredentials,
  bootstrapWithoutCredential = false,
): Promise<AuthOutcome> {
  const bearer = bearerToken(credentials.authorization);
  let revokedOwnToken = false;
  if (bearer !== undefined) {
    const hash = hashSecret(bearer);
    const owner = await store.tokens.owner(hash);
    if (owner !== null && timingSafeEqual(owner.tokenHash, hash)) {
      if (!owner.revoked)
        return owner.workspaceId === workspaceId
          ? { ok: true }
          : { ok: false, status: 403, reason: 'token belongs to another workspace' };
      revokedOwnToken = owner.workspaceId === workspaceId;
    }
  }
  if (call === 'register') {
    const header = credentials.bootCredential;
    if (header !== undefined && header !== '') return checkBootCredential(store, workspaceId, header);
    if (bootstrapWithoutCredential) return { ok: true, trustOnFirstUse: true };
  }
  if (revokedOwnToken) return { ok: false, status: 401, reason: REVOKED_TOKEN, revokedOwnToken: true };
  return unauthenticated;
}

/**
 * Whether the header carries the workspace's pending boot credential: looked up by its hash,
 * then its workspace compared, so a wrong one is refused alike for any id. It is
 * consumed only when the register mints (mintTokenWithBootCredential), so a register that fails
 * on the way (Temporal unavailable) can be retried with it.
 */
async function checkBootCredential(store: Store, workspaceId: string, header: string | string[]): Promise<AuthOutcome> {
  const credential = bootCredential(header);
  if (credential === undefined) return { ok: false, status: 401, reason: WRONG_BOOT_CREDENTIAL };
  const hash = hashSecret(credential);
  const owners = await store.bootCredentials.owners(hash);
  const own = owners.some((owner) => owner.workspaceId === workspaceId && timingSafeEqual(owner.credentialHash, hash));
  return own ? { ok: true, bootCredential: hash } : { ok: false, status: 401, reason: WRONG_BOOT_CREDENTIAL };
}

/** Constant-time comparison of the admin token. */
export function isAdmin(authorization: string | undefined, adminToken: string): boolean {
  const bearer = /^Bearer (.+)$/.exec(authorization ?? '')?.[1] ?? '';
  return timingSafeEqual(hashSecret(bearer), hashSecret(adminToken));
}

/** An `onRequest` hook for a plugin whose every route takes the admin token: 401 without it. */
export function requireAdmin(adminToken: string) {
  return (request: FastifyRequest, _reply: FastifyReply, next: (err?: Error) => void): void => {
    next(isAdmin(request.headers.authorization, adminToken) ? undefined : new HttpError(401, 'admin token required'));
  };
}
