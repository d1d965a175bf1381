/**
 * The simulated runtime reads Retry-After as a real runtime should: delay-seconds or an HTTP
 * date; anything else leaves its own backoff in charge.
 */
import { describe, expect, it } from 'vitest';
import { retryAfterHeaderMs } from '../../simulator/runtime.js';

describe('retryAfterHeaderMs', () => {
  it('reads delay-seconds', () => {
    expect(retryAfterHeaderMs('1')).toBe(1_000);
    expect(retryAfterHeaderMs('5')).toBe(5_000);
    expect(retryAfterHeaderMs('0')).toBe(0);
  });

  it('reads an HTTP date as the time until it', () => {
    const inTen = new Date(Date.now() + 10_000).toUTCString();
    const ms = retryAfterHeaderMs(inTen) ?? -1;
    expect(ms).toBeGreaterThan(8_000);
    expect(ms).toBeLessThanOrEqual(10_000);
    expect(retryAfterHeaderMs(new Date(Date.now() - 60_000).toUTCString())).toBe(0);
  });

  it('absent or unreadable: none, so the runtime backs off on its own', () => {
    expect(retryAfterHeaderMs(null)).toBeUndefined();
    expect(retryAfterHeaderMs('')).toBeUndefined();
    expect(retryAfterHeaderMs('soon')).toBeUndefined();
    expect(retryAfterHeaderMs('-3')).toBeUndefined();
  });
});
