/**
 * Plugin sources against real git: loopback HTTP servers (git's smart HTTP through
 * `git http-backend`) that record who reached them, and git+file repositories behind links.
 * Whatever a source says, git reaches only the address the guard approved, or nothing.
 */
import { mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PermanentPluginError } from '../../activities/plugins/errors.js';
import { parsePluginSource, type SourceSettings } from '../../activities/plugins/source.js';
import { stagePlugin, type StageSettings } from '../../activities/plugins/stage.js';
import { commitAll, createPluginRepo } from '../helpers/git.js';
import { startRecordingServer, type RecordingServer } from '../helpers/git-http.js';
import { fileScratchDir } from '../helpers/scratch.js';

const root = fileScratchDir('git-sources');
const served = join(root, 'served');
let allowed: RecordingServer;
let other: RecordingServer;
let redirecting: RecordingServer;

beforeAll(async () => {
  createPluginRepo(served, 'acme', 'tool');
  // The same repositories on both: reaching the other one would succeed, so only its log tells.
  allowed = await startRecordingServer({ host: '127.0.0.1', projectRoot: served });
  other = await startRecordingServer({ host: '127.0.0.2', projectRoot: served });
  redirecting = await startRecordingServer({
    host: '127.0.0.1',
    respond: (request, response) => {
      response.statusCode = 302;
      response.setHeader('location', `${other.origin}${request.url ?? '/'}`);
      response.end();
    },
  });
});

afterAll(async () => {
  await Promise.all([allowed.close(), other.close(), redirecting.close()]);
});

let caches = 0;
function settings(overrides: Partial<SourceSettings & StageSettings> = {}): SourceSettings & StageSettings {
  return {
    giteaBaseUrl: '',
    githubBaseUrl: '',
    allowUnpinned: false,
    sourceHosts: null,
    fileRoots: [join(root, 'roots')],
    urlPolicy: { allowLoopback: true, allowPrivate: false },
    cacheDir: join(root, `cache-${++caches}`),
    pluginsDir: join(root, 'plugins'),
    maxPluginBytes: 1024 * 1024,
    fetchTimeoutMs: 30_000,
    cacheMaxAgeMs: 3_600_000,
    ...overrides,
  };
}

/** Stages the source; the error when it is refused, null when it is staged. */
async function stage(
  raw: string,
  options: SourceSettings & StageSettings,
  resolveHost?: (host: string) => Promise<string[]>,
): Promise<unknown> {
  try {
    await stagePlugin(parsePluginSource(raw, options), options, resolveHost ? { resolveHost } : {});
    return null;
  } catch (err) {
    return err;
  }
}

describe('git reaches only the host the guard approved', () => {
  it('a listed host stages over HTTP (the control)', async () => {
    const before = allowed.requests.length;
    const listed = settings({ sourceHosts: [`127.0.0.1:${allowed.port}`] });
    expect(await stage(`git+http://127.0.0.1:${allowed.port}/acme/tool.git#main`, listed)).toBeNull();
    expect(allowed.requests.length).toBeGreaterThan(before);
  });

  it.each([
    ['a backslash before @', (a: number, b: number) => `git+http://127.0.0.1:${a}\\@127.0.0.2:${b}/acme/tool.git#main`],
    [
      'a backslash as user-info end',
      (a: number, b: number) => `git+http://127.0.0.1:${a}\\\\@127.0.0.2:${b}/acme/tool.git#main`,
    ],
    ['user-info', (a: number, b: number) => `git+http://127.0.0.1:${a}@127.0.0.2:${b}/acme/tool.git#main`],
    ['a percent-encoded @', (a: number, b: number) => `git+http://127.0.0.1:${a}%40127.0.0.2:${b}/acme/tool.git#main`],
    ['a tab before @', (a: number, b: number) => `git+http://127.0.0.1:${a}\t@127.0.0.2:${b}/acme/tool.git#main`],
    ['a space before @', (a: number, b: number) => `git+http://127.0.0.1:${a} @127.0.0.2:${b}/acme/tool.git#main`],
  ])('with a host list naming the first: %s', async (_, source) => {
    const listed = settings({ sourceHosts: [`127.0.0.1:${allowed.port}`] });
    const before = other.requests.length;
    const refused = await stage(source(allowed.port, other.port), listed);
    expect(other.requests.length, String(refused)).toBe(before);
    expect(refused).toBeInstanceOf(PermanentPluginError);
  });

  it('generated hostile authorities (fast-check): git never reaches the host the list does not name', async () => {
    const listed = settings({ sourceHosts: [`127.0.0.1:${allowed.port}`, `localhost:${allowed.port}`] });
    const a = String(allowed.port);
    const b = String(other.port);
    const named = fc.constantFrom(
      `127.0.0.1:${a}`,
      `localhost:${a}`,
      `127.0.0.2:${b}`,
      `2130706434:${b}`,
      `0x7f000002:${b}`,
      `[::ffff:127.0.0.2]:${b}`,
      `127.0.0.2`,
    );
    const glue = fc.constantFrom('@', '\\@', '\\', '%40', '%5C@', ':@', '@@', ' @', '\t@', '%2F@', '.@', '/', '');
    await fc.assert(
      fc.asyncProperty(named, glue, named, async (first, between, second) => {
        const before = { allowed: allowed.requests.length, other: other.requests.length };
        const refused = await stage(`git+http://${first}${between}${second}/acme/tool.git#main`, listed);
        expect(other.requests.length, String(refused)).toBe(before.other);
        if (refused === null) expect(allowed.requests.length).toBeGreaterThan(before.allowed);
      }),
      { numRuns: 40 },
    );
  });

  it('a redirect from the allowed host to another is not followed, and says so', async () => {
    const listed = settings({ sourceHosts: [`127.0.0.1:${redirecting.port}`] });
    const before = other.requests.length;
    const refused = await stage(`git+http://127.0.0.1:${redirecting.port}/acme/tool.git#main`, listed);
    expect(redirecting.requests.length).toBeGreaterThan(0);
    expect(other.requests.length).toBe(before);
    expect(refused).toBeInstanceOf(PermanentPluginError);
    expect(String(refused)).toMatch(/redirect/);
  });

  it('git dials the address the guard checked, not what DNS says the next time', async () => {
    // The same port on both loopback addresses: the system resolver says localhost is 127.0.0.1;
    // the guard's resolver said 127.0.0.2, and git must go there.
    const twin = await startRecordingServer({ host: '127.0.0.1', port: other.port, projectRoot: served });
    try {
      const checkedOnce = (host: string): Promise<string[]> =>
        host === 'localhost' ? Promise.resolve(['127.0.0.2']) : Promise.reject(new Error(`no ${host}`));
      const before = other.requests.length;
      expect(await stage(`git+http://localhost:${other.port}/acme/tool.git#main`, settings(), checkedOnce)).toBeNull();
      expect(other.requests.length).toBeGreaterThan(before);
      expect(twin.requests).toEqual([]);
      // A name only the guard's resolver knows: git reaches it through the pin alone.
      const pinnedOnly = (host: string): Promise<string[]> =>
        Promise.resolve(host === 'plugins.invalid' ? ['127.0.0.2'] : []);
      expect(
        await stage(`git+http://plugins.invalid:${other.port}/acme/tool.git#v1`, settings(), pinnedOnly),
      ).toBeNull();
    } finally {
      await twin.close();
    }
  });

  it('without a host list, the worker checks the address again: loopback refused unless allowed', async () => {
    const strict = settings({ urlPolicy: { allowLoopback: false, allowPrivate: false } });
    const before = allowed.requests.length;
    const refused = await stage(`git+http://127.0.0.1:${allowed.port}/acme/tool.git#main`, strict);
    expect(refused).toBeInstanceOf(PermanentPluginError);
    expect(String(refused)).toMatch(/loopback/);
    expect(allowed.requests.length).toBe(before);
  });
});

