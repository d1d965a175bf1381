/** Lifecycle overrides (WL_LIFECYCLE_CONFIG) and the worker's bundle setting: every bad value refused with the reason. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadSettings, workerSettings } from '../../settings.js';
import { parseLifecycleOverrides } from '../../workflows/config.js';

describe('parseLifecycleOverrides', () => {
  it('takes known keys; the resync may be 0 (off) or at least a minute, nothing in between', () => {
    expect(parseLifecycleOverrides('{"livenessTtlMs": 60000, "resyncPeriodMs": 0}')).toEqual({
      livenessTtlMs: 60_000,
      resyncPeriodMs: 0,
    });
    expect(parseLifecycleOverrides('{"resyncPeriodMs": 3600000}')).toEqual({ resyncPeriodMs: 3_600_000 });
    expect(() => parseLifecycleOverrides('{"resyncPeriodMs": 1}')).toThrow(/0 \(off\) or at least 60000/);
    expect(() => parseLifecycleOverrides('{"livenessTtlMs": 0}')).toThrow(/livenessTtlMs must be a positive number/);
    expect(() => parseLifecycleOverrides('{"livenessTtl": 5}')).toThrow(/unknown lifecycle setting livenessTtl/);
    expect(() => parseLifecycleOverrides('{"strikeThreshold": "2"}')).toThrow(/must be a number/);
    expect(() => parseLifecycleOverrides('[1]')).toThrow(/must be a JSON object/);
  });
});

describe('WL_WORKFLOW_BUNDLE', () => {
  it('is null when unset or empty, the path when it names an existing file, and refused otherwise', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'wl-bundle-setting-')), 'workflows.js');
    writeFileSync(file, '');
    expect(loadSettings({}).workflowBundlePath).toBeNull();
    expect(loadSettings({ WL_WORKFLOW_BUNDLE: '' }).workflowBundlePath).toBeNull();
    expect(loadSettings({ WL_WORKFLOW_BUNDLE: file }).workflowBundlePath).toBe(file);
    expect(() => loadSettings({ WL_WORKFLOW_BUNDLE: 'workflows.js' })).toThrow(
      /WL_WORKFLOW_BUNDLE must be an absolute path, got workflows\.js/,
    );
    expect(() => loadSettings({ WL_WORKFLOW_BUNDLE: `${file}.missing` })).toThrow(
      /WL_WORKFLOW_BUNDLE names .*workflows\.js\.missing, which does not exist/,
    );
  });
});

describe('WL_LIVENESS_SWEEP_EVERY_MS', () => {
  it("is the fleet liveness controller's period: 5 s unless set, at least a second", () => {
    expect(loadSettings({}).livenessSweepEveryMs).toBe(5_000);
    expect(loadSettings({ WL_LIVENESS_SWEEP_EVERY_MS: '2000' }).livenessSweepEveryMs).toBe(2_000);
    expect(
      workerSettings(loadSettings({ WL_LIVENESS_SWEEP_EVERY_MS: '2000', DATABASE_URL: 'postgres://u@127.0.0.1/db' }))
        .livenessSweepEveryMs,
    ).toBe(2_000);
    expect(() => loadSettings({ WL_LIVENESS_SWEEP_EVERY_MS: '500' })).toThrow(
      /WL_LIVENESS_SWEEP_EVERY_MS must be an integer >= 1000, got 500/,
    );
  });
});
