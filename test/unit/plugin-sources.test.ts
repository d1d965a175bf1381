/** Plugin sources and manifests as text: what a declared source names and what a manifest must hold. */
import { describe, expect, it } from 'vitest';
import { PermanentPluginError } from '../../activities/plugins/errors.js';
import { parsePluginSource, type SourceSettings } from '../../activities/plugins/source.js';
import { parseManifest } from '../../activities/plugins/stage.js';

const settings: SourceSettings = {
  giteaBaseUrl: 'https://git.example.test',
  githubBaseUrl: 'https://github.example.test',
  allowUnpinned: false,
  sourceHosts: null,
  fileRoots: ['/srv/repos'],
  urlPolicy: { allowLoopback: false, allowPrivate: false },
};

describe('plugin sources', () => {
  it.each([
    [
      'gitea://acme/tools/skills/seo-all#main',
      'seo-all',
      'https://git.example.test/acme/tools.git',
      'main',
      'skills/seo-all',
    ],
    ['gitea://acme/seo#v1.2', 'seo', 'https://git.example.test/acme/seo.git', 'v1.2', null],
    ['github://acme/writer#tag:v2', 'writer', 'https://github.example.test/acme/writer.git', 'v2', null],
    ['git+https://host.test/x/linter.git#sha:0123', 'linter', 'https://host.test/x/linter.git', '0123', null],
    ['git+file:///srv/repos/fmt.git#main', 'fmt', 'file:///srv/repos/fmt.git', 'main', null],
  ])('%s → %s', (raw, name, url, ref, subpath) => {
    const origin = raw.startsWith('git+') ? 'declared' : 'base-url';
    expect(parsePluginSource(raw, settings)).toEqual({ kind: 'git', raw, url, ref, subpath, name, origin });
  });

  it('local:// and bare names are local plugins', () => {
    expect(parsePluginSource('local://notes', settings)).toEqual({
      kind: 'local',
      raw: 'local://notes',
      name: 'notes',
    });
    expect(parsePluginSource('notes', settings)).toMatchObject({ kind: 'local', name: 'notes' });
  });

  it.each([
    ['', /empty/],
    ['gitea://acme/seo', /unpinned: add #<branch\|tag\|sha>/],
    ['gitea://acme/../etc#main', /path segment "\.\." is not allowed/],
    ['gitea://acme#main', /expected gitea:\/\/<owner>\/<repo>/],
    ['github://acme/repo/sub#main', /github sources take no subpath/],
    ['ftp://acme/repo#main', /unknown scheme ftp:\/\//],
    ['gitea://acme/seo#ma;in', /ref "ma;in" is not valid/],
    ['gitea://acme/seo#a#b', /more than one '#'/],
    ['local://../secrets', /is not a safe plugin name/],
    ['local://-rf', /is not a safe plugin name/],
  ])('rejects %j permanently', (raw, message) => {
    expect(() => parsePluginSource(raw, settings)).toThrow(PermanentPluginError);
    expect(() => parsePluginSource(raw, settings)).toThrow(message);
  });

  it('unpinned git sources are allowed when configured', () => {
    expect(parsePluginSource('gitea://acme/seo', { ...settings, allowUnpinned: true })).toMatchObject({ ref: null });
  });

  it('git+file sources only under the allowed directories; none allowed by default', () => {
    const outside = [
      ['git+file:///etc/passwd.git#main', '/etc/passwd.git'],
      ['git+file:///srv/repos/../../etc/x.git#main', '/etc/x.git'],
      ['git+file:///srv/repos-evil/x.git#main', '/srv/repos-evil/x.git'],
    ];
    for (const [raw, path] of outside) {
      expect(() => parsePluginSource(raw ?? '', settings)).toThrow(
        `${path} is outside the directories git+file:// sources may read`,
      );
    }
    expect(() => parsePluginSource('git+file:///srv/repos/fmt.git#main', { ...settings, fileRoots: [] })).toThrow(
      /git\+file:\/\/ sources are off; set WL_PLUGIN_SOURCE_FILE_ROOTS/,
    );
  });

  it('git+http(s) sources only to the allowed hosts, when a list is set', () => {
    const listed = { ...settings, sourceHosts: ['host.test', 'git.internal:8443'] };
    expect(parsePluginSource('git+https://HOST.test/x/linter.git#main', listed)).toMatchObject({ name: 'linter' });
    expect(parsePluginSource('git+https://git.internal:8443/x/a.git#main', listed)).toMatchObject({ name: 'a' });
    expect(() => parsePluginSource('git+https://git.internal/x/a.git#main', listed)).toThrow(
      /host git.internal is not one git sources may name/,
    );
    expect(() => parsePluginSource('git+http://169.254.169.254/x/a.git#main', listed)).toThrow(PermanentPluginError);
    // The operator's own gitea/github base URLs need no listing.
    expect(parsePluginSource('gitea://acme/seo#main', listed)).toMatchObject({ name: 'seo' });
  });

  it('a gitea source without a configured base URL says so', () => {
    expect(() => parsePluginSource('gitea://acme/seo#main', { ...settings, giteaBaseUrl: '' })).toThrow(
      /no base URL configured for gitea:\/\//,
    );
  });
});

describe('manifest', () => {
  it('needs a string name; version is optional', () => {
    expect(parseManifest('name: seo\nversion: 1.2.0\n')).toEqual({ name: 'seo', version: '1.2.0' });
    expect(parseManifest('name: seo\n')).toEqual({ name: 'seo', version: null });
    expect(parseManifest('')).toBeNull();
    expect(parseManifest('version: 1\n')).toBeNull();
    expect(parseManifest(': : [')).toBeNull();
  });
});
