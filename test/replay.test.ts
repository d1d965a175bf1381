/**
 * Replays every recorded history under test/histories/ with the current workflow code. A change
 * to the workflow that running histories depend on, without a patched() guard, fails here.
 */
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { Worker } from '@temporalio/worker';
import { readdirSync, readFileSync } from 'node:fs';
import { beforeAll, expect, inject, it } from 'vitest';
import { installQuietRuntime } from './helpers/env.js';

const dir = new URL('./histories/', import.meta.url);
const files = readdirSync(dir).filter((file) => file.endsWith('.json'));

beforeAll(installQuietRuntime);

it('at least one recorded history is committed', () => {
  expect(files.length).toBeGreaterThan(0);
});

it.each(files)('replays %s deterministically', async (file) => {
  const history = historyFromJSON(JSON.parse(readFileSync(new URL(file, dir), 'utf8')));
  expect(history.events?.length).toBeGreaterThan(20);
  await Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') } }, history, file);
});
