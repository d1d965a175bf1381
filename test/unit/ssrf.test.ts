/**
 * The agent-URL check against addresses a caller must not reach through us, in every spelling
 * an IPv6 literal allows (IPv4-mapped, IPv4-compatible, NAT64).
 */
import { describe, expect, it } from 'vitest';
import { unsafeUrlReason } from '../../api/ssrf.js';

const strict = { allowLoopback: false, allowPrivate: false };
const local = { allowLoopback: true, allowPrivate: false };

describe('unsafeUrlReason', () => {
  it.each([
    ['http://[::127.0.0.1]/', 'IPv4-compatible loopback'],
    ['http://[::ffff:127.0.0.1]/', 'IPv4-mapped loopback'],
    ['http://[64:ff9b::127.0.0.1]/', 'NAT64 of loopback'],
    ['http://[64:ff9b::a9fe:a9fe]/', 'NAT64 of the metadata address'],
    ['http://[::ffff:169.254.169.254]/', 'IPv4-mapped metadata address'],
    ['http://198.18.0.1/', 'benchmarking range 198.18.0.0/15'],
    ['http://198.19.255.1/', 'benchmarking range 198.18.0.0/15'],
    ['http://192.0.0.8/', 'IETF protocol assignments 192.0.0.0/24'],
    ['http://[::10.0.0.1]/', 'IPv4-compatible private'],
    ['http://127.0.0.1:8000/', 'loopback'],
    ['http://[::1]/', 'IPv6 loopback'],
  ])('refuses %s (%s)', async (url) => {
    expect(await unsafeUrlReason(url, strict)).not.toBeNull();
  });

  it.each([
    ['http://93.184.216.34/'],
    ['http://[2606:2800:220:1:248:1893:25c8:1946]/'],
    ['http://[64:ff9b::5db8:d822]/'],
  ])('accepts the public address %s', async (url) => {
    expect(await unsafeUrlReason(url, strict)).toBeNull();
  });

  it('loopback is accepted when allowed, in every spelling but the deprecated IPv4-compatible one', async () => {
    expect(await unsafeUrlReason('http://127.0.0.1:8000/', local)).toBeNull();
    expect(await unsafeUrlReason('http://[::1]/', local)).toBeNull();
    expect(await unsafeUrlReason('http://[::ffff:127.0.0.1]/', local)).toBeNull();
    expect(await unsafeUrlReason('http://[::127.0.0.1]/', local)).not.toBeNull();
  });
});
