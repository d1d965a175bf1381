/**
 * The URL guard: every URL the service takes from someone untrusted (a runtime's agent URL, a
 * plugin source's git host) passes here once, before it is stored or dialled. It parses with the
 * WHATWG URL parser and refuses what other parsers (curl under git, Python, Go) could read
 * differently: backslashes, user-info, control characters, whitespace, malformed
 * percent-escapes. It resolves the host and checks every address against the IANA
 * special-purpose registries below. What it approves, it returns re-serialised from the parsed
 * form with the addresses it checked: that form is what is stored, shown and dialled, and
 * whoever dials it must pin one of those addresses (DNS may answer differently the next time).
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

/** Loopback and private ranges are refused unless allowed (local boxes live on loopback). */
export interface UrlPolicy {
  allowLoopback: boolean;
  allowPrivate: boolean;
}

/** Every address a host name resolves to; rejects with the resolver's error (its `code` tells transient from permanent). */
export type ResolveHost = (host: string) => Promise<string[]>;

export interface CheckedUrl {
  /** The URL re-serialised from its parsed form: the only spelling stored, shown or dialled. */
  href: string;
  protocol: string;
  /** The host as parsed (lower case, punycode, IPv4 in dotted decimal; IPv6 without brackets). */
  hostname: string;
  /** The port dialled: the URL's, else the scheme's default. */
  port: number;
  /** Whether the host is an address literal: nothing to resolve, nothing to pin. */
  literal: boolean;
  /** Every address the host resolved to, each checked; a dialler pins one of these. */
  addresses: string[];
}

export type UrlVerdict =
  | { ok: true; url: CheckedUrl }
  /** `transient`: the resolver could not answer now (a retry may pass); every other refusal is permanent. */
  | { ok: false; reason: string; transient: boolean };

export interface CheckOptions {
  /** Schemes accepted (with the colon); http: and https: by default. */
  protocols?: readonly string[];
  /** The longest normalised form accepted (re-serialising may lengthen a URL). */
  maxLength?: number;
  resolveHost?: ResolveHost;
}

const HTTP = ['http:', 'https:'] as const;
const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443 };

/** Checks `raw`; see the module comment for the rules. */
export async function checkUrl(raw: string, policy: UrlPolicy, options: CheckOptions = {}): Promise<UrlVerdict> {
  const refuse = (reason: string): UrlVerdict => ({ ok: false, reason, transient: false });
  const lexical = lexicalProblem(raw);
  if (lexical !== null) return refuse(lexical);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return refuse('is not a valid URL');
  }
  const protocols = options.protocols ?? HTTP;
  if (!protocols.includes(url.protocol))
    return refuse(`must be an ${protocols.map((p) => p.slice(0, -1)).join(' or ')} URL`);
  if (url.username !== '' || url.password !== '') return refuse('must not carry user-info (user@ or user:password@)');
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (hostname === '') return refuse('has no host');
  const href = url.href;
  if (options.maxLength !== undefined && href.length > options.maxLength)
    return refuse(`is ${href.length} characters once normalised, over the limit of ${options.maxLength}`);

  const literal = isIP(hostname) !== 0;
  let addresses: string[];
  if (literal) {
    addresses = [hostname];
  } else {
    try {
      addresses = await (options.resolveHost ?? resolveWithSystem)(hostname);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const transient = code !== 'ENOTFOUND' && code !== 'ENODATA';
      return {
        ok: false,
        reason: `host ${hostname} does not resolve${transient ? ' (resolver unavailable)' : ''}`,
        transient,
      };
    }
    if (addresses.length === 0) return refuse(`host ${hostname} does not resolve`);
  }
  for (const address of addresses) {
    const problem = addressProblem(address, policy);
    if (problem !== null) return refuse(`resolves to ${problem}`);
  }
  const port = url.port === '' ? (DEFAULT_PORTS[url.protocol] ?? 0) : Number(url.port);
  return { ok: true, url: { href, protocol: url.protocol, hostname, port, literal, addresses } };
}

