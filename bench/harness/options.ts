/** Command-line options of the benches, checked as they are read. */

/** The number an option gives, which must be positive (and whole unless `integer` is false); throws naming the flag. */
export function positive(flag: string, text: string, integer = true): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value)))
    throw new Error(`--${flag} must be a positive ${integer ? 'integer' : 'number'}, got ${text}`);
  return value;
}
