/** Lifecycle overrides (WL_LIFECYCLE_CONFIG): every key named, every bad value refused with the reason. */
import { describe, expect, it } from 'vitest';
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
