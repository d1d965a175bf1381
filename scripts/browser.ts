import { existsSync } from 'node:fs';

/** The Chromium the Web UI test drives: `$CHROMIUM_PATH` or Debian's (scripts/browser.sh installs it). */
export function browserPath(): string {
  const path = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
  if (!existsSync(path))
    throw new Error(`no Chromium at ${path}: run \`bash scripts/browser.sh\` or set CHROMIUM_PATH`);
  return path;
}
