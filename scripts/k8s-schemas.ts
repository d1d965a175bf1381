/**
 * JSON schemas for kubeconform from the Kubernetes OpenAPI document (api/openapi-spec/swagger.json
 * of the k8s.io/kubernetes module, fetched by scripts/toolchain.sh), so deploy/k8s/ is validated
 * offline. One file per kind, named as kubeconform's schema location template
 * `{{ .ResourceKind }}{{ .KindSuffix }}.json` expects (`deployment-apps-v1.json`,
 * `service-v1.json`), each carrying every definition it refers to. Strict: an object that lists
 * its properties allows no others, so a misspelt field is an error, as `kubectl apply
 * --validate=strict` would say.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

type Schema = Record<string, unknown>;

interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

/** Kubernetes' own encodings the document describes loosely, as the API server accepts them. */
const LOOSE: Record<string, Schema> = {
  'io.k8s.apimachinery.pkg.util.intstr.IntOrString': { oneOf: [{ type: 'string' }, { type: 'integer' }] },
  'io.k8s.apimachinery.pkg.api.resource.Quantity': { oneOf: [{ type: 'string' }, { type: 'number' }] },
};

/** A definition made strict, without the document's extensions (x-kubernetes-*) and descriptions. */
function strict(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(strict);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Schema = {};
  for (const [key, value] of Object.entries(schema as Schema)) {
    if (key.startsWith('x-') || key === 'description') continue;
    // `properties` maps names to schemas: its keys are field names, not keywords.
    out[key] =
      key === 'properties'
        ? Object.fromEntries(Object.entries(value as Schema).map(([name, sub]) => [name, strict(sub)]))
        : strict(value);
  }
  if (out['properties'] !== undefined && out['additionalProperties'] === undefined) out['additionalProperties'] = false;
  return out;
}

/** The file name kubeconform looks for: lower-case kind, the group's first label, the version. */
export function schemaFileName({ group, version, kind }: GroupVersionKind): string {
  const groupPart = group === '' ? '' : `-${group.split('.')[0] ?? ''}`;
  return `${kind.toLowerCase()}${groupPart}-${version}.json`;
}

/**
 * Writes a schema for each kind of `kinds` (`apps/v1/Deployment`, `v1/Service`) found in the
 * OpenAPI document `openapiFile` into `dir`; returns the files written.
 */
export function writeKubernetesSchemas(openapiFile: string, dir: string, kinds: string[]): string[] {
  const document = JSON.parse(readFileSync(openapiFile, 'utf8')) as { definitions: Record<string, Schema> };
  const definitions = Object.fromEntries(
    Object.entries(document.definitions).map(([name, schema]) => [name, LOOSE[name] ?? strict(schema)]),
  );
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const [name, schema] of Object.entries(document.definitions)) {
    const gvks = (schema['x-kubernetes-group-version-kind'] ?? []) as GroupVersionKind[];
    for (const gvk of gvks) {
      const apiVersion = gvk.group === '' ? gvk.version : `${gvk.group}/${gvk.version}`;
      if (!kinds.includes(`${apiVersion}/${gvk.kind}`)) continue;
      const file = join(dir, schemaFileName(gvk));
      writeFileSync(file, JSON.stringify({ ...(definitions[name] as Schema), definitions }));
      written.push(file);
    }
  }
  return written;
}
