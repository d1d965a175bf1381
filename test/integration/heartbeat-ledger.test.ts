/**
 * The heartbeat ledger in PostgreSQL: the contract a workflow publishes with its projection
 * write, the heartbeat's one statement and the forward rule it decides by (heartbeat_wanted, the
 * same as the state machine's heartbeatWanted on generated inputs), the record of a delivered
 * heartbeat, dead detection's read, and the fleet liveness controller's sweep.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '../../db/store.js';
import type { Publication } from '../../db/tables/workspaces.js';
import { mintTokenIfNone } from '../../api/tokens.js';
import { hashSecret } from '../../db/secrets.js';
import { heartbeatWanted, type ContractRow, type HeartbeatFacts } from '../../workflows/state-machine.js';
import { connectTestStore } from '../helpers/postgres.js';
import { onlineContract } from '../helpers/state-machine.js';
import { uniqueId } from '../helpers/worker.js';

let store: Store;
beforeAll(async () => {
  store = await connectTestStore();
});
afterAll(() => store.close());

const healthy: HeartbeatFacts = {
  errorRate: 0,
  runtimeState: '',
  managesOwnStatus: false,
  bringsCard: false,
  activeTasks: 0,
};
const degrading: HeartbeatFacts = { ...healthy, errorRate: 0.9 };
const holding: HeartbeatFacts = { ...healthy, errorRate: 0.3 };

/** A workspace as the API creates it (its ledger row included), with a live token. */
async function workspace(): Promise<{ id: string; token: Buffer }> {
  const id = uniqueId('ledger');
  await store.workspaces.create(id, []);
  const token = await mintTokenIfNone(store, id);
  if (token === null) throw new Error('no token minted');
  return { id, token: hashSecret(token) };
}

let versions = 1_000;
/** The workflow's projection write with its contract, a newer version each time unless given. */
async function publish(id: string, overrides: Partial<Publication> = {}): Promise<number> {
  const version = overrides.version ?? ++versions;
  await store.workspaces.writeProjection({
    workspaceId: id,
    status: 'online',
    url: null,
    statusSince: new Date().toISOString(),
    version,
    contract: onlineContract(),
    leaseAgeMs: 0,
    restart: null,
    ...overrides,
  });
  return version;
}

async function row(id: string): Promise<Record<string, unknown>> {
  const { rows } = await store.pool.query<Record<string, unknown>>(
    'SELECT * FROM workspace_heartbeats WHERE workspace_id = $1',
    [id],
  );
  return rows[0] ?? {};
}

/** Moves the row's times back, as if `ms` had passed on the database's clock. */
async function age(id: string, ms: number): Promise<void> {
  await store.pool.query(
    `UPDATE workspace_heartbeats SET last_seen_at = last_seen_at - $2 * interval '1 millisecond',
            lease_since = lease_since - $2 * interval '1 millisecond',
            restart_at = restart_at - $2 * interval '1 millisecond'
      WHERE workspace_id = $1`,
    [id, ms],
  );
}

describe('the forward rule', () => {
  it('heartbeat_wanted in SQL decides as heartbeatWanted does, on generated contracts and heartbeats', async () => {
    const rate = fc.oneof(
      fc.constantFrom(0, 0.1, 0.5, 1, 0.09999999999999999, 0.49999999999999994),
      fc.double({ min: 0, max: 1, noNaN: true }),
    );
    const threshold = fc.oneof(fc.constantFrom(0.1, 0.5, 0.9), fc.double({ min: 0.01, max: 1, noNaN: true }));
    const rowArb: fc.Arbitrary<ContractRow> = fc.record({
      want: fc.constantFrom('any', 'degrading', 'recovering', 'none'),
      wantVersion: fc.integer({ min: 0, max: 5 }),
      deliveredVersion: fc.integer({ min: 0, max: 5 }),
      degradeErrorRate: threshold,
      recoverErrorRate: threshold,
      hasCard: fc.boolean(),
    });
    const beatArb: fc.Arbitrary<HeartbeatFacts> = fc.record({
      errorRate: rate,
      runtimeState: fc.constantFrom('', 'wedged'),
      managesOwnStatus: fc.boolean(),
      bringsCard: fc.boolean(),
      activeTasks: fc.integer({ min: 0, max: 3 }),
    });
    const cases = fc.sample(fc.tuple(rowArb, beatArb), { numRuns: 2_000, seed: 29 });
    const { rows } = await store.pool.query<{ wanted: boolean }>(
      `SELECT heartbeat_wanted(c.want, c.want_version, c.delivered_version, c.degrade, c.recover, c.has_card,
                               c.error_rate, c.runtime_state, c.manages, c.brings_card) AS wanted
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::float8[], $5::float8[], $6::bool[],
                     $7::float8[], $8::text[], $9::bool[], $10::bool[]) WITH ORDINALITY
              AS c (want, want_version, delivered_version, degrade, recover, has_card, error_rate, runtime_state,
                    manages, brings_card, n)
        ORDER BY c.n`,
      [
        cases.map(([r]) => r.want),
        cases.map(([r]) => r.wantVersion),
        cases.map(([r]) => r.deliveredVersion),
        cases.map(([r]) => r.degradeErrorRate),
        cases.map(([r]) => r.recoverErrorRate),
        cases.map(([r]) => r.hasCard),
        cases.map(([, b]) => b.errorRate),
        cases.map(([, b]) => b.runtimeState),
        cases.map(([, b]) => b.managesOwnStatus),
        cases.map(([, b]) => b.bringsCard),
      ],
    );
    const disagreements = cases.filter(([r, b], i) => heartbeatWanted(r, b) !== rows[i]?.wanted);
    expect(disagreements).toEqual([]);
    // Both answers occur: the cases exercise the rule.
    expect(new Set(rows.map((r) => r.wanted))).toEqual(new Set([true, false]));
  });
});

