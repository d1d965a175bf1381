/**
 * The secrets a runtime presents (instance tokens, boot credentials): 32 random bytes,
 * base64url, shown once and stored only as a SHA-256 hash, so the database never holds one
 * that would let a reader act as a runtime.
 */
import { createHash, randomBytes } from 'node:crypto';

export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}
