/**
 * The Kubernetes manifests under deploy/k8s/ are valid for the Kubernetes API they target
 * (kubeconform, offline, against schemas made from the API's OpenAPI document, strict: no
 * unknown field), and wired as docs/deploy.md says: probes on /healthz and /readyz, a
 * PodDisruptionBudget and the settings for each Deployment, a Service in front of the API.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { writeKubernetesSchemas } from '../../scripts/k8s-schemas.js';

const root = new URL('../../', import.meta.url).pathname;
const manifestsDir = join(root, 'deploy', 'k8s');
const KINDS = [
  'v1/Namespace',
  'v1/ConfigMap',
  'v1/Secret',
  'v1/Service',
  'apps/v1/Deployment',
  'policy/v1/PodDisruptionBudget',
];

/** kubeconform and the OpenAPI document, as scripts/toolchain.sh provides them. */
function toolchain(): { kubeconform: string; openapi: string } {
  const output = execFileSync('bash', [join(root, 'scripts', 'toolchain.sh'), '--print-env'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const value = (name: string): string => {
    const found = new RegExp(`^export ${name}=(.+)$`, 'm').exec(output)?.[1];
    if (found === undefined) throw new Error(`scripts/toolchain.sh --print-env printed no ${name}`);
    return found;
  };
  return { kubeconform: value('WL_KUBECONFORM_PATH'), openapi: value('WL_KUBERNETES_OPENAPI') };
}

interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

function manifests(): Resource[] {
  return readdirSync(manifestsDir)
    .filter((name) => name.endsWith('.yaml'))
    .flatMap((name) =>
      parseAllDocuments(readFileSync(join(manifestsDir, name), 'utf8')).map((doc) => doc.toJS() as Resource),
    );
}

let work = '';
let schemas = '';
let kubeconform = '';

beforeAll(() => {
  const tools = toolchain();
  kubeconform = tools.kubeconform;
  work = mkdtempSync(join(tmpdir(), 'wl-k8s-'));
  schemas = join(work, 'schemas');
  expect(writeKubernetesSchemas(tools.openapi, schemas, KINDS)).toHaveLength(KINDS.length);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function validate(path: string): {
  status: number | null;
  summary: { valid: number; invalid: number; errors: number; skipped: number };
  output: string;
} {
  const run = spawnSync(
    kubeconform,
    [
      '-strict',
      '-summary',
      '-output',
      'json',
      '-schema-location',
      join(schemas, '{{ .ResourceKind }}{{ .KindSuffix }}.json'),
      path,
    ],
    { encoding: 'utf8' },
  );
  const parsed = JSON.parse(run.stdout) as {
    summary: { valid: number; invalid: number; errors: number; skipped: number };
  };
  return { status: run.status, summary: parsed.summary, output: run.stdout };
}

describe('deploy/k8s', () => {
  it('every manifest is valid for the Kubernetes API, strictly', () => {
    const result = validate(manifestsDir);
    expect(result.output).not.toMatch(/"status": "status(Invalid|Error)"/);
    expect(result.summary).toEqual({ valid: manifests().length, invalid: 0, errors: 0, skipped: 0 });
    expect(result.status).toBe(0);
  });

  it('the check refuses a misspelt field, a wrong type and an unknown kind', () => {
    const api = readFileSync(join(manifestsDir, 'api.yaml'), 'utf8');
    const cases = {
      misspelt: api.replace('readinessProbe:', 'readynessProbe:'),
      wrongType: api.replace('replicas: 2', 'replicas: two'),
      unknownKind: 'apiVersion: v1\nkind: Pod2\nmetadata:\n  name: x\n',
    };
    for (const [name, text] of Object.entries(cases)) {
      const file = join(work, `${name}.yaml`);
      writeFileSync(file, text);
      const result = validate(file);
      expect(result.status, name).not.toBe(0);
      expect(result.summary.invalid + result.summary.errors, name).toBeGreaterThan(0);
    }
  });

  it('probes the API on /healthz and /readyz, and each Deployment has its PodDisruptionBudget and settings', () => {
    const all = manifests();
    const deployments = all.filter((r) => r.kind === 'Deployment');
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual([
      'workspace-lifecycle-api',
      'workspace-lifecycle-worker',
    ]);
    const configNames = new Set(all.filter((r) => r.kind === 'ConfigMap').map((r) => r.metadata.name));
    const secretNames = new Set(all.filter((r) => r.kind === 'Secret').map((r) => r.metadata.name));
    for (const deployment of deployments) {
      const spec = deployment.spec as {
        replicas: number;
        selector: { matchLabels: Record<string, string> };
        template: {
          metadata: { labels: Record<string, string> };
          spec: { containers: { envFrom: { configMapRef?: { name: string }; secretRef?: { name: string } }[] }[] };
        };
      };
      expect(spec.replicas, deployment.metadata.name).toBeGreaterThanOrEqual(2);
      expect(spec.template.metadata.labels).toMatchObject(spec.selector.matchLabels);
      const budgets = all.filter(
        (r) =>
          r.kind === 'PodDisruptionBudget' &&
          JSON.stringify((r.spec as { selector: { matchLabels: unknown } }).selector.matchLabels) ===
            JSON.stringify(spec.selector.matchLabels),
      );
      expect(budgets, deployment.metadata.name).toHaveLength(1);
      for (const container of spec.template.spec.containers)
        for (const source of container.envFrom) {
          if (source.configMapRef) expect(configNames.has(source.configMapRef.name)).toBe(true);
          if (source.secretRef) expect(secretNames.has(source.secretRef.name)).toBe(true);
        }
    }
    const api = deployments.find((d) => d.metadata.name === 'workspace-lifecycle-api');
    const [container] = (api?.spec as { template: { spec: { containers: Record<string, unknown>[] } } }).template.spec
      .containers;
    expect(container).toMatchObject({
      readinessProbe: { httpGet: { path: '/readyz', port: 'http' } },
      livenessProbe: { httpGet: { path: '/healthz', port: 'http' } },
      ports: [{ name: 'http', containerPort: 8080 }],
    });
    const config = all.find((r) => r.kind === 'ConfigMap');
    expect(config?.data).toMatchObject({ WL_API_PORT: '8080', WL_API_HOST: '0.0.0.0' });
    const service = all.find((r) => r.kind === 'Service');
    expect((service?.spec as { selector: unknown }).selector).toEqual(
      (api?.spec as { selector: { matchLabels: unknown } }).selector.matchLabels,
    );
  });
});
