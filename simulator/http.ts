/** What the simulator and the simulated runtime share about talking to the API: reading answers, naming errors. */

/** An answer's body: its JSON, else its text; null when empty (or unreadable). */
export async function readBody(response: Response): Promise<unknown> {
  const text = await response.text().catch(() => '');
  if (text === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** One line for an error answer: the API's `error` (and validation `issues`), else the body itself. */
export function errorText(body: unknown): string {
  if (typeof body === 'object' && body !== null && 'error' in body && typeof body.error === 'string') {
    const issues = 'issues' in body && Array.isArray(body.issues) ? ` ${JSON.stringify(body.issues)}` : '';
    return body.error + issues;
  }
  return typeof body === 'string' ? body.slice(0, 300) : JSON.stringify(body);
}

/** One line for a thrown error, with its cause (fetch hides the network error there), e.g. `fetch failed: connect ECONNREFUSED 127.0.0.1:8080`. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause;
  if (!(cause instanceof Error)) return err.message;
  const code = (cause as NodeJS.ErrnoException).code;
  const detail = code !== undefined && !cause.message.includes(code) ? `${code} (${cause.message})` : cause.message;
  return `${err.message}: ${detail}`;
}
