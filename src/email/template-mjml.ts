/**
 * One template source (an emails/*.mjml file and the partials it includes) → the compiled HTML
 * with its Handlebars placeholders intact: brand tokens filled in, MJML compiled with strict
 * validation, and the checks that turn a problem into a TemplateError at the file and line
 * (Handlebars syntax and helpers, unbalanced mj-* tags, failed includes, placeholders MJML
 * dropped).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import mjml2html from 'mjml';
import type { BrandValues } from './template-catalog.ts';
import { displayPath, lineAt, TemplateError } from './template-error.ts';
import { handlebarsDetail, handlebarsLine, hb, HTML_COMPILE_OPTIONS } from './template-helpers.ts';

/**
 * Compile-time brand tokens: `[[brand.primaryColor]]` etc. are replaced before MJML compiles,
 * for the attributes MJML type-checks (colours). Everything else uses `{{brand.*}}` at render.
 */
const BRAND_TOKEN = /\[\[\s*brand\.([A-Za-z]+)\s*\]\]/g;

function xmlEscape(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`).replace(/\r?\n/g, ' ');
}

function brandPreprocessor(brand: BrandValues): (xml: string) => string {
  return (xml) =>
    xml.replace(BRAND_TOKEN, (_m, name: string) => {
      const value = (brand as unknown as Record<string, string | null>)[name];
      return xmlEscape(value ?? '');
    });
}

/**
 * MJML's parser is lenient: an unclosed or mismatched mj-* tag is silently "repaired" (content
 * dropped) and passes strict validation. mj-* tags never nest inside HTML content, so checking
 * their balance catches it, with the line.
 */
function checkMjmlTags(file: string, source: string): void {
  const where = displayPath(file);
  const stack: { name: string; line: number }[] = [];
  const tag = /<!--[\s\S]*?-->|<(\/?)(mjml|mj-[a-z-]+)\b(?:"[^"]*"|'[^']*'|[^'">])*?(\/?)>/g;
  for (const m of source.matchAll(tag)) {
    if (!m[2]) continue; // a comment
    const name = m[2];
    const line = lineAt(source, m.index ?? 0);
    if (m[3] === '/') continue; // <mj-x … />
    if (m[1] !== '/') {
      stack.push({ name, line });
      continue;
    }
    const open = stack.pop();
    if (!open) throw new TemplateError(`${where}:${line}: </${name}> has no opening tag`, { file: where, line });
    if (open.name !== name) {
      throw new TemplateError(`${where}:${open.line}: <${open.name}> is not closed (found </${name}> on line ${line})`, {
        file: where,
        line: open.line,
      });
    }
  }
  const open = stack.pop();
  if (open) throw new TemplateError(`${where}:${open.line}: <${open.name}> is not closed`, { file: where, line: open.line });
}

/** For "unexpected end of file" parse errors: the line of the block that was never closed. */
function unclosedBlockLine(source: string): { name: string; line: number } | null {
  const stack: { name: string; line: number }[] = [];
  const mustache = /\{\{!--[\s\S]*?--\}\}|\{\{![\s\S]*?\}\}|\{\{~?\s*([#^/])\s*>?\s*([^\s}~]+)/g;
  for (const m of source.matchAll(mustache)) {
    if (!m[1]) continue;
    const name = m[2] ?? '';
    if (m[1] === '/') stack.pop();
    else stack.push({ name, line: lineAt(source, m.index ?? 0) });
  }
  return stack.pop() ?? null;
}

/** Per-file checks with the file's own line numbers: Handlebars syntax, helpers, brand tokens, tags. */
export function lintSource(file: string, source: string): void {
  for (const m of source.matchAll(BRAND_TOKEN)) {
    const name = m[1] ?? '';
    if (!['productName', 'logoUrl', 'primaryColor', 'postalAddress', 'locale'].includes(name)) {
      const line = lineAt(source, m.index ?? 0);
      throw new TemplateError(`${displayPath(file)}:${line}: unknown brand token [[brand.${name}]]`, {
        file: displayPath(file),
        line,
      });
    }
  }
  try {
    hb.precompile(source, HTML_COMPILE_OPTIONS);
  } catch (error) {
    const detail = handlebarsDetail(error);
    const unclosed = /got 'EOF'/.test(detail) ? unclosedBlockLine(source) : null;
    if (unclosed) {
      throw new TemplateError(
        `${displayPath(file)}:${unclosed.line}: Handlebars: {{#${unclosed.name}}} is never closed (expected {{/${unclosed.name}}})`,
        { file: displayPath(file), line: unclosed.line },
      );
    }
    const line = handlebarsLine(error);
    throw new TemplateError(`${displayPath(file)}:${line ?? '?'}: Handlebars: ${detail}`, {
      file: displayPath(file),
      ...(line !== undefined ? { line } : {}),
    });
  }
  checkMjmlTags(file, source);
}

