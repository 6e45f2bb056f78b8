/**
 * The one error a template problem raises, and how it names its place: the file (relative to
 * the working directory when inside it) and the 1-based line. Shared by loading, MJML checks
 * and rendering, so it lives below all of them.
 */
import path from 'node:path';

export class TemplateError extends Error {
  /** the file at fault (relative to the working directory when inside it) */
  file: string | undefined;
  line: number | undefined;
  constructor(message: string, location?: { file?: string; line?: number }) {
    super(message);
    this.name = 'TemplateError';
    this.file = location?.file;
    this.line = location?.line;
  }
}

export function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

export function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}
