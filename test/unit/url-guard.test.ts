/**
 * The URL guard on its own: the parser tricks it refuses, every block of the IANA
 * special-purpose registries, names resolved with every address checked, and, with generated
 * URLs (fast-check), that whatever it approves dials the host it checked and nothing blocked.
 */
import fc from 'fast-check';
import { BlockList, isIP } from 'node:net';
import { describe, expect, it } from 'vitest';
import { checkUrl, type CheckedUrl, type ResolveHost, type UrlPolicy } from '../../url-guard.js';

const strict: UrlPolicy = { allowLoopback: false, allowPrivate: false };
const local: UrlPolicy = { allowLoopback: true, allowPrivate: false };
const internal: UrlPolicy = { allowLoopback: false, allowPrivate: true };

/** A resolver that knows only the names given. */
function resolver(names: Record<string, string[]>): ResolveHost {
  return (host) => {
    const addresses = names[host];
    if (addresses !== undefined) return Promise.resolve(addresses);
    return Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }));
  };
}

async function approved(raw: string, policy: UrlPolicy = strict, resolveHost?: ResolveHost): Promise<CheckedUrl> {
  const verdict = await checkUrl(raw, policy, resolveHost ? { resolveHost } : {});
  if (!verdict.ok) throw new Error(`${raw} refused: ${verdict.reason}`);
  return verdict.url;
}

async function refusal(raw: string, policy: UrlPolicy = strict, resolveHost?: ResolveHost): Promise<string> {
  const verdict = await checkUrl(raw, policy, resolveHost ? { resolveHost } : {});
  if (verdict.ok) throw new Error(`${raw} approved as ${verdict.url.href}`);
  return verdict.reason;
}