/** The system resolver (what git's curl and Node's sockets use), every address it gives. */
async function resolveWithSystem(host: string): Promise<string[]> {
  return (await lookup(host, { all: true, verbatim: true })).map((entry) => entry.address);
}

/**
 * What in the raw text another URL parser could read differently from WHATWG, or null. The
 * user-info check reads the raw authority, because WHATWG drops an empty one (`http://@host`).
 */
export function lexicalProblem(raw: string): string | null {
  if (/[\p{Cc}\p{Cs}\s]/u.test(raw)) return 'must not contain control characters, whitespace or lone surrogates';
  if (raw.includes('\\')) return 'must not contain a backslash';
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) return 'has a malformed percent-escape (% must be followed by two hex digits)';
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(raw);
  if (scheme === null) return 'must start with <scheme>://';
  const authority = raw.slice(scheme[0].length).split(/[/?#]/, 1)[0] ?? '';
  if (authority.includes('@')) return 'must not carry user-info (user@ or user:password@)';
  return null;
}

// ---------------------------------------------------------------------------------------------
// The address rules. An address is judged by the most specific entry that holds it:
//   global    reachable beyond its own network: accepted;
//   loopback  accepted only with `allowLoopback`;
//   private   accepted only with `allowPrivate`;
//   ipv4      an IPv6 form of an IPv4 address: that IPv4 address is judged instead;
//   refused   anything else.
// An IPv4 address in no special-purpose block is global; an IPv6 one is global only inside
// 2000::/3, the one block IANA allocates as global unicast (the rest is reserved by the IETF).

type Reach = 'global' | 'loopback' | 'private' | 'ipv4' | 'refused';
interface Entry {
  block: string;
  name: string;
  reach: Reach;
}

/**
 * The IANA IPv4 Special-Purpose Address Registry (RFC 6890, RFC 8190), in full: the entries
 * the registry marks globally reachable are `global`, the rest refused (loopback and
 * private-use configurable). Multicast is in its own registry (RFC 5771) and refused too.
 */
const IPV4_REGISTRY: Entry[] = [
  { block: '0.0.0.0/0', name: 'not special-purpose', reach: 'global' },
  { block: '0.0.0.0/8', name: '"This network" (RFC 791)', reach: 'refused' },
  { block: '0.0.0.0/32', name: '"This host on this network" (RFC 1122)', reach: 'refused' },
  { block: '10.0.0.0/8', name: 'Private-Use (RFC 1918)', reach: 'private' },
  { block: '100.64.0.0/10', name: 'Shared Address Space (RFC 6598)', reach: 'refused' },
  { block: '127.0.0.0/8', name: 'Loopback (RFC 1122)', reach: 'loopback' },
  { block: '169.254.0.0/16', name: 'Link Local, cloud metadata among it (RFC 3927)', reach: 'refused' },
  { block: '172.16.0.0/12', name: 'Private-Use (RFC 1918)', reach: 'private' },
  { block: '192.0.0.0/24', name: 'IETF Protocol Assignments (RFC 6890)', reach: 'refused' },
  { block: '192.0.0.0/29', name: 'IPv4 Service Continuity Prefix (RFC 7335)', reach: 'refused' },
  { block: '192.0.0.8/32', name: 'IPv4 dummy address (RFC 7600)', reach: 'refused' },
  { block: '192.0.0.9/32', name: 'Port Control Protocol Anycast (RFC 7723)', reach: 'global' },
  { block: '192.0.0.10/32', name: 'Traversal Using Relays around NAT Anycast (RFC 8155)', reach: 'global' },
  { block: '192.0.0.170/32', name: 'NAT64/DNS64 Discovery (RFC 8880, RFC 7050)', reach: 'refused' },
  { block: '192.0.0.171/32', name: 'NAT64/DNS64 Discovery (RFC 8880, RFC 7050)', reach: 'refused' },
  { block: '192.0.2.0/24', name: 'Documentation, TEST-NET-1 (RFC 5737)', reach: 'refused' },
  { block: '192.31.196.0/24', name: 'AS112-v4 (RFC 7535)', reach: 'global' },
  { block: '192.52.193.0/24', name: 'AMT (RFC 7450)', reach: 'global' },
  { block: '192.88.99.0/24', name: 'Deprecated 6to4 Relay Anycast (RFC 7526)', reach: 'refused' },
  { block: '192.168.0.0/16', name: 'Private-Use (RFC 1918)', reach: 'private' },
  { block: '192.175.48.0/24', name: 'Direct Delegation AS112 Service (RFC 7534)', reach: 'global' },
  { block: '198.18.0.0/15', name: 'Benchmarking (RFC 2544)', reach: 'refused' },
  { block: '198.51.100.0/24', name: 'Documentation, TEST-NET-2 (RFC 5737)', reach: 'refused' },
  { block: '203.0.113.0/24', name: 'Documentation, TEST-NET-3 (RFC 5737)', reach: 'refused' },
  { block: '224.0.0.0/4', name: 'Multicast (RFC 5771)', reach: 'refused' },
  { block: '240.0.0.0/4', name: 'Reserved (RFC 1112)', reach: 'refused' },
  { block: '255.255.255.255/32', name: 'Limited Broadcast (RFC 8190, RFC 919)', reach: 'refused' },
];

/**
 * The IANA IPv6 Special-Purpose Address Registry (RFC 6890, RFC 8190), in full, with the
 * blocks of the IPv6 address space registry outside it that a host may still name: the whole
 * space outside 2000::/3, IPv4-compatible addresses, site-local, multicast, and the cloud
 * metadata address inside the unique-local block (refused even when private ranges are allowed).
 * IPv4-mapped and the well-known NAT64 prefix reach the IPv4 address they embed.
 */
const IPV6_REGISTRY: Entry[] = [
  { block: '::/0', name: 'outside 2000::/3, the global unicast space (RFC 4291)', reach: 'refused' },
  { block: '2000::/3', name: 'Global Unicast (RFC 4291)', reach: 'global' },
  { block: '::/128', name: 'Unspecified Address (RFC 4291)', reach: 'refused' },
  { block: '::1/128', name: 'Loopback Address (RFC 4291)', reach: 'loopback' },
  { block: '::/96', name: 'IPv4-compatible Address, deprecated (RFC 4291)', reach: 'refused' },
  { block: '::ffff:0:0/96', name: 'IPv4-mapped Address (RFC 4291)', reach: 'ipv4' },
  { block: '64:ff9b::/96', name: 'IPv4-IPv6 Translation (RFC 6052)', reach: 'ipv4' },
  { block: '64:ff9b:1::/48', name: 'IPv4-IPv6 Translation, local use (RFC 8215)', reach: 'refused' },
  { block: '100::/64', name: 'Discard-Only Address Block (RFC 6666)', reach: 'refused' },
  { block: '2001::/23', name: 'IETF Protocol Assignments (RFC 2928)', reach: 'refused' },
  { block: '2001::/32', name: 'TEREDO (RFC 4380, RFC 8190)', reach: 'refused' },
  { block: '2001:1::1/128', name: 'Port Control Protocol Anycast (RFC 7723)', reach: 'global' },
  { block: '2001:1::2/128', name: 'Traversal Using Relays around NAT Anycast (RFC 8155)', reach: 'global' },
  { block: '2001:2::/48', name: 'Benchmarking (RFC 5180)', reach: 'refused' },
  { block: '2001:3::/32', name: 'AMT (RFC 7450)', reach: 'global' },
  { block: '2001:4:112::/48', name: 'AS112-v6 (RFC 7535)', reach: 'global' },
  { block: '2001:10::/28', name: 'Deprecated, previously ORCHID (RFC 4843)', reach: 'refused' },
  { block: '2001:20::/28', name: 'ORCHIDv2 (RFC 7343)', reach: 'global' },
  { block: '2001:30::/28', name: 'Drone Remote ID Protocol Entity Tags (RFC 9374)', reach: 'global' },
  { block: '2001:db8::/32', name: 'Documentation (RFC 3849)', reach: 'refused' },
  { block: '2002::/16', name: '6to4 (RFC 3056)', reach: 'refused' },
  { block: '2620:4f:8000::/48', name: 'Direct Delegation AS112 Service (RFC 7534)', reach: 'global' },
  { block: '3fff::/20', name: 'Documentation (RFC 9637)', reach: 'refused' },
  { block: '5f00::/16', name: 'Segment Routing (SRv6) SIDs (RFC 9602)', reach: 'refused' },
  { block: 'fc00::/7', name: 'Unique-Local (RFC 4193)', reach: 'private' },
  { block: 'fd00:ec2::254/128', name: 'cloud instance metadata (IPv6)', reach: 'refused' },
  { block: 'fe80::/10', name: 'Link-Local Unicast (RFC 4291)', reach: 'refused' },
  { block: 'fec0::/10', name: 'Site-Local, deprecated (RFC 3879)', reach: 'refused' },
  { block: 'ff00::/8', name: 'Multicast (RFC 4291)', reach: 'refused' },
];

interface Block extends Entry {
  prefix: bigint;
  length: number;
}

function compile(entries: Entry[], bits: 32 | 128): Block[] {
  return entries
    .map((entry) => {
      const [address = '', length = ''] = entry.block.split('/');
      return { ...entry, prefix: toBigInt(address, bits), length: Number(length) };
    })
    .sort((a, b) => b.length - a.length);
}

const IPV4_BLOCKS = compile(IPV4_REGISTRY, 32);
const IPV6_BLOCKS = compile(IPV6_REGISTRY, 128);

/** The most specific block holding the address (sorted longest prefix first; each table has a /0). */
function classify(value: bigint, family: 4 | 6): Block {
  const [blocks, bits] = family === 4 ? [IPV4_BLOCKS, 32n] : [IPV6_BLOCKS, 128n];
  const block = blocks.find((b) => value >> (bits - BigInt(b.length)) === b.prefix >> (bits - BigInt(b.length)));
  if (block === undefined) throw new Error(`no /0 block in the IPv${family} table`);
  return block;
}

/** Why the address may not be dialled under the policy, or null when it may. */
export function addressProblem(address: string, policy: UrlPolicy): string | null {
  const plain = address.replace(/%.*$/, ''); // a zone index says which link, not which address
  const family = isIP(plain);
  if (family === 0) return `${address}, which is not an IP address`;
  let value = toBigInt(plain, family === 4 ? 32 : 128);
  let block = classify(value, family === 4 ? 4 : 6);
  let shown = address;
  if (block.reach === 'ipv4') {
    value &= 0xffffffffn;
    shown = `${address} (IPv4 ${fromBigInt4(value)})`;
    block = classify(value, 4);
  }
  const where = `${block.block} ${block.name}`;
  switch (block.reach) {
    case 'global':
      return null;
    case 'loopback':
      return policy.allowLoopback
        ? null
        : `loopback address ${shown} (${where}); allowed only with WL_ALLOW_LOOPBACK_URLS=true`;
    case 'private':
      return policy.allowPrivate
        ? null
        : `private address ${shown} (${where}); allowed only with WL_ALLOW_PRIVATE_URLS=true`;
    default:
      return `${shown}, in ${where}: not globally reachable`;
  }
}

/** An address (dotted IPv4, or IPv6 in any spelling Node accepts) as an unsigned integer. */
function toBigInt(address: string, bits: 32 | 128): bigint {
  if (bits === 32) return address.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const v4 = toBigInt(dotted.slice(1).join('.'), 32);
    text = `${text.slice(0, dotted.index)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const groups = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...new Array<string>(8 - front.length - back.length).fill('0'), ...back];
  return all.reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n);
}

function fromBigInt4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}