interface MjmlIssue {
  line: number;
  message: string;
  tagName: string;
  formattedMessage: string;
}

/** Turns MJML's validation errors into one TemplateError naming file:line (partials included). */
function mjmlError(templateFile: string, issues: MjmlIssue[]): TemplateError {
  const described = issues.map((issue) => {
    // "Line 4 of /abs/partials/footer.mjml, included at line 10 of file /abs/x.mjml (mj-foo) — msg"
    const m = /^Line (\d+) of (.+?)(?:, included at (.+?))? \(([^)]*)\) — ([\s\S]*)$/.exec(issue.formattedMessage ?? '');
    const file = m?.[2] ? displayPath(m[2]) : displayPath(templateFile);
    const line = m ? Number(m[1]) : issue.line;
    const included = m?.[3]
      ? ` (included at ${m[3].replace(/of file (\S+)/g, (_s, f: string) => `of ${displayPath(f)}`)})`
      : '';
    return { file, line, text: `${file}:${line}: <${issue.tagName}> ${m?.[5] ?? issue.message}${included}` };
  });
  const first = described[0];
  const more = described.length > 1 ? `\n${described.slice(1).map((d) => `  ${d.text}`).join('\n')}` : '';
  return new TemplateError(`MJML validation failed: ${first?.text ?? displayPath(templateFile)}${more}`, {
    ...(first ? { file: first.file, line: first.line } : { file: displayPath(templateFile) }),
  });
}

interface MjmlNode {
  tagName?: string;
  line?: number;
  file?: string;
  absoluteFilePath?: string;
  errors?: { type?: string }[];
  children?: MjmlNode[];
}

/** MJML turns an unreadable or denied mj-include into a comment, even in strict mode. */
function findIncludeFailure(node: MjmlNode | undefined): MjmlNode | null {
  if (!node) return null;
  if (node.errors?.some((e) => e.type === 'include' || e.type === 'include-denied')) return node;
  for (const child of node.children ?? []) {
    const found = findIncludeFailure(child);
    if (found) return found;
  }
  return null;
}

export async function compileMjml(file: string, source: string, brand: BrandValues): Promise<string> {
  try {
    const result = await mjml2html(source, {
      validationLevel: 'strict',
      filePath: file,
      actualPath: file,
      ignoreIncludes: false,
      preprocessors: [brandPreprocessor(brand)],
      fonts: {},
      keepComments: false,
    });
    if (result.errors?.length) throw mjmlError(file, result.errors as MjmlIssue[]);
    const failedInclude = findIncludeFailure(result.json as unknown as MjmlNode);
    if (failedInclude) {
      const where = displayPath(failedInclude.absoluteFilePath ?? failedInclude.file ?? file);
      throw new TemplateError(
        `${where}:${failedInclude.line}: mj-include failed: the file is missing or outside the template folder`,
        { file: where, line: failedInclude.line },
      );
    }
    return result.html;
  } catch (error) {
    if (error instanceof TemplateError) throw error;
    const issues = (error as { errors?: MjmlIssue[] }).errors;
    if (Array.isArray(issues) && issues.length) throw mjmlError(file, issues);
    throw new TemplateError(`${displayPath(file)}: MJML: ${(error as Error).message ?? String(error)}`, {
      file: displayPath(file),
    });
  }
}

/** The file and the files it includes (recursively), with their sources. */
async function withIncludes(file: string, source: string, seen = new Set<string>()): Promise<{ file: string; source: string }[]> {
  if (seen.has(file)) return [];
  seen.add(file);
  const out = [{ file, source }];
  for (const m of source.matchAll(/<mj-include\b[^>]*?\bpath\s*=\s*"([^"]+)"/g)) {
    const included = path.resolve(path.dirname(file), m[1] ?? '');
    let text: string;
    try {
      text = await readFile(included, 'utf8');
    } catch {
      continue; // reported by compileMjml
    }
    out.push(...(await withIncludes(included, text, seen)));
  }
  return out;
}

/**
 * MJML silently drops text that is not inside an ending tag (mj-text, mj-button, mj-raw…) or an
 * attribute, so a `{{#if}}` placed between two mj-sections would vanish and its content always
 * show. Every placeholder of the template and its partials must reach the compiled HTML.
 */
export async function checkPlaceholdersSurvive(file: string, source: string, html: string): Promise<void> {
  for (const part of await withIncludes(file, source)) {
    const text = part.source;
    for (const m of text.matchAll(/\{\{[\s\S]*?\}\}/g)) {
      if (m[0].startsWith('{{!')) continue; // comments
      if (html.includes(m[0])) continue;
      const where = displayPath(part.file);
      const line = lineAt(text, m.index ?? 0);
      throw new TemplateError(
        `${where}:${line}: ${m[0]} does not reach the compiled HTML: MJML drops text outside mj-text, mj-button, mj-raw or an attribute value (wrap block helpers around MJML elements in <mj-raw>)`,
        { file: where, line },
      );
    }
  }
}