describe('the fetch stops at the size cap', () => {
  it('a repository far over the cap is refused while it downloads, naming the cap', async () => {
    const repos = join(root, 'big');
    const dir = join(repos, 'acme', 'huge.git');
    createPluginRepo(repos, 'acme', 'huge');
    writeFileSync(join(dir, 'blob.bin'), randomBytes(8 * 1024 * 1024));
    commitAll(dir, 'eight random megabytes');
    const slow = await startRecordingServer({ host: '127.0.0.1', projectRoot: repos, throttleBytes: 64 * 1024 });
    try {
      const capped = settings({ maxPluginBytes: 256 * 1024 });
      const refused = await stage(`git+http://127.0.0.1:${slow.port}/acme/huge.git#main`, capped);
      expect(refused).toBeInstanceOf(PermanentPluginError);
      expect(String(refused)).toMatch(/plugin size cap of 262144 bytes/);
      expect(String(refused)).toMatch(/stopped/);
      // Stopped, not finished: most of the 8 MB pack was never asked for.
      expect(slow.bytesSent()).toBeLessThan(4 * 1024 * 1024);
      expect(readdirSync(capped.cacheDir)).toEqual([]);
    } finally {
      await slow.close();
    }
  });
});

describe('the checkout stops at the size cap', () => {
  it('a small fetch that checks out far over the cap (a file of zeros) is refused, naming the cap', async () => {
    const roots = join(root, 'roots');
    const dir = join(roots, 'acme', 'bomb.git');
    createPluginRepo(roots, 'acme', 'bomb');
    writeFileSync(join(dir, 'zeros.bin'), Buffer.alloc(32 * 1024 * 1024));
    commitAll(dir, 'thirty-two megabytes of zeros');
    const capped = settings({ maxPluginBytes: 256 * 1024 });
    const refused = await stage(`git+file://${dir}#main`, capped);
    expect(refused).toBeInstanceOf(PermanentPluginError);
    expect(String(refused)).toMatch(/git checkout stopped: .*plugin size cap of 262144 bytes/);
    expect(readdirSync(capped.cacheDir)).toEqual([]);
  });
});

describe('git+file sources', () => {
  it('a link inside an allowed directory does not lead out of it', async () => {
    const outside = join(root, 'outside');
    createPluginRepo(outside, 'acme', 'secret');
    mkdirSync(join(root, 'roots'), { recursive: true });
    symlinkSync(outside, join(root, 'roots', 'escape'));
    const refused = await stage(`git+file://${join(root, 'roots', 'escape')}/acme/secret.git#main`, settings());
    expect(refused).toBeInstanceOf(PermanentPluginError);
    expect(String(refused)).toMatch(/outside the directories git\+file:\/\/ sources may read/);
  });

  it('a malformed percent-escape is a permanent error naming it', () => {
    expect(() => parsePluginSource(`git+file://${root}/roots/%zz.git#main`, settings())).toThrow(PermanentPluginError);
  });

  it('a repository under an allowed directory stages (the control)', async () => {
    const roots = join(root, 'roots');
    createPluginRepo(roots, 'acme', 'fine');
    expect(await stage(`git+file://${roots}/acme/fine.git#main`, settings())).toBeNull();
  });
});