describe('the heartbeat: one statement', () => {
  it('a heartbeat not wanted is recorded at once; a wanted one only once delivered, which closes the contract', async () => {
    const { id, token } = await workspace();
    // A new workspace wants its first heartbeat, whatever it says.
    expect(await store.heartbeats.record(token, id, healthy)).toEqual({ wanted: true, wantVersion: 1 });
    expect(await store.heartbeats.read(id)).toMatchObject({ lastSeenAt: null, beats: 0, want: 'any' });
    // Its retry (the signal failed) is wanted again.
    expect(await store.heartbeats.record(token, id, healthy)).toMatchObject({ wanted: true });
    await store.heartbeats.delivered(id, 1);
    expect(await store.heartbeats.read(id)).toMatchObject({ beats: 1, deliveredVersion: 1 });
    // The workflow has one for this contract: the next wait for what it publishes next.
    expect(await store.heartbeats.record(token, id, degrading)).toEqual({ wanted: false, wantVersion: 1 });
    const version = await publish(id);
    expect(await store.heartbeats.record(token, id, holding)).toEqual({ wanted: false, wantVersion: version });
    expect(await store.heartbeats.record(token, id, degrading)).toEqual({ wanted: true, wantVersion: version });
    const ledger = await store.heartbeats.read(id);
    expect(ledger).toMatchObject({ beats: 3, want: 'degrading', wantVersion: version, deliveredVersion: 1 });
    expect(Date.now() - Date.parse(ledger.lastSeenAt ?? '')).toBeLessThan(10_000);
  });

  it('a delivery recorded for an older contract does not close a newer one', async () => {
    const { id, token } = await workspace();
    const first = await publish(id);
    const second = await publish(id, { contract: onlineContract({ want: 'recovering' }) });
    await store.heartbeats.delivered(id, first);
    expect(await row(id)).toMatchObject({ delivered_version: String(first), want_version: String(second) });
    expect(await store.heartbeats.record(token, id, healthy)).toEqual({ wanted: true, wantVersion: second });
  });

  it("the thresholds are the workflow's, from its row", async () => {
    const { id, token } = await workspace();
    await publish(id, { contract: onlineContract({ degradeErrorRate: 0.9 }) });
    expect(await store.heartbeats.record(token, id, degrading)).toMatchObject({ wanted: true });
    await publish(id, { contract: onlineContract({ degradeErrorRate: 0.95 }) });
    expect(await store.heartbeats.record(token, id, degrading)).toMatchObject({ wanted: false });
  });

  it('records nothing for an unknown or removed workspace, a revoked token, or a token of another workspace', async () => {
    const a = await workspace();
    const b = await workspace();
    await publish(a.id);
    await publish(b.id);
    expect(await store.heartbeats.record(a.token, 'nobody-here', healthy)).toBeNull();
    expect(await store.heartbeats.record(b.token, a.id, healthy)).toBeNull();
    expect(await store.heartbeats.record(hashSecret('not-a-real-token-at-all'), a.id, healthy)).toBeNull();
    await store.tokens.revoke(a.id);
    expect(await store.heartbeats.record(a.token, a.id, healthy)).toBeNull();
    await store.workspaces.markRemoved(b.id);
    expect(await store.heartbeats.record(b.token, b.id, healthy)).toBeNull();
    expect(await store.heartbeats.read(a.id)).toMatchObject({ lastSeenAt: null, beats: 0 });
    expect(await store.heartbeats.read(b.id)).toMatchObject({ lastSeenAt: null, beats: 0 });
  });

  it('a workspace made without a ledger row gets one that wants its first heartbeat', async () => {
    const id = uniqueId('ledger-bare');
    await store.pool.query('INSERT INTO workspaces (id) VALUES ($1)', [id]);
    const token = await mintTokenIfNone(store, id);
    expect(await store.heartbeats.record(hashSecret(token ?? ''), id, healthy)).toBeNull();
    await store.heartbeats.ensureRow(id);
    expect(await store.heartbeats.record(hashSecret(token ?? ''), id, healthy)).toMatchObject({ wanted: true });
  });

  it('concurrent heartbeats of one workspace (several API replicas) are each counted once: nothing is given back', async () => {
    const { id, token } = await workspace();
    await publish(id);
    const results = await Promise.all(Array.from({ length: 20 }, () => store.heartbeats.record(token, id, healthy)));
    expect(results.every((r) => r?.wanted === false)).toBe(true);
    expect((await store.heartbeats.read(id)).beats).toBe(20);
  });

  it('the ledger has no index a heartbeat writes: its only index is the primary key', async () => {
    const { rows } = await store.pool.query<{ indexname: string }>(
      `SELECT indexname FROM pg_indexes WHERE tablename = 'workspace_heartbeats'`,
    );
    expect(rows.map((r) => r.indexname)).toEqual(['workspace_heartbeats_pkey']);
  });
});

