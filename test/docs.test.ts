// The documentation is checked like code: README, DEPLOYMENT_GUIDE.md, .env.example, --help and the
// changelogs must agree with the scripts, so that a runbook cannot drift from what the scripts do.
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { guidePath, scriptReference, scripts, section } from './docs-sync.mts'
import { root, sandbox } from './helpers.ts'

const read = (f: string) => readFileSync(path.join(root, f), 'utf8')
const guide = readFileSync(guidePath, 'utf8')
const readme = read('README.md')
const envExample = read('.env.example')

/** Every variable a script reads: its own check.*('NAME') and process.env.NAME, plus the lib's for what it uses. */
function variablesRead(script: string): string[] {
  const src = read(`deploy/${script}`)
  const names = new Set<string>()
  const scan = (text: string) => {
    for (const m of text.matchAll(/\b(?:need|get|optional|localPath|remotePath|remoteName)\(\s*'([A-Z][A-Z0-9_]+)'/g)) names.add(m[1])
    for (const m of text.matchAll(/process\.env(?:\.([A-Z][A-Z0-9_]+)|\[\s*'([A-Z][A-Z0-9_]+)'\s*\])/g)) names.add(m[1] ?? m[2])
  }
  scan(src)
  const lib = read('deploy/lib/connect.mts')
  const fn = (name: string) => lib.slice(lib.indexOf(`export function ${name}`), lib.indexOf('\n}\n', lib.indexOf(`export function ${name}`)))
  if (/\bnomadConnection\(/.test(src)) {
    scan(fn('nomadConnection'))
    for (const n of ['NOMAD_CACERT', 'NOMAD_CLIENT_CERT', 'NOMAD_CLIENT_KEY', 'NOMAD_TLS_SERVER_NAME']) names.add(n)
  }
  if (/\bfollowDeployment\(|\bdeployPlanned\(/.test(src)) names.add('DEPLOY_POLL_SECONDS')
  if (/\bsshTarget\(/.test(src)) scan(fn('sshTarget'))
  return [...names].sort()
}

/** `npx tsx deploy/...` commands in the bash blocks of a markdown file (comments stripped). */
function commandsIn(markdown: string): { script: string; args: string[]; line: string }[] {
  const blocks = [...markdown.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => m[1])
  return blocks.flatMap((b) => b.split('\n'))
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l.startsWith('npx tsx deploy/'))
    .map((line) => {
      const [, , file, ...args] = line.split(/\s+/)
      return { script: file.replace(/^deploy\//, ''), args, line }
    })
}

describe('README', () => {
  it('has a table line for every script in deploy/, and no line for a script that does not exist', () => {
    const listed = [...readme.matchAll(/^\| `deploy\/([a-z_]+\.mts)` \|/gm)].map((m) => m[1]).sort()
    expect(listed).toEqual(scripts())
  })

  it('links the guide, SECURITY.md and the changelogs', () => {
    for (const link of ['DEPLOYMENT_GUIDE.md', 'SECURITY.md', 'changelogs/']) expect(readme).toContain(`](${link})`)
  })

  it('shows the test command that .ci/run calls', () => {
    expect(read('.ci/run')).toMatch(/^npm test$/m)
    expect(readme).toMatch(/^npm test$/m)
  })
})

describe('every documented command runs', () => {
  const all = [...commandsIn(readme).map((c) => ({ ...c, doc: 'README.md' })), ...commandsIn(guide).map((c) => ({ ...c, doc: 'DEPLOYMENT_GUIDE.md' }))]

  it('finds commands to check (the runbooks are not empty)', () => {
    expect(all.length).toBeGreaterThan(15)
  })

  it.each(all.map((c) => [`${c.doc}: ${c.line}`, c] as const))('%s', async (_name, c) => {
    expect(scripts()).toContain(c.script)
    const sb = sandbox()
    sb.stub('vault')
    sb.stub('docker')
    const args = c.args.filter((a, i) => a !== '--env-file' && c.args[i - 1] !== '--env-file' && a !== '--dry-run')
    const r = await sb.run(c.script, [...args, '--dry-run', '--env-file', path.join(root, '.env.example')], { cwd: root })
    // A documented command may be refused for want of input (revert without a version prints the history),
    // never for a flag the script does not know.
    expect(r.stderr).not.toMatch(/usage:|Unknown option|Unexpected argument/)
    expect([0, 2]).toContain(r.code)
    // --dry-run runs nothing that changes anything: no nomad/vault/docker call that writes.
    const writes = sb.calls().filter((x) => /^(job (run|revert|promote)|var put|kv (put|patch)|build|push)\b/.test(x.argv.join(' ')))
    expect(writes).toEqual([])
  })
})

describe('variables', () => {
  it.each(scripts())('%s: every variable it reads is in .env.example, in the guide, and in its --help', (script) => {
    const vars = variablesRead(script)
    expect(vars.length).toBeGreaterThan(0)
    const help = read(`deploy/${script}`).split('\n').filter((l) => l.startsWith('//')).join('\n')
    for (const v of vars) {
      expect(envExample, `${v} (read by ${script}) missing from .env.example`).toMatch(new RegExp(`^#? ?${v}=`, 'm'))
      expect(guide, `${v} (read by ${script}) missing from DEPLOYMENT_GUIDE.md`).toContain(v)
      expect(help, `${v} (read by ${script}) missing from its --help`).toContain(v)
    }
  })

  it('.env.example documents each variable with a comment above it', () => {
    const lines = envExample.split('\n')
    lines.forEach((l, i) => {
      if (/^#? ?[A-Z][A-Z0-9_]+=/.test(l)) expect(lines.slice(Math.max(0, i - 3), i).some((p) => /^# [^A-Z]|^# [A-Z][a-z]/.test(p)), `no comment above ${l}`).toBe(true)
    })
  })
})

describe('DEPLOYMENT_GUIDE.md', () => {
  it('its script reference is every script\'s current --help (run `npm run docs` after changing one)', () => {
    expect(section(guide, 'script-reference')).toBe(scriptReference().trimEnd())
  })

  it('covers the sections the team asked for', () => {
    for (const h of ['Prerequisites', 'One-time manual Nomad client configuration', 'First install of Agent Economique', 'Routine agent release',
      'First install of the CEDRA storefront', 'Routine storefront release', 'Rollback', 'Cron and CI', 'Monitoring and troubleshooting', 'Adding a new service'])
      expect(guide).toContain(h)
  })
})

describe('changelogs', () => {
  const files = readdirSync(path.join(root, 'changelogs')).filter((f) => f.endsWith('.md')).sort()
  it('has one file per release, named <date>-v<version>.md, the latest matching package.json', () => {
    expect(files.length).toBeGreaterThan(0)
    for (const f of files) expect(f).toMatch(/^\d{4}-\d{2}-\d{2}-v\d+\.\d+\.\d+\.md$/)
    const latest = files.map((f) => f.match(/-v(\d+)\.(\d+)\.(\d+)\.md$/)!.slice(1).map(Number)).sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]).at(-1)!
    expect(latest.join('.')).toBe(JSON.parse(read('package.json')).version)
  })
  it('names every script in deploy/ in some release', () => {
    const all = files.map((f) => read(`changelogs/${f}`)).join('\n')
    for (const s of scripts()) expect(all).toContain(s)
  })
})
