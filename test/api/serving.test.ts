/** The API's serving mark (api/serving.ts): marked while Temporal answers, not while it does not. */
import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import type { Store } from '../../db/store.js';
import { markServing } from '../../api/serving.js';

function fakes(temporalUp: { value: boolean }) {
  const marks: string[] = [];
  const store = { serving: { mark: (instance: string) => Promise.resolve(void marks.push(instance)) } };
  const client = {
    withDeadline: <T>(_deadline: number, fn: () => Promise<T>) => fn(),
    workflowService: {
      getSystemInfo: () => (temporalUp.value ? Promise.resolve({}) : Promise.reject(new Error('UNAVAILABLE'))),
    },
  };
  const notReady: string[] = [];
  const log = { debug: (fields: object) => void notReady.push(JSON.stringify(fields)) };
  return { marks, notReady, log, store: store as unknown as Store, client: client as unknown as Client };
}

describe('serving mark', () => {
  it('marks the instance at once and on every tick while Temporal answers; marks nothing while it does not; stops', async () => {
    const temporalUp = { value: true };
    const { marks, notReady, log, store, client } = fakes(temporalUp);
    const stop = markServing(store, client, 'host:8080', log, 10);
    await expect.poll(() => marks.length).toBeGreaterThanOrEqual(2);
    expect(new Set(marks)).toEqual(new Set(['host:8080']));
    temporalUp.value = false;
    await expect.poll(() => notReady.length).toBeGreaterThanOrEqual(2);
    const marked = marks.length;
    await expect.poll(() => notReady.length).toBeGreaterThanOrEqual(4);
    expect(marks.length).toBeLessThanOrEqual(marked + 1); // at most the tick already past its check
    expect(notReady[0]).toContain('UNAVAILABLE');
    await stop();
  });
});
