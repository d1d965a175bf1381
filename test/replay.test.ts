/**
 * Replays every recorded history under test/histories/ with the current workflow code: a change
 * that makes the workflow issue other commands for the same events fails here. Runs are pinned
 * to the build that started them (docs/versioning.md), so such a change is allowed between
 * releases: the release that makes it records its own history (`npm run record-history`) in
 * place of the previous one.
 */
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { Worker } from '@temporalio/worker';
import { readdirSync, readFileSync } from 'node:fs';
import { beforeAll, expect, inject, it } from 'vitest';
import { installQuietRuntime } from './helpers/env.js';

const dir = new URL('./histories/', import.meta.url);
const files = readdirSync(dir).filter((file) => file.endsWith('.json'));
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

beforeAll(() => installQuietRuntime());

it("the release's history is committed", () => {
  expect(files).toContain(`release-${version}.json`);
});

it.each(files)('replays %s deterministically', async (file) => {
  const history = historyFromJSON(JSON.parse(readFileSync(new URL(file, dir), 'utf8')));
  expect(history.events?.length).toBeGreaterThan(20);
  await Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') } }, history, file);
});