describe('what another parser could read differently is refused', () => {
  it.each([
    ['http://93.184.215.14\\@169.254.169.254/latest/', /backslash/],
    ['http://allowed.example.com\\@127.0.0.1:9/r.git', /backslash/],
    ['http://93.184.216.34/a\\b', /backslash/],
    ['http://user@93.184.216.34/', /user-info/],
    ['http://user:pass@93.184.216.34/', /user-info/],
    ['http://@93.184.216.34/', /user-info/],
    ['http://:@93.184.216.34/', /user-info/],
    ['http://93.184.216.34%40169.254.169.254/', /not a valid URL|resolves to/],
    ['http://93.184.216.34\t@169.254.169.254/', /control characters/],
    ['http://93.184.216.34\n/', /control characters/],
    ['http://93.184.216.34 /', /whitespace/],
    ['http://93.184.216.34/\u0000', /control characters/],
    ['http://93.184.216.34/\u2028', /whitespace/],
    ['http://93.184.216.34/\ud800', /lone surrogates/],
    ['http://93.184.216.34/%zz', /malformed percent-escape/],
    ['http://93.184.216.34/%4', /malformed percent-escape/],
    ['http:93.184.216.34/', /<scheme>:\/\//],
    ['http:/93.184.216.34/', /<scheme>:\/\//],
    ['ftp://93.184.216.34/', /http or https/],
    ['file:///etc/passwd', /http or https/],
    ['javascript://93.184.216.34/%0aalert(1)', /http or https/],
  ])('%j', async (raw, reason) => {
    expect(await refusal(raw)).toMatch(reason);
  });
});

describe('the registries', () => {
  // One address inside each block, written out by hand (not read from the guard's table).
  it.each([
    ['0.0.0.0', '"This host on this network"'],
    ['0.1.2.3', '"This network"'],
    ['100.64.0.1', 'Shared Address Space'],
    ['100.100.100.200', 'Shared Address Space'],
    ['169.254.169.254', 'Link Local'],
    ['192.0.0.1', 'IPv4 Service Continuity Prefix'],
    ['192.0.0.8', 'IPv4 dummy address'],
    ['192.0.0.100', 'IETF Protocol Assignments'],
    ['192.0.0.170', 'NAT64/DNS64 Discovery'],
    ['192.0.0.171', 'NAT64/DNS64 Discovery'],
    ['192.0.2.1', 'TEST-NET-1'],
    ['192.88.99.1', '6to4 Relay Anycast'],
    ['198.18.0.1', 'Benchmarking'],
    ['198.19.255.255', 'Benchmarking'],
    ['198.51.100.1', 'TEST-NET-2'],
    ['203.0.113.1', 'TEST-NET-3'],
    ['224.0.0.1', 'Multicast'],
    ['239.255.255.250', 'Multicast'],
    ['240.0.0.1', 'Reserved'],
    ['255.255.255.255', 'Limited Broadcast'],
    ['[::]', 'Unspecified Address'],
    ['[::127.0.0.1]', 'IPv4-compatible'],
    ['[::10.0.0.1]', 'IPv4-compatible'],
    ['[::ffff:169.254.169.254]', 'Link Local'],
    ['[::ffff:a9fe:a9fe]', 'Link Local'],
    ['[64:ff9b::a9fe:a9fe]', 'Link Local'],
    ['[64:ff9b::192.0.2.1]', 'TEST-NET-1'],
    ['[64:ff9b:1::5db8:d822]', 'local use (RFC 8215)'],
    ['[100::1]', 'Discard-Only'],
    ['[100::ffff:ffff:ffff:ffff]', 'Discard-Only'],
    ['[2001::1]', 'TEREDO'],
    ['[2001:0:4136:e378:8000:63bf:3fff:fdd2]', 'TEREDO'],
    ['[2001:2::1]', 'Benchmarking'],
    ['[2001:10::1]', 'ORCHID'],
    ['[2001:100::1]', 'IETF Protocol Assignments'],
    ['[2001:db8::1]', 'Documentation (RFC 3849)'],
    ['[2002:a9fe:a9fe::1]', '6to4'],
    ['[3fff::1]', 'Documentation (RFC 9637)'],
    ['[5f00::1]', 'SRv6'],
    ['[fd00:ec2::254]', 'metadata'],
    ['[fe80::1]', 'Link-Local Unicast'],
    ['[fec0::1]', 'Site-Local'],
    ['[ff02::1]', 'Multicast'],
    ['[4000::1]', 'outside 2000::/3'],
    ['[::ffff:0:a9fe:a9fe]', 'outside 2000::/3'],
  ])('refuses %s (%s) whatever the policy', async (host, name) => {
    for (const policy of [strict, { allowLoopback: true, allowPrivate: true }])
      expect(await refusal(`http://${host}/`, policy)).toContain(name);
  });

  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['[::1]', 'loopback'],
    ['[::ffff:127.0.0.1]', 'loopback'],
    ['[64:ff9b::7f00:1]', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['[fd12:3456::1]', 'private'],
    ['[::ffff:10.0.0.1]', 'private'],
  ])('%s is refused unless %s addresses are allowed', async (host, kind) => {
    const allowing = kind === 'loopback' ? local : internal;
    const other = kind === 'loopback' ? internal : local;
    expect(await refusal(`http://${host}/`)).toContain(`${kind} address`);
    expect(await refusal(`http://${host}/`, other)).toContain(`${kind} address`);
    expect((await approved(`http://${host}/`, allowing)).addresses).toHaveLength(1);
  });

  it.each([
    ['93.184.216.34'],
    ['8.8.8.8'],
    ['172.32.0.1'],
    ['192.0.0.9'], // Port Control Protocol Anycast: globally reachable
    ['192.0.0.10'], // TURN Anycast: globally reachable
    ['192.31.196.1'], // AS112-v4
    ['192.52.193.1'], // AMT
    ['192.175.48.1'], // AS112 direct delegation
    ['[2606:2800:220:1:248:1893:25c8:1946]'],
    ['[64:ff9b::5db8:d822]'], // NAT64 of a public address
    ['[::ffff:93.184.216.34]'],
    ['[2001:1::1]'],
    ['[2001:3::1]'],
    ['[2001:4:112::1]'],
    ['[2001:20::1]'],
    ['[2001:30::1]'],
    ['[2620:4f:8000::1]'],
  ])('accepts the globally reachable %s', async (host) => {
    expect((await approved(`http://${host}/`)).literal).toBe(true);
  });
});

describe('what it approves', () => {
  it.each([
    ['HTTP://0x5DB8D822:8000/a/./b/../agent', 'http://93.184.216.34:8000/a/agent', '93.184.216.34', 8000],
    ['http://1572395042/', 'http://93.184.216.34/', '93.184.216.34', 80],
    ['http://0135.0270.0330.042/', 'http://93.184.216.34/', '93.184.216.34', 80],
    ['https://93.184.216.34:443/x?y#z', 'https://93.184.216.34/x?y#z', '93.184.216.34', 443],
    [
      'http://[2606:2800:0220:0001:0248:1893:25C8:1946]:81',
      'http://[2606:2800:220:1:248:1893:25c8:1946]:81/',
      '2606:2800:220:1:248:1893:25c8:1946',
      81,
    ],
    ['http://[::ffff:93.184.216.34]/', 'http://[::ffff:5db8:d822]/', '::ffff:5db8:d822', 80],
    ['http://１２７.０.０.１/', null, null, null],
  ])('%s is stored as %s', async (raw, href, hostname, port) => {
    if (href === null) return expect(await refusal(raw)).toContain('loopback');
    const url = await approved(raw);
    expect(url).toMatchObject({ href, hostname, port, literal: true, addresses: [hostname] });
  });

  it('a name: resolved, every address checked, the addresses returned for the dialler to pin', async () => {
    const names = resolver({
      'agent.example': ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
      'rebind.example': ['93.184.216.34', '169.254.169.254'],
      'mapped.example': ['::ffff:127.0.0.1'],
    });
    expect(await approved('https://Agent.Example:8443/a', strict, names)).toEqual({
      href: 'https://agent.example:8443/a',
      protocol: 'https:',
      hostname: 'agent.example',
      port: 8443,
      literal: false,
      addresses: ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
    });
    expect(await refusal('http://rebind.example/', strict, names)).toContain('169.254.169.254');
    expect(await refusal('http://mapped.example/', strict, names)).toContain('loopback');
    expect(await refusal('http://missing.example/', strict, names)).toContain('does not resolve');
  });

  it('a resolver that cannot answer now is a transient refusal; one that says no such name is not', async () => {
    const failing =
      (code: string): ResolveHost =>
      () =>
        Promise.reject(Object.assign(new Error(code), { code }));
    expect(await checkUrl('http://a.example/', strict, { resolveHost: failing('EAI_AGAIN') })).toMatchObject({
      ok: false,
      transient: true,
    });
    expect(await checkUrl('http://a.example/', strict, { resolveHost: failing('ENOTFOUND') })).toMatchObject({
      ok: false,
      transient: false,
    });
  });

  it('the normalised form must fit the length limit', async () => {
    const raw = `http://93.184.216.34/${'é'.repeat(400)}`;
    expect(raw.length).toBeLessThan(2048);
    expect((await checkUrl(raw, strict, { maxLength: 2048 })).ok).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties. The oracle is written independently of the guard's table: Node's BlockList over
// the ranges that must never be dialled under the strict policy.

// Two lists: a BlockList matches IPv4 rules against IPv4-mapped IPv6 addresses and back.
const neverDialled = new BlockList();
const neverDialled6 = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 29],
  ['192.0.0.8', 32],
  ['192.0.0.11', 32],
  ['192.0.0.12', 30],
  ['192.0.0.16', 28],
  ['192.0.0.32', 27],
  ['192.0.0.64', 26],
  ['192.0.0.128', 25],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 3], // multicast, reserved, broadcast
] as const)
  neverDialled.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 3], // outside 2000::/3 (mapped and NAT64 are judged by their IPv4 below)
  ['4000::', 2],
  ['8000::', 1],
  ['2001::', 23], // IETF Protocol Assignments, but for the globally reachable ones below
  ['2001:db8::', 32],
  ['2002::', 16],
  ['3fff::', 20],
] as const)
  neverDialled6.addSubnet(net, bits, 'ipv6');

