/**
 * The heartbeat ledger in PostgreSQL (record_heartbeat): one round trip checks the workspace and
 * the token, records the heartbeat, and decides whether to forward it to the workflow.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../db/store.js';
import { mintTokenIfNone } from '../../api/tokens.js';
import { hashSecret } from '../../db/secrets.js';
import { connectTestStore } from '../helpers/postgres.js';
import { uniqueId } from '../helpers/worker.js';

let store: Store;
beforeAll(async () => {
  store = await connectTestStore();
});
afterAll(() => store.close());

const EVERY_MS = 60_000;
const steady = { signature: 'steady', degrades: false };
const degrading = { signature: 'degrades', degrades: true };

/** A workspace projected `status`, with a live token. */
async function workspace(status = 'online'): Promise<{ id: string; token: Buffer }> {
  const id = uniqueId('ledger');
  await store.workspaces.create(id, []);
  await store.pool.query('UPDATE workspaces SET status = $2 WHERE id = $1', [id, status]);
  const token = await mintTokenIfNone(store, id);
  if (token === null) throw new Error('no token minted');
  return { id, token: hashSecret(token) };
}

describe('heartbeat ledger', () => {
  it('forwards the first heartbeat, a changed signature and the first after the interval; coalesces the rest', async () => {
    const { id, token } = await workspace();
    // The first: nothing forwarded yet to compare with, so it can change state.
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toEqual({
      outcome: 'ok',
      forward: true,
      beats: 1,
      urgent: true,
    });
    for (let i = 0; i < 3; i++)
      expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toEqual({
        outcome: 'ok',
        forward: false,
        beats: 0,
        urgent: false,
      });
    expect(await store.heartbeats.read(id)).toMatchObject({ pending: 3 });
    // Another signature (e.g. the health class changed): at once, carrying the 3 coalesced.
    expect(await store.heartbeats.record(token, id, degrading, EVERY_MS)).toEqual({
      outcome: 'ok',
      forward: true,
      beats: 4,
      urgent: true,
    });
    expect(await store.heartbeats.record(token, id, degrading, EVERY_MS)).toMatchObject({ forward: false });
    // The interval passed since the last forward.
    await store.pool.query(
      `UPDATE workspace_heartbeats SET forwarded_at = now() - interval '61 seconds' WHERE workspace_id = $1`,
      [id],
    );
    // Due only by the interval: the same signature, nothing for the workflow to change.
    expect(await store.heartbeats.record(token, id, degrading, EVERY_MS)).toEqual({
      outcome: 'ok',
      forward: true,
      beats: 2,
      urgent: false,
    });
    const ledger = await store.heartbeats.read(id);
    expect(ledger.pending).toBe(0);
    expect(Date.now() - Date.parse(ledger.lastSeenAt ?? '')).toBeLessThan(10_000);
  });

  it('a workspace not online or degraded forwards its first heartbeat at once, and the rest only when due or changed', async () => {
    for (const status of ['provisioning', 'offline', 'failed', 'awaiting_agent']) {
      const { id, token } = await workspace(status);
      // In this status for an hour: the forwards below, moved back in time, are still in it.
      await store.pool.query(`UPDATE workspaces SET status_since = now() - interval '1 hour' WHERE id = $1`, [id]);
      // Any heartbeat can bring it online: the first goes at once and is answered once delivered.
      expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toEqual({
        outcome: 'ok',
        forward: true,
        beats: 1,
        urgent: true,
      });
      // That forward, made in this status, brings it online once the workflow takes it; a
      // second would only queue behind it. Recorded in the ledger instead.
      for (let i = 0; i < 2; i++)
        expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({
          forward: false,
          urgent: false,
        });
      expect(await store.heartbeats.read(id)).toMatchObject({ pending: 2 });
      // Another signature still goes at once.
      expect(await store.heartbeats.record(token, id, degrading, EVERY_MS)).toMatchObject({
        forward: true,
        beats: 3,
        urgent: true,
      });
      // Due by the interval, with a forward in this status already made: deferred, not urgent.
      await store.pool.query(
        `UPDATE workspace_heartbeats SET forwarded_at = now() - interval '61 seconds' WHERE workspace_id = $1`,
        [id],
      );
      expect(await store.heartbeats.record(token, id, degrading, EVERY_MS)).toMatchObject({
        forward: true,
        urgent: false,
      });
    }
    const { id, token } = await workspace();
    for (let i = 0; i < 3; i++)
      expect(await store.heartbeats.record(token, id, steady, 0)).toMatchObject({ forward: true, beats: 1 });
  });

  it('a forward made before the workspace entered its status (a restart began) does not stand for the heartbeats after', async () => {
    const { id, token } = await workspace('online');
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: true });
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: false });
    // The workflow projects the restart: provisioning from now, a transaction after the forward.
    await store.pool.query(`UPDATE workspaces SET status = 'provisioning', status_since = now() WHERE id = $1`, [id]);
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toEqual({
      outcome: 'ok',
      forward: true,
      beats: 2,
      urgent: true,
    });
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: false });
    // A forward that failed gave its heartbeats back: the next heartbeat is urgent again.
    await store.heartbeats.returnToPending(id, 1);
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: true, urgent: true });
  });

  it('right after a register, heartbeats that would not degrade an online workspace are recorded, even before it is projected online', async () => {
    const { id, token } = await workspace('provisioning');
    await store.heartbeats.noteRegister(id);
    // A register is not a heartbeat: nothing seen yet.
    expect(await store.heartbeats.read(id)).toEqual({ lastSeenAt: null, pending: 0 });
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toEqual({
      outcome: 'ok',
      forward: false,
      beats: 0,
      urgent: false,
    });
    expect(
      await store.heartbeats.record(token, id, { signature: 'recovers', degrades: false }, EVERY_MS),
    ).toMatchObject({
      forward: false,
    });
    // One that degrades goes at once, and from then on signatures compare as usual.
    expect(await store.heartbeats.record(token, id, degrading, EVERY_MS)).toEqual({
      outcome: 'ok',
      forward: true,
      beats: 3,
      urgent: true,
    });
    await store.pool.query(`UPDATE workspaces SET status = 'degraded' WHERE id = $1`, [id]); // as the workflow projects it
    expect(await store.heartbeats.record(token, id, degrading, EVERY_MS)).toMatchObject({ forward: false });
    // Without a register note, a workspace still provisioning forwards its first heartbeat.
    const other = await workspace('provisioning');
    expect(await store.heartbeats.record(other.token, other.id, steady, EVERY_MS)).toMatchObject({ forward: true });
    // Once the interval passed since the register, the next heartbeat forwards.
    const late = await workspace('online');
    await store.heartbeats.noteRegister(late.id);
    await store.pool.query(
      `UPDATE workspace_heartbeats SET forwarded_at = now() - interval '61 seconds' WHERE workspace_id = $1`,
      [late.id],
    );
    expect(await store.heartbeats.record(late.token, late.id, steady, EVERY_MS)).toMatchObject({
      forward: true,
      urgent: false,
    });
  });

  it('a forward that failed gives its heartbeats back, and the next heartbeat forwards them', async () => {
    const { id, token } = await workspace();
    await store.heartbeats.record(token, id, steady, EVERY_MS);
    await store.heartbeats.record(token, id, steady, EVERY_MS);
    await store.heartbeats.record(token, id, steady, EVERY_MS);
    await store.pool.query(
      `UPDATE workspace_heartbeats SET forwarded_at = now() - interval '61 seconds' WHERE workspace_id = $1`,
      [id],
    );
    const failed = await store.heartbeats.record(token, id, steady, EVERY_MS);
    expect(failed).toMatchObject({ forward: true, beats: 3, urgent: false });
    await store.heartbeats.returnToPending(id, failed.beats);
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toEqual({
      outcome: 'ok',
      forward: true,
      beats: 4,
      urgent: false,
    });
  });

  it('a deferred forward not sent (no slot, or its signal failed) is due at the next heartbeat, deferred again', async () => {
    for (const status of ['online', 'provisioning']) {
      const { id, token } = await workspace(status);
      await store.pool.query(`UPDATE workspaces SET status_since = now() - interval '1 hour' WHERE id = $1`, [id]);
      expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: true, urgent: true });
      expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: false });
      await store.pool.query(
        `UPDATE workspace_heartbeats SET forwarded_at = now() - interval '61 seconds' WHERE workspace_id = $1`,
        [id],
      );
      const deferred = await store.heartbeats.record(token, id, steady, EVERY_MS);
      expect(deferred).toMatchObject({ forward: true, beats: 2, urgent: false });
      await store.heartbeats.postponeForward(id, deferred.beats, EVERY_MS);
      expect(await store.heartbeats.read(id)).toMatchObject({ pending: 2 });
      // The status's first forward still stands: the next heartbeat carries them, not urgent.
      expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toEqual({
        outcome: 'ok',
        forward: true,
        beats: 3,
        urgent: false,
      });
    }
    // Postponed while the workspace entered a new status: the next heartbeat is urgent there.
    const { id, token } = await workspace('online');
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: true });
    await store.pool.query(`UPDATE workspaces SET status = 'provisioning', status_since = now() WHERE id = $1`, [id]);
    await store.heartbeats.postponeForward(id, 0, EVERY_MS);
    expect(await store.heartbeats.record(token, id, steady, EVERY_MS)).toMatchObject({ forward: true, urgent: true });
  });

  it('records nothing for an unknown or removed workspace, a revoked token, or a token of another workspace', async () => {
    const a = await workspace();
    const b = await workspace();
    // The token is checked first: for an id it does not belong to, whether or not it exists.
    expect(await store.heartbeats.record(a.token, 'nobody-here', steady, EVERY_MS)).toMatchObject({
      outcome: 'unauthorized',
    });
    expect(await store.heartbeats.record(b.token, a.id, steady, EVERY_MS)).toMatchObject({ outcome: 'unauthorized' });
    expect(await store.heartbeats.record(hashSecret('not-a-real-token-at-all'), a.id, steady, EVERY_MS)).toMatchObject({
      outcome: 'unauthorized',
    });
    await store.tokens.revoke(a.id);
    expect(await store.heartbeats.record(a.token, a.id, steady, EVERY_MS)).toMatchObject({ outcome: 'unauthorized' });
    await store.workspaces.markRemoved(b.id);
    expect(await store.heartbeats.record(b.token, b.id, steady, EVERY_MS)).toMatchObject({ outcome: 'not-found' });
    expect(await store.heartbeats.read(a.id)).toEqual({ lastSeenAt: null, pending: 0 });
    expect(await store.heartbeats.read(b.id)).toEqual({ lastSeenAt: null, pending: 0 });
  });

  it('concurrent heartbeats of one workspace (several API replicas): one forward, every heartbeat counted', async () => {
    const { id, token } = await workspace();
    const results = await Promise.all(
      Array.from({ length: 20 }, () => store.heartbeats.record(token, id, steady, EVERY_MS)),
    );
    expect(results.filter((r) => r.forward)).toHaveLength(1);
    const forwarded = results.reduce((sum, r) => sum + r.beats, 0);
    expect(forwarded + (await store.heartbeats.read(id)).pending).toBe(20);
  });
});
