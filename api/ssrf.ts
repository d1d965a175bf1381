/**
 * Agent URLs the platform will later call must not point into places a caller should not
 * reach through us: link-local and cloud metadata, multicast, reserved and unspecified
 * addresses, and loopback or private ranges unless configured (local boxes live on loopback).
 * DNS names are resolved and every address is checked.
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
always.addSubnet('192.0.2.0', 24); // TEST-NET-1
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
    const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
    const family = isIP(v4) === 6 ? 'ipv6' : 'ipv4';
    if (always.check(v4, family))
      return `resolves to ${address}, a link-local, metadata, multicast or reserved address`;
    if (!policy.allowLoopback && loopback.check(v4, family)) return `resolves to loopback address ${address}`;
    if (!policy.allowPrivate && privateRanges.check(v4, family)) return `resolves to private address ${address}`;
  }
  return null;
}
