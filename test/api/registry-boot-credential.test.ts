/**
 * A register with the boot credential a restart wrote into the box (api/routes/registry.ts,
 * api/tokens.ts): the restart activity on a local box, the real API, worker and PostgreSQL.
 * Only the credential the box holds now registers, once, and mints a new token.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOOT_CREDENTIAL_FILE } from '../../activities/box/driver.js';
import { LocalBoxDriver } from '../../activities/box/local.js';
import { createLifecycleActivities } from '../../activities/lifecycle.js';
import { buildApi } from '../../api/server.js';
import { REVOKED_TOKEN, UNAUTHENTICATED, WRONG_BOOT_CREDENTIAL } from '../../api/tokens.js';
import { SimulatedRuntime, TOKEN_FILE } from '../../simulator/runtime.js';
import { admin, registerBody, useApiHarness } from '../helpers/api.js';

const harness = useApiHarness('boot-credential-tests');

describe('boot credential', () => {
  let boxesDir: string;
  let driver: LocalBoxDriver;
  beforeAll(async () => {
    boxesDir = await mkdtemp(join(tmpdir(), 'wl-boot-'));
    driver = new LocalBoxDriver({ root: boxesDir, runtimeCommand: null });
  });
  afterAll(async () => {
    await rm(boxesDir, { recursive: true, force: true });
  });

  const register = (id: string, headers: Record<string, string> = {}) =>
    harness.api.inject({ method: 'POST', url: '/registry/register', headers, payload: registerBody(id) });

  /** A registered workspace whose tokens a dead verdict then revoked. */
  async function revokedWorkspace(): Promise<{ id: string; token: string }> {
    const created = await harness.createWorkspace();
    expect((await register(created.id, { authorization: `Bearer ${created.token}` })).statusCode).toBe(200);
    expect(await harness.store.tokens.revoke(created.id)).toBe(1);
    return created;
  }

  it('a rollout setting lets credential-less registers through for runtimes not yet updated (off by default)', async () => {
    const { id } = await revokedWorkspace();
    expect((await register(id)).statusCode).toBe(401);
    const rollout = await buildApi(
      harness.env.client,
      harness.store,
      harness.settings({ bootstrapWithoutCredential: true }),
    );
    try {
      const res = await rollout.inject({ method: 'POST', url: '/registry/register', payload: registerBody(id) });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json<{ auth_token?: string }>().auth_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      // The token is live now: the next credential-less register is refused, even here.
      const again = await rollout.inject({ method: 'POST', url: '/registry/register', payload: registerBody(id) });
      expect(again.statusCode).toBe(401);
    } finally {
      await rollout.close();
    }
  });

  /** The restart activity, as the worker runs it, on a local box; the credential it left in the box. */
  async function restartBox(id: string): Promise<string> {
    await driver.createBox(id);
    const activities = createLifecycleActivities({ store: harness.store, driver });
    const input = { workspaceId: id, restartId: `r-${id}` };
    const result = await new MockActivityEnvironment().run((i: typeof input) => activities.restartBox(i), input);
    // A second run for the same restart id is a retried activity: the box is not restarted twice.
    expect(['restarted', 'already-restarted']).toContain(result);
    return (await readFile(join(driver.boxDir(id), BOOT_CREDENTIAL_FILE), 'utf8')).trim();
  }

  it('after a revocation, a register with no credential, the revoked token or a wrong credential is 401', async () => {
    const { id, token } = await revokedWorkspace();
    const attempts: [Record<string, string>, string][] = [
      [{}, UNAUTHENTICATED],
      [{ authorization: `Bearer ${token}` }, REVOKED_TOKEN],
    ];
    for (const [headers, error] of attempts) {
      const res = await register(id, headers);
      expect(res.statusCode, res.body).toBe(401);
      expect(res.json()).toEqual({ error });
    }
    await restartBox(id);
    const wrong = await register(id, { 'x-boot-credential': 'A'.repeat(43) });
    expect(wrong.statusCode, wrong.body).toBe(401);
    expect(wrong.json<{ error: string }>().error).toMatch(/boot credential is wrong or already used/);
    expect(await harness.store.tokens.liveCount(id)).toBe(0);
  });

  it('the credential the restart wrote into the box registers once, and mints a new token', async () => {
    const { id, token } = await revokedWorkspace();
    const credential = await restartBox(id);
    expect(credential).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // Only its hash is stored.
    const { rows } = await harness.store.pool.query<{ credential_hash: Buffer }>(
      'SELECT credential_hash FROM workspace_boot_credentials WHERE workspace_id = $1',
      [id],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.credential_hash.toString('base64url')).not.toBe(credential);

    const first = await register(id, { 'x-boot-credential': credential });
    expect(first.statusCode, first.body).toBe(200);
    const fresh = first.json<{ auth_token?: string }>().auth_token;
    expect(fresh).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(fresh).not.toBe(token);
    expect(await harness.store.tokens.liveCount(id)).toBe(1);

    // One-time: the same credential again (consumed as the token was minted).
    const again = await register(id, { 'x-boot-credential': credential });
    expect(again.statusCode, again.body).toBe(401);
    expect(again.json()).toEqual({ error: WRONG_BOOT_CREDENTIAL });
    // Even once the new token is revoked too.
    await harness.store.tokens.revoke(id);
    const used = await register(id, { 'x-boot-credential': credential });
    expect(used.statusCode, used.body).toBe(401);
    expect(used.json<{ error: string }>().error).toMatch(/boot credential is wrong or already used/);
  });

  it('a retried restart replaces the credential: only the one the box holds now registers', async () => {
    const { id } = await revokedWorkspace();
    const older = await restartBox(id);
    const newer = await restartBox(id);
    expect(newer).not.toBe(older);
    const stale = await register(id, { 'x-boot-credential': older });
    expect(stale.statusCode, stale.body).toBe(401);
    const res = await register(id, { 'x-boot-credential': newer });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<{ auth_token?: string }>().auth_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('two registers racing with the same credential: exactly one gets a token', async () => {
    const { id } = await revokedWorkspace();
    const credential = await restartBox(id);
    const answers = await Promise.all([1, 2, 3].map(() => register(id, { 'x-boot-credential': credential })));
    const tokens = answers.flatMap((a) =>
      a.statusCode === 200 ? [a.json<{ auth_token?: string }>().auth_token ?? 'none'] : [],
    );
    expect(tokens).toHaveLength(1);
    expect(tokens[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(answers.filter((a) => a.statusCode === 401)).toHaveLength(2);
    expect(await harness.store.tokens.liveCount(id)).toBe(1);
  });

  it('the simulated runtime, its token revoked, registers again with the credential the restart left in its box', async () => {
    const { id, token } = await revokedWorkspace();
    await driver.createBox(id);
    await writeFile(join(driver.boxDir(id), TOKEN_FILE), `${token}\n`);
    await restartBox(id);
    const served = await buildApi(harness.env.client, harness.store, harness.settings());
    const stop = new AbortController();
    const lines: string[] = [];
    try {
      const apiUrl = await served.listen({ host: '127.0.0.1', port: 0 });
      const workspaceDir = driver.boxDir(id);
      const runtime = new SimulatedRuntime(
        { workspaceId: id, workspaceDir, apiUrl, heartbeatMs: 100 },
        stop.signal,
        (l) => lines.push(l),
      );
      const running = runtime.run();
      await expect.poll(() => harness.store.tokens.liveCount(id), { timeout: 10_000 }).toBe(1);
      await expect
        .poll(async () => (await readFile(join(workspaceDir, TOKEN_FILE), 'utf8')).trim(), { timeout: 10_000 })
        .not.toBe(token);
      await expect.poll(() => lines.some((l) => l.startsWith('heartbeat ok')), { timeout: 10_000 }).toBe(true);
      stop.abort();
      await running;
    } finally {
      stop.abort();
      await served.close();
    }
    expect(lines.join('\n')).toContain(`register refused (401 ${REVOKED_TOKEN})`);
    expect(await harness.store.bootCredentials.hash(id)).toBeNull();
  });

  it('a live bearer token still registers, with or without a pending credential', async () => {
    const { id, token } = await harness.createWorkspace();
    const bearer = { authorization: `Bearer ${token}` };
    expect((await register(id, bearer)).json()).toEqual({ status: 'registered', delivery_mode: 'push' });
    const credential = await restartBox(id);
    const res = await register(id, { ...bearer, 'x-boot-credential': credential });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ status: 'registered', delivery_mode: 'push' });
    expect(await harness.store.tokens.liveCount(id)).toBe(1);
    const view = await harness.api.inject({ method: 'GET', url: `/workspaces/${id}`, headers: admin });
    expect(view.json<{ bootCredentialPending?: boolean }>().bootCredentialPending).toBe(true);
  });
});
