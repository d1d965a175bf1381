/**
 * Agent URLs the platform will later call must not point into places a caller should not
 * reach through us: link-local and cloud metadata, multicast, reserved, benchmarking, protocol
 * assignment and unspecified addresses, and loopback or private ranges unless configured (local
 * boxes live on loopback). DNS names are resolved and every address is checked, in every
 * spelling IPv6 allows: IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses are
 * checked as the IPv4 address they reach; IPv4-compatible ones (::a.b.c.d, deprecated) are refused.
 */
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';

export interface UrlPolicy {
  allowLoopback: boolean;
  allowPrivate: boolean;
}

const always = new BlockList();
always.addSubnet('0.0.0.0', 8);
always.addSubnet('169.254.0.0', 16); // link-local, including 169.254.169.254 metadata
always.addSubnet('100.64.0.0', 10); // CGNAT
always.addSubnet('192.0.0.0', 24); // IETF protocol assignments
always.addSubnet('192.0.2.0', 24); // TEST-NET-1
always.addSubnet('198.18.0.0', 15); // benchmarking
always.addSubnet('198.51.100.0', 24); // TEST-NET-2
always.addSubnet('203.0.113.0', 24); // TEST-NET-3
always.addSubnet('224.0.0.0', 4); // multicast
always.addSubnet('240.0.0.0', 4); // reserved, broadcast
always.addAddress('::', 'ipv6');
always.addSubnet('fe80::', 10, 'ipv6'); // link-local
always.addSubnet('ff00::', 8, 'ipv6'); // multicast
always.addAddress('fd00:ec2::254', 'ipv6'); // metadata

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8);
loopback.addAddress('::1', 'ipv6');

const privateRanges = new BlockList();
privateRanges.addSubnet('10.0.0.0', 8);
privateRanges.addSubnet('172.16.0.0', 12);
privateRanges.addSubnet('192.168.0.0', 16);
privateRanges.addSubnet('fc00::', 7, 'ipv6');

/** Null when the URL is acceptable, else the reason it is not. */
export async function unsafeUrlReason(raw: string, policy: UrlPolicy): Promise<string | null> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'is not a valid URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http(s) URL';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  let addresses: string[];
  if (isIP(host)) {
    addresses = [host];
  } else {
    try {
      addresses = (await lookup(host, { all: true })).map((entry) => entry.address);
    } catch {
      return `host ${host} does not resolve`;
    }
  }
  for (const address of addresses) {
    const groups = isIP(address) === 6 ? ipv6Groups(address) : null;
    // ::a.b.c.d (IPv4-compatible, deprecated): refused in every case but :: and ::1 themselves.
    if (groups?.slice(0, 6).every((g) => g === 0) && (groups[6] !== 0 || (groups[7] ?? 0) > 1))
      return `resolves to ${address}, a deprecated IPv4-compatible IPv6 address`;
    // 64:ff9b::a.b.c.d (NAT64) reaches the IPv4 address it embeds: that address is checked.
    const nat64 = groups?.[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((g) => g === 0);
    const v4 = nat64 ? embeddedIpv4(groups) : address;
    const family = isIP(v4) === 6 ? 'ipv6' : 'ipv4';
    if (always.check(v4, family))
      return `resolves to ${address}, a link-local, metadata, multicast or reserved address`;
    if (!policy.allowLoopback && loopback.check(v4, family)) return `resolves to loopback address ${address}`;
    if (!policy.allowPrivate && privateRanges.check(v4, family)) return `resolves to private address ${address}`;
  }
  return null;
}

/** The eight 16-bit groups of an IPv6 address (with `::` and a dotted IPv4 tail expanded). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const front = parse(head);
  const back = tail === undefined ? [] : parse(tail);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}

/** The IPv4 address in the last 32 bits of an IPv6 address's groups. */
function embeddedIpv4(groups: number[]): string {
  const [hi = 0, lo = 0] = groups.slice(6);
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join('.');
}
