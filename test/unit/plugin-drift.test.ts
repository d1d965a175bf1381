/** Drift: tracking rows against one listing of the box. */
import { describe, expect, it } from 'vitest';
import type { TrackedPlugin } from '../../activities/reconcile.js';
import { findDrift } from '../../workflows/plugin-drift.js';

const delivered = (name: string, revision: string): TrackedPlugin => ({
  name,
  source: `gitea://acme/${name}#main`,
  revision,
  installedVia: 'delivered',
});
const boot = (name: string, revision: string): TrackedPlugin => ({
  ...delivered(name, revision),
  installedVia: 'boot',
});

describe('findDrift', () => {
  it('delivers again what the box lost or holds at another revision; follows the image for its own plugins', () => {
    const drift = findDrift(
      [
        delivered('same', 'r1'),
        delivered('gone', 'r1'),
        delivered('edited', 'r1'),
        boot('baked', 'version:1'),
        boot('baked-gone', 'version:1'),
        boot('baked-newer', 'version:1'),
      ],
      [
        { name: 'same', revision: 'r1' },
        { name: 'edited', revision: 'r0' },
        { name: 'baked', revision: 'version:1' },
        { name: 'baked-newer', revision: 'version:2' },
        { name: 'untracked', revision: 'version:9' },
      ],
    );
    expect(drift.redeliver.map((p) => p.name)).toEqual(['gone', 'edited', 'baked-gone']);
    expect(drift.rerecord).toEqual([{ plugin: boot('baked-newer', 'version:1'), revision: 'version:2' }]);
  });

  it('nothing tracked, or everything in place: no drift', () => {
    expect(findDrift([], [{ name: 'x', revision: 'r' }])).toEqual({ redeliver: [], rerecord: [] });
    expect(findDrift([delivered('x', 'r')], [{ name: 'x', revision: 'r' }])).toEqual({ redeliver: [], rerecord: [] });
  });
});