describe('the contract', () => {
  it('a write lands only from a newer version; the lease runs from the age the workflow gave', async () => {
    const { id } = await workspace();
    const version = await publish(id, {
      contract: onlineContract({ want: 'recovering', leaseTtlMs: 60_000 }),
      leaseAgeMs: 30_000,
    });
    const written = await row(id);
    expect(written).toMatchObject({ want: 'recovering', want_version: String(version), ttl_ms: 60_000 });
    const leaseAge = Date.now() - (written['lease_since'] as Date).getTime();
    expect(leaseAge).toBeGreaterThanOrEqual(29_000);
    expect(leaseAge).toBeLessThan(40_000);
    await publish(id, { version: version - 1, contract: onlineContract({ want: 'any' }) });
    expect(await row(id)).toMatchObject({ want: 'recovering', want_version: String(version) });
    // The projection row follows the same version.
    const { rows } = await store.pool.query<{ version: string }>('SELECT version FROM workspaces WHERE id = $1', [id]);
    expect(rows[0]?.version).toBe(String(version));
  });

  it("a restart's start is stamped once per restart; the read says whether a heartbeat came after it", async () => {
    const { id, token } = await workspace();
    await publish(id, { contract: onlineContract({ want: 'none' }), restart: { key: 'r-1', ageMs: 0 } });
    const stamped = (await row(id))['restart_at'] as Date;
    await publish(id, { contract: onlineContract({ want: 'any' }), restart: { key: 'r-1', ageMs: 0 } });
    expect(((await row(id))['restart_at'] as Date).getTime()).toBe(stamped.getTime());
    expect(await store.heartbeats.reading(id, 'r-1')).toEqual({
      lastSeenAgeMs: null,
      seenSinceRestart: false,
      activeTasks: 0,
    });
    await age(id, 5_000); // the restart began 5 s ago
    expect(await store.heartbeats.record(token, id, healthy)).toMatchObject({ wanted: true });
    await store.heartbeats.delivered(id, (await store.heartbeats.read(id)).wantVersion);
    const reading = await store.heartbeats.reading(id, 'r-1');
    expect(reading.seenSinceRestart).toBe(true);
    expect(reading.lastSeenAgeMs).toBeLessThan(5_000);
    // Another restart's key: the ledger cannot say.
    expect((await store.heartbeats.reading(id, 'r-2')).seenSinceRestart).toBe(false);
    await publish(id, { contract: onlineContract({ want: 'none' }), restart: { key: 'r-2', ageMs: 0 } });
    expect((await store.heartbeats.reading(id, 'r-2')).seenSinceRestart).toBe(false);
  });

  it("the age the read gives is the database's: a heartbeat 10 s old reads 10 s old", async () => {
    const { id, token } = await workspace();
    await publish(id);
    await store.heartbeats.record(token, id, healthy);
    await age(id, 10_000);
    const { lastSeenAgeMs } = await store.heartbeats.reading(id, 'none');
    expect(lastSeenAgeMs).toBeGreaterThanOrEqual(10_000);
    expect(lastSeenAgeMs).toBeLessThan(15_000);
  });

  it('the read gives the active tasks of the last heartbeat recorded, wanted or not', async () => {
    const { id, token } = await workspace();
    await publish(id, { contract: onlineContract({ want: 'degrading' }) });
    expect(await store.heartbeats.record(token, id, { ...healthy, activeTasks: 2 })).toMatchObject({ wanted: false });
    expect((await store.heartbeats.reading(id, 'none')).activeTasks).toBe(2);
    expect(await store.heartbeats.record(token, id, { ...degrading, activeTasks: 0 })).toMatchObject({ wanted: true });
    expect((await store.heartbeats.reading(id, 'none')).activeTasks).toBe(0);
    // Any count a heartbeat may carry (a safe integer) is kept as it is.
    const most = Number.MAX_SAFE_INTEGER;
    expect(await store.heartbeats.record(token, id, { ...healthy, activeTasks: most })).not.toBeNull();
    expect((await store.heartbeats.reading(id, 'none')).activeTasks).toBe(most);
  });
});

