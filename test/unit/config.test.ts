/** Lifecycle overrides (WL_LIFECYCLE_CONFIG), the worker's bundle and metrics settings, tracing: every bad value refused with the reason. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fleetLivenessSettings, loadSettings, workerSettings } from '../../settings.js';
import { parseLifecycleOverrides } from '../../workflows/config.js';
import { testScratchDir } from '../helpers/scratch.js';

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
    const dir = testScratchDir('bundle-setting');
    const file = join(dir, 'workflows.js');
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

describe('WL_WORKER_METRICS_ADDR', () => {
  it('is 127.0.0.1:9464 unless set, null when off, and refused when it is not host:port', () => {
    expect(loadSettings({}).metricsAddress).toBe('127.0.0.1:9464');
    expect(loadSettings({ WL_WORKER_METRICS_ADDR: '0.0.0.0:9500' }).metricsAddress).toBe('0.0.0.0:9500');
    expect(loadSettings({ WL_WORKER_METRICS_ADDR: '[::1]:9464' }).metricsAddress).toBe('[::1]:9464');
    expect(loadSettings({ WL_WORKER_METRICS_ADDR: 'off' }).metricsAddress).toBeNull();
    for (const bad of ['9464', 'localhost', 'host:99999', 'http://host:9464', ' host:9464'])
      expect(() => loadSettings({ WL_WORKER_METRICS_ADDR: bad }), bad).toThrow(
        /WL_WORKER_METRICS_ADDR must be host:port \(e\.g\. 0\.0\.0\.0:9464\) or off/,
      );
  });
});

describe('tracing', () => {
  it('is off without an OTLP endpoint, on with either variable, the traces URL winning', () => {
    expect(loadSettings({}).tracing).toBeNull();
    expect(loadSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }).tracing).toEqual({
      url: 'http://collector:4318/v1/traces',
    });
    expect(
      loadSettings({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example/otlp',
      }).tracing,
    ).toEqual({ url: 'https://traces.example/otlp' });
    expect(() => loadSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toThrow(
      /OTEL_EXPORTER_OTLP_ENDPOINT must be an http\(s\) URL, got "collector:4318"/,
    );
    expect(() => loadSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'not a url' })).toThrow(
      /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must be an http\(s\) URL/,
    );
  });
});

describe('the fleet judgement: WL_DISRUPTION_SHARE, WL_DISRUPTION_MIN_LEASES, WL_API_SERVING_GRACE_MS, WL_REMEDIATION_PER_MINUTE', () => {
  it('defaults, values the worker configures the controller with, and bad values named', () => {
    expect(loadSettings({}).fleetJudgement).toEqual({
      disruptionShare: 0.5,
      disruptionMinLeases: 3,
      apiServingGraceMs: 30_000,
      remediationPerMinute: 60,
    });
    const settings = loadSettings({
      WL_DISRUPTION_SHARE: '0.3',
      WL_DISRUPTION_MIN_LEASES: '10',
      WL_API_SERVING_GRACE_MS: '60000',
      WL_REMEDIATION_PER_MINUTE: '600',
      WL_LIVENESS_SWEEP_EVERY_MS: '2000',
      DATABASE_URL: 'postgres://u@127.0.0.1/db',
    });
    expect(fleetLivenessSettings(workerSettings(settings))).toEqual({
      sweepEveryMs: 2_000,
      disruptionShare: 0.3,
      disruptionMinLeases: 10,
      apiServingGraceMs: 60_000,
      remediationPerMinute: 600,
    });
    expect(() => loadSettings({ WL_DISRUPTION_SHARE: '1.5' })).toThrow(
      /WL_DISRUPTION_SHARE must be a share of the fleet/,
    );
    expect(() => loadSettings({ WL_DISRUPTION_SHARE: '0' })).toThrow(/WL_DISRUPTION_SHARE must be a positive number/);
    expect(() => loadSettings({ WL_API_SERVING_GRACE_MS: '5000' })).toThrow(
      /WL_API_SERVING_GRACE_MS must be an integer >= 15000, got 5000/,
    );
    expect(() => loadSettings({ WL_REMEDIATION_PER_MINUTE: '0' })).toThrow(
      /WL_REMEDIATION_PER_MINUTE must be an integer >= 1/,
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
