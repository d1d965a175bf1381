import { describe, expect, it } from 'vitest';
import { baselineFor, baselines, patches, type BaselineId, type PatchId } from '../../workflows/patches.js';

describe('patch baselines', () => {
  const isBaseline = (id: string): id is BaselineId => (baselines as readonly string[]).includes(id);
  const ids = Object.values(patches).filter((id): id is PatchId => !isBaseline(id));

  it('each patch is taken by the first baseline listed after it', () => {
    const before1 = ids.slice(0, ids.indexOf(patches.localActivities));
    expect(before1).toContain(patches.pluginLifecycle);
    for (const id of before1) expect(baselineFor(id), id).toBe(patches.baseline);
    expect(baselineFor(patches.localActivities)).toBe(patches.baseline2);
  });
});