describe('the sweep', () => {
  /** Every lease of the test database expired now, and those of `ids`. */
  async function expiredAmong(ids: string[]): Promise<{ workspaceId: string; version: number }[]> {
    const found = await store.heartbeats.findExpired(100_000);
    return found.leases
      .filter((l) => ids.includes(l.workspaceId))
      .map(({ workspaceId, version }) => ({ workspaceId, version }));
  }

  it('finds the watched leases silent for their TTL on the database clock, once per contract', async () => {
    const fresh = await workspace();
    const silent = await workspace();
    const unwatched = await workspace();
    const renewed = await workspace();
    const ids = [fresh, silent, unwatched, renewed].map((w) => w.id);
    await publish(fresh.id);
    const silentVersion = await publish(silent.id);
    await publish(unwatched.id, { contract: onlineContract({ leaseWatched: false }) });
    await publish(renewed.id);
    for (const w of [silent, unwatched, renewed]) await age(w.id, 181_000);
    await age(fresh.id, 179_000);
    // A heartbeat recorded renews the lease, whatever the contract's start.
    await store.heartbeats.record(renewed.token, renewed.id, healthy);
    expect(await expiredAmong(ids)).toEqual([{ workspaceId: silent.id, version: silentVersion }]);
    const counted = await store.heartbeats.findExpired(0);
    expect(counted.leases).toEqual([]);
    expect(counted.expired).toBeGreaterThanOrEqual(1);
    expect(counted.watched).toBeGreaterThanOrEqual(3);

    await store.heartbeats.markSignalled([{ workspaceId: silent.id, version: silentVersion }]);
    expect(await expiredAmong(ids)).toEqual([]);
    // The workflow publishes again (offline, say), its lease from then: watched anew.
    const offline = await publish(silent.id, { status: 'offline' });
    expect(await expiredAmong(ids)).toEqual([]);
    await age(silent.id, 181_000);
    expect(await expiredAmong(ids)).toEqual([{ workspaceId: silent.id, version: offline }]);
  });

  it('the longest silent first, up to the limit', async () => {
    const a = await workspace();
    const b = await workspace();
    await publish(a.id);
    await publish(b.id);
    await age(a.id, 200_000);
    await age(b.id, 300_000);
    const found = await store.heartbeats.findExpired(100_000);
    const order = found.leases.map((l) => l.workspaceId).filter((w) => w === a.id || w === b.id);
    expect(order).toEqual([b.id, a.id]);
    const silentFor = found.leases.find((l) => l.workspaceId === b.id)?.silentForMs ?? 0;
    expect(silentFor).toBeGreaterThanOrEqual(300_000);
    expect((await store.heartbeats.findExpired(1)).leases).toHaveLength(1);
  });

  it('counts a lease silent only from notBefore (a disruption ended), and reports the database now, the longest TTL and the API serving mark', async () => {
    const silent = await workspace();
    await publish(silent.id);
    await age(silent.id, 200_000);
    expect(await expiredAmong([silent.id])).toHaveLength(1);
    const before = await store.heartbeats.findExpired(0);
    const now = Date.parse(before.now);
    expect(before.maxTtlMs).toBeGreaterThanOrEqual(180_000);
    // The disruption ended 100 s ago: 100 s of silence, under the TTL.
    const ended = new Date(now - 100_000).toISOString();
    const after = await store.heartbeats.findExpired(100_000, ended);
    expect(after.leases.map((l) => l.workspaceId)).not.toContain(silent.id);
    // It ended 190 s ago: silent for 190 s, expired.
    const longAgo = await store.heartbeats.findExpired(100_000, new Date(now - 190_000).toISOString());
    const lease = longAgo.leases.find((l) => l.workspaceId === silent.id);
    expect(lease?.silentForMs).toBeGreaterThanOrEqual(190_000);
    expect(lease?.silentForMs).toBeLessThan(200_000);

    // Other API processes of the test run may mark too: the newest mark is at most this one's age.
    await store.serving.mark(uniqueId('api'));
    const served = (await store.heartbeats.findExpired(0)).servedAgeMs;
    expect(served).toBeGreaterThanOrEqual(0);
    expect(served).toBeLessThan(5_000);
  });
});
