// docs-sync: `npm run docs` rewrites the generated section of DEPLOYMENT_GUIDE.md (the script
// reference: each script's --help, which is its header comment). test/docs.test.ts fails when the
// guide differs from what this would write, so a changed flag or variable cannot leave the guide behind.
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '')
export const guidePath = path.join(root, 'DEPLOYMENT_GUIDE.md')

export function scripts(): string[] {
  return readdirSync(path.join(root, 'deploy')).filter((f) => f.endsWith('.mts')).sort()
}

export function help(script: string): string {
  const tsx = path.join(root, 'node_modules/tsx/dist/esm/index.mjs')
  return execFileSync(process.execPath, ['--import', tsx, path.join(root, 'deploy', script), '--help'], { encoding: 'utf8', cwd: root })
}

export function scriptReference(): string {
  return scripts().map((s) => `### deploy/${s}\n\n\`\`\`text\n${help(s).trimEnd()}\n\`\`\`\n`).join('\n')
}

/** The text between <!-- name:start --> and <!-- name:end --> (exclusive). */
export function section(text: string, name: string): string {
  const start = text.indexOf(`<!-- ${name}:start -->`)
  const end = text.indexOf(`<!-- ${name}:end -->`)
  if (start < 0 || end < start) throw new Error(`DEPLOYMENT_GUIDE.md has no <!-- ${name}:start/end --> markers`)
  return text.slice(start + `<!-- ${name}:start -->`.length, end).replace(/^\n/, '').replace(/\n$/, '')
}

export function replaceSection(text: string, name: string, body: string): string {
  const start = text.indexOf(`<!-- ${name}:start -->`) + `<!-- ${name}:start -->`.length
  const end = text.indexOf(`<!-- ${name}:end -->`)
  return `${text.slice(0, start)}\n${body.trimEnd()}\n${text.slice(end)}`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const guide = readFileSync(guidePath, 'utf8')
  writeFileSync(guidePath, replaceSection(guide, 'script-reference', scriptReference()))
  console.log(`DEPLOYMENT_GUIDE.md: script reference rewritten for ${scripts().length} scripts`)
}