const ietfGlobal = new BlockList();
ietfGlobal.addAddress('2001:1::1', 'ipv6');
ietfGlobal.addAddress('2001:1::2', 'ipv6');
ietfGlobal.addSubnet('2001:3::', 32, 'ipv6');
ietfGlobal.addSubnet('2001:4:112::', 48, 'ipv6');
ietfGlobal.addSubnet('2001:20::', 28, 'ipv6');
ietfGlobal.addSubnet('2001:30::', 28, 'ipv6');

/** Whether dialling the address could reach a range the strict policy refuses. */
function blocked(address: string): boolean {
  if (isIP(address) === 4) return neverDialled.check(address, 'ipv4');
  // IPv4-mapped and NAT64 reach the IPv4 address in their last 32 bits.
  const embedded = /^(?:::ffff|64:ff9b:):([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (embedded) {
    const value = (parseInt(embedded[1] ?? '0', 16) << 16) | parseInt(embedded[2] ?? '0', 16);
    return blocked([24, 16, 8, 0].map((shift) => (value >>> shift) & 0xff).join('.'));
  }
  return neverDialled6.check(address, 'ipv6') && !ietfGlobal.check(address, 'ipv6');
}

/** RFC 3986 appendix B: the authority as a parser that follows the RFC (curl, Go, Python) reads it. */
function rfc3986Authority(href: string): string | undefined {
  return /^(([^:/?#]+):)?(\/\/([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))?/.exec(href)?.[4];
}

/** An IPv6 address in 2000::/3, where the global unicast addresses are. */
const globalIpv6 = fc
  .tuple(
    fc.integer({ min: 0x2000, max: 0x3fff }),
    fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 7, maxLength: 7 }),
  )
  .map(([first, rest]) => [first, ...rest].map((group) => group.toString(16)).join(':'));

const addressPool = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  globalIpv6,
  fc.constantFrom(
    '93.184.216.34',
    '169.254.169.254',
    '127.0.0.1',
    '10.0.0.1',
    '::1',
    '::ffff:127.0.0.1',
    '64:ff9b::a9fe:a9fe',
    '64:ff9b::5db8:d822',
    '2002::1',
    '2001:db8::5',
    'fd00:ec2::254',
    '2606:2800:220:1:248:1893:25c8:1946',
  ),
);

const hostText = fc.oneof(
  fc.ipV4(),
  fc.ipV4Extended(), // decimal, octal, hex and short forms
  fc.oneof(fc.ipV6(), globalIpv6).map((v6) => `[${v6}]`),
  fc.constantFrom(
    '93.184.216.34',
    '169.254.169.254',
    '2852039166',
    '0xa9fea9fe',
    '0251.0376.0251.0376',
    '[::ffff:a9fe:a9fe]',
    '[::ffff:93.184.216.34]',
    '[64:ff9b::93.184.216.34]',
  ),
  fc.domain(),
  fc.domain().map((name) => name.replace(/[a-z]/, (c) => `%${c.charCodeAt(0).toString(16)}`)),
  fc.domain().map((name) => name.toUpperCase()),
);

/** Mostly nothing, so that many URLs are clean enough to approve; else a character parsers disagree on. */
const trick = fc.oneof(
  { arbitrary: fc.constant(''), weight: 8 },
  {
    arbitrary: fc.constantFrom(
      '\\',
      '@',
      '\\@',
      ':@',
      '%40',
      '\t',
      ' ',
      '%',
      '%2F',
      '#',
      '?',
      '/',
      '\\\\',
      '\u0000',
      '\u3002',
    ),
    weight: 4,
  },
);

const generatedUrl = fc
  .record({
    scheme: fc.constantFrom('http', 'https', 'HTTP', 'Https', 'ftp', 'file', 'git'),
    userinfo: fc.oneof(
      { arbitrary: fc.constant(null), weight: 6 },
      { arbitrary: fc.webAuthority({ withUserInfo: true }).map((a) => a.split('@')[0] ?? ''), weight: 1 },
      { arbitrary: trick, weight: 1 },
    ),
    host: hostText,
    trick,
    decoy: hostText,
    port: fc.option(fc.oneof(fc.integer({ min: 0, max: 70_000 }).map(String), fc.constantFrom('', '08', '0x50'))),
    path: fc.oneof(
      { arbitrary: fc.webPath(), weight: 6 },
      { arbitrary: fc.string({ unit: 'binary', maxLength: 12 }), weight: 1 },
    ),
  })
  .map(({ scheme, userinfo, host, trick: t, decoy, port, path }) => {
    const authority = `${userinfo === null ? '' : `${userinfo}@`}${host}${t}${t === '' ? '' : decoy}${port === null ? '' : `:${port}`}`;
    return `${scheme}://${authority}${path.startsWith('/') || path === '' ? path : `/${path}`}`;
  });

describe('properties (fast-check)', () => {
  it('whatever the URL, what the guard approves dials the host it checked, and nothing blocked', async () => {
    await fc.assert(
      fc.asyncProperty(
        generatedUrl,
        fc.func(fc.array(addressPool, { minLength: 1, maxLength: 3 })),
        async (raw, dns) => {
          const resolveHost: ResolveHost = (host) => Promise.resolve(dns(host));
          const verdict = await checkUrl(raw, strict, { resolveHost });
          if (!verdict.ok) return;
          const url = verdict.url;
          // The stored form is plain: nothing a second parser could read another way.
          expect(url.href).not.toMatch(/[\\\s\p{Cc}]/u);
          const authority = rfc3986Authority(url.href) ?? '';
          expect(authority).not.toContain('@');
          // WHATWG and an RFC 3986 parser agree on the host and port it dials.
          const shownHost = url.hostname.includes(':') ? `[${url.hostname}]` : url.hostname;
          const defaultPort = url.protocol === 'https:' ? 443 : 80;
          expect(authority).toBe(url.port === defaultPort ? shownHost : `${shownHost}:${url.port}`);
          const again = new URL(url.href);
          expect(again.href).toBe(url.href);
          expect(again.hostname.replace(/^\[|\]$/g, '')).toBe(url.hostname);
          // The addresses checked are the ones that host gives, and none is blocked.
          expect(url.addresses).toEqual(url.literal ? [url.hostname] : dns(url.hostname));
          for (const address of url.addresses) expect(blocked(address), address).toBe(false);
          // Checking the stored form again approves the same thing.
          expect(await checkUrl(url.href, strict, { resolveHost })).toEqual(verdict);
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('an address literal is approved exactly when the independent oracle says it is not blocked', async () => {
    await fc.assert(
      fc.asyncProperty(addressPool, async (address) => {
        const verdict = await checkUrl(`http://${address.includes(':') ? `[${address}]` : address}/`, strict);
        const normalised = verdict.ok ? verdict.url.hostname : address;
        expect(verdict.ok, `${address}: ${verdict.ok ? 'approved' : verdict.reason}`).toBe(!blocked(normalised));
      }),
      { numRuns: 2_000 },
    );
  });
});
