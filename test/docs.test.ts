// The documentation is checked like code: README, DEPLOYMENT_GUIDE.md, .env.example, --help and the
// changelogs must agree with the scripts, so that a runbook cannot drift from what the scripts do.
// - every `npx tsx deploy/...` line of README.md and the guide runs (--dry-run, .env.example);
// - every variable a script reads is in .env.example, the guide and its --help;
// - every message quoted in the guide's troubleshooting section is PROVOKED by running the script
//   that prints it (stubs for nomad/vault/docker, the real sshd, git, go and openssl), with the exit
//   code the guide gives; a quoted message without a scenario, or a scenario without a message, fails;
// - the manual Nomad client configuration in the guide is the very text the scripts print;
// - the agent binary rollback in the guide is the command deploy_binary prints.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { guidePath, scriptReference, scripts, section } from './docs-sync.mts'
import { AGENT_SHA, holdLock, makeCerts, root, sandbox, stageBinary, type Result, type Sandbox } from './helpers.ts'
import { ensureUsers, freePort, goEnv, requireTools, startSshd, userDir, USERS, type Sshd } from './sshd.ts'

const read = (f: string) => readFileSync(path.join(root, f), 'utf8')
const guide = readFileSync(guidePath, 'utf8')
const readme = read('README.md')
const envExample = read('.env.example')

/** Every variable a script reads: its own check.*('NAME') and process.env.NAME, plus the lib's for what it uses. */
function variablesRead(script: string): string[] {
  const src = read(`deploy/${script}`)
  const names = new Set<string>()
  const scan = (text: string) => {
    for (const m of text.matchAll(/\b(?:need|get|optional|address|localPath|remotePath|remoteName|seconds|kvPath)\(\s*'([A-Z][A-Z0-9_]+)'/g)) names.add(m[1])
    for (const m of text.matchAll(/process\.env(?:\.([A-Z][A-Z0-9_]+)|\[\s*'([A-Z][A-Z0-9_]+)'\s*\])/g)) names.add(m[1] ?? m[2])
  }
  scan(src)
  // The variable a volume script names for the shared run (volumeScript({ variable: 'ARANGO_DATA_DIR' })).
  for (const m of src.matchAll(/\bvariable: '([A-Z][A-Z0-9_]+)'/g)) names.add(m[1])
  // The lib's exported functions that the script calls read variables too (nomadConnection, sshTargets,
  // start...), and so do the lib functions those call (volumeScript calls sshTargets...): followed to the end.
  let reached = src
  const seen = new Set<string>()
  for (let more = true; more;) {
    more = false
    for (const lib of ['deploy/lib/env.mts', 'deploy/lib/nomad.mts', 'deploy/lib/deployment.mts', 'deploy/lib/ssh.mts', 'deploy/lib/tls.mts', 'deploy/lib/volume.mts', 'deploy/lib/nodes.mts', 'deploy/lib/identity.mts']) {
      const text = read(lib)
      for (const m of text.matchAll(/^export (?:async )?function (\w+)/gm)) {
        if (seen.has(m[1]) || !new RegExp(`\\b${m[1]}\\(`).test(reached)) continue
        seen.add(m[1])
        more = true
        const body = text.slice(m.index, text.indexOf('\n}\n', m.index))
        scan(body)
        reached += body
      }
    }
  }
  if (/\bnomadConnection\(/.test(reached)) for (const n of ['NOMAD_CACERT', 'NOMAD_CLIENT_CERT', 'NOMAD_CLIENT_KEY', 'NOMAD_TLS_SERVER_NAME']) names.add(n)
  if (/\bfollowDeployment\(|\bdeployPlanned\(/.test(reached)) names.add('DEPLOY_POLL_SECONDS')
  for (const secret of ['NOMAD_TOKEN', 'VAULT_TOKEN', 'CONSUL_HTTP_TOKEN', 'REGISTRY_PASSWORD']) names.delete(secret) // redact() only
  if (/\bnomadConnection\(/.test(reached)) names.add('NOMAD_TOKEN')
  return [...names].sort()
}

/** `npx tsx deploy/...` commands in the bash blocks of a markdown file (comments stripped). */
function commandsIn(markdown: string): { script: string; args: string[]; line: string }[] {
  const blocks = [...markdown.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => m[1])
  return blocks.flatMap((b) => b.split('\n'))
    // The command alone: what follows a redirection, a pipe or a list operator is the shell's.
    .map((l) => l.replace(/\s+#.*$/, '').replace(/\s+(>|\||;|&&|\|\|)\s.*$/, '').trim())
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
  const listed = [...commandsIn(readme).map((c) => ({ ...c, doc: 'README.md' })), ...commandsIn(guide).map((c) => ({ ...c, doc: 'DEPLOYMENT_GUIDE.md' }))]
  // The same script with the same flags runs once (the env file is .env.example for all).
  const key = (c: { script: string; args: string[] }) => [c.script, ...c.args.filter((a, i) => a !== '--env-file' && c.args[i - 1] !== '--env-file' && a !== '--dry-run')].join(' ')
  const all = listed.filter((c, i) => listed.findIndex((d) => key(d) === key(c)) === i)

  it('finds commands to check (the runbooks are not empty)', () => {
    expect(listed.length).toBeGreaterThan(15)
  })

  it('the guide runs every script somewhere in a runbook', () => {
    const used = new Set(commandsIn(guide).map((c) => c.script))
    expect(scripts().filter((s) => !used.has(s))).toEqual([])
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
    // Every gap at once: the variables missing from each place.
    const missing = {
      '.env.example': vars.filter((v) => !new RegExp(`^#? ?${v}=`, 'm').test(envExample)),
      'DEPLOYMENT_GUIDE.md': vars.filter((v) => !guide.includes(v)),
      [`the --help of ${script}`]: vars.filter((v) => !help.includes(v)),
    }
    expect(missing, `variables read by ${script}`).toEqual({ '.env.example': [], 'DEPLOYMENT_GUIDE.md': [], [`the --help of ${script}`]: [] })
  })

  it('.env.example documents each variable with a comment above it', () => {
    const lines = envExample.split('\n')
    const assignment = /^#? ?[A-Z][A-Z0-9_]+=/
    lines.forEach((l, i) => {
      if (assignment.test(l)) expect(lines.slice(Math.max(0, i - 3), i).some((p) => /^# \S/.test(p) && !assignment.test(p)), `no comment above ${l}`).toBe(true)
    })
  })
})

describe('DEPLOYMENT_GUIDE.md', () => {
  it('its script reference is every script\'s current --help (run `npm run docs` after changing one)', () => {
    expect(section(guide, 'script-reference')).toBe(scriptReference().trimEnd())
  })

  it('covers the sections the team asked for', () => {
    for (const h of ['Prerequisites', 'One-time manual Nomad client configuration', 'First install of Agent Economique', 'Routine agent release',
      'First install of the CEDRA storefront', 'Routine storefront release', 'Rollback', 'Cron and CI', 'Monitoring', 'Troubleshooting', 'Adding a new service'])
      expect(guide).toContain(h)
  })

  it('names only Consul services and check paths that the jobs define', () => {
    const jobs = readdirSync(path.join(root, 'jobs')).filter((f) => f.endsWith('.nomad')).map((f) => read(`jobs/${f}`)).join('\n')
    const services = new Set([...jobs.matchAll(/^\s*name\s*=\s*"([a-z0-9-]+)"/gm)].map((m) => m[1]))
    const named = [...guide.matchAll(/\b([a-z0-9-]+)\.service\.consul\b/g)].map((m) => m[1].replace(/^(canary|lang-[a-z]+|haproxy)\./, ''))
    expect(named.length).toBeGreaterThan(0)
    for (const s of named) expect(services, `${s}.service.consul`).toContain(s)
    for (const m of guide.matchAll(/`([a-z0-9-]+)`\s+Consul service/g)) expect(services).toContain(m[1])
    for (const p of ['/api/health', '/metrics']) {
      expect(guide).toContain(p)
      expect(jobs).toContain(p)
    }
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
  it('names every script in deploy/ in some release, and each file its date and version in its title', () => {
    const all = files.map((f) => read(`changelogs/${f}`)).join('\n')
    for (const s of scripts()) expect(all).toContain(s)
    for (const f of files) {
      const [, date, version] = f.match(/^(\d{4}-\d{2}-\d{2})-v(\d+\.\d+\.\d+)\.md$/)!
      expect(read(`changelogs/${f}`).split('\n', 1)[0]).toBe(`# v${version} — ${date}`)
    }
  })
})

// ---------------------------------------------------------------------------------------------
// Troubleshooting: each quoted message, provoked.

type Entry = { title: string; exit: number | undefined; messages: string[] }

/** The troubleshooting section: each `### title`, its quoted messages (```text blocks) and its **Exit N**. */
function troubleshooting(): Entry[] {
  return section(guide, 'troubleshooting').split(/^### /m).slice(1).map((part) => ({
    title: part.split('\n', 1)[0].trim(),
    exit: Number(part.match(/\*\*Exit (\d+)\*\*/)?.[1] ?? NaN),
    messages: [...part.matchAll(/```text\n([\s\S]*?)\n```/g)].map((m) => m[1]),
  }))
}

/**
 * A quoted message as a pattern: its fixed fragments in order, `…` standing for anything on the same
 * line; anchored at the start and end of a line (unless it starts or ends with `…`).
 */
export function messagePattern(message: string): RegExp {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  return new RegExp(`^${message.split('…').map(escape).join('[^\\n]*?')}$`, 'm')
}

/** Did the script print the message (on stdout or on stderr, each read whole)? */
function printed(r: Result, message: string): boolean {
  const re = messagePattern(message)
  return re.test(r.stderr) || re.test(r.stdout)
}

// The cluster, the servers and the source trees each scenario needs.

const CLEAN = { DEPLOY_POLL_SECONDS: '0.05' }
const FIXTURE = path.join(root, 'test/fixtures/agent')
let sshd: Sshd | undefined
const remoteDirs: string[] = []

/** The nomad double run directly (setting up the cluster, not under test). */
function nomadCli(sb: Sandbox, ...args: string[]): string {
  return execFileSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
}
/**
 * Two agent releases deployed (versions 0 and 1: `first`, then AGENT_SHA), both recorded on the host;
 * `drop` is removed from the record's builds (deploy_binary no longer keeps it).
 */
function agentReleases(sb: Sandbox, { first = 'a'.repeat(64), drop }: { first?: string; drop?: string } = {}) {
  for (const sha of [first, AGENT_SHA]) {
    stageBinary(sb, sha)
    nomadCli(sb, 'job', 'run', '-detach', `-var=binary_path=/root/data/agent-${sha}`, `-var=binary_sha256=${sha}`, '-var=commit=0123456789ab', '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', path.join(root, 'jobs/agent.nomad'))
    for (let i = 0; i < 3; i++) nomadCli(sb, 'job', 'deployments', '-latest', '-json', 'agent-economique')
  }
  const record = sb.readState().vars['nomad/jobs/agent-economique/releases']
  record.Items.binaries = JSON.stringify(JSON.parse(record.Items.binaries).filter((b: { sha256: string }) => b.sha256 !== drop))
  sb.setState({ vars: { ...sb.readState().vars, 'nomad/jobs/agent-economique/releases': record } })
}
/** Register a storefront version with this tag and let its deployment go where it stops by itself. */
function storefrontVersion(sb: Sandbox, tag: string, reads = 3) {
  nomadCli(sb, 'job', 'run', '-detach', `-var=image_tag=${tag}`, path.join(root, 'jobs/cedra-storefront.nomad'))
  for (let i = 0; i < reads; i++) nomadCli(sb, 'job', 'deployments', '-latest', '-json', 'cedra-storefront')
}
/** Two stable storefront versions (0 and 1), as deploy + promote leave them. */
function twoStorefrontVersions(sb: Sandbox) {
  storefrontVersion(sb, 'aaaaaaaaaaaa')
  storefrontVersion(sb, 'bbbbbbbbbbbb')
  nomadCli(sb, 'job', 'promote', '-detach', 'cedra-storefront')
  for (let i = 0; i < 3; i++) nomadCli(sb, 'job', 'deployments', '-latest', '-json', 'cedra-storefront')
}
/** A git checkout of a storefront app (Dockerfile, one commit); `dirty` leaves a change uncommitted. */
function storefrontSource(sb: Sandbox, dirty = false) {
  const src = path.join(sb.dir, 'cedra-storefront')
  mkdirSync(src, { recursive: true })
  writeFileSync(path.join(src, 'Dockerfile'), 'FROM oven/bun:1\nWORKDIR /app\nCOPY . .\nRUN bun install --frozen-lockfile && bun run build\n')
  writeFileSync(path.join(src, 'package.json'), '{"name":"cedra-storefront"}\n')
  const git = (...a: string[]) => execFileSync('git', ['-c', 'user.name=Test', '-c', 'user.email=test@example.com', ...a], { cwd: src, stdio: 'pipe' })
  git('init', '-q', '-b', 'main')
  git('add', '-A')
  git('commit', '-q', '-m', 'first')
  if (dirty) writeFileSync(path.join(src, 'page.tsx'), 'export default function Page() { return null }\n')
  return { STOREFRONT_SOURCE_DIR: src, STOREFRONT_IMAGE: 'registry.example.internal/cedra/storefront' }
}
/** The DEPLOY_SSH_* variables of the test sshd, and a fresh remote directory owned by the login user. */
function server(extra: Record<string, string> = {}): Record<string, string> {
  if (!sshd) throw new Error('sshd not started')
  const base = userDir(USERS.dash)
  remoteDirs.push(base)
  return { ...sshd.env(USERS.dash), ARANGO_DATA_DIR: `${base}/arangodb_data`, VALKEY_DATA_DIR: `${base}/valkey_data`, AGENT_REMOTE_DIR: `${base}/data`, ...goEnv, ...extra }
}
const https = (certs: ReturnType<typeof makeCerts>, extra: Record<string, string | undefined> = {}) =>
  ({ NOMAD_ADDR: 'https://nomad.example.internal:4646', NOMAD_TOKEN: 'test-token-0001', NOMAD_CACERT: certs.ca, ...extra })

/** Run a script in a fresh sandbox (nomad, vault and docker doubles on PATH) after `setup`. */
async function scenario(script: string, args: string[], setup: (sb: Sandbox) => Record<string, string | undefined> | void = () => {}) {
  const sb = sandbox()
  sb.stub('vault')
  sb.stub('docker')
  // deploy_nomad deploys the build deploy_binary records: one is recorded unless the scenario says otherwise.
  if (script === 'deploy_nomad.mts') stageBinary(sb)
  const env = setup(sb) ?? {}
  // Against the test sshd: its Nomad client has no static host volume (the volume scripts register theirs on Nomad 2.0).
  if (env.DEPLOY_SSH_PORT && !sb.readState().nodes) sb.setState({ nodes: [{ Name: 'node-1', Address: '127.0.0.1' }] })
  return sb.run(script, args, { env: { ...CLEAN, ...env } })
}
const VAULT = { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'test-vault-token-0001', REVALIDATE_SECRET: 'test-revalidate-0001', SESSION_SECRET: 'test-session-0001' }
const ARANGO_VAR = 'nomad/jobs/arangodb-agent-economique'

/**
 * One scenario per quoted message: `key` is a piece of the message as the guide quotes it (each
 * quoted message must contain exactly one key), `run` runs the script that prints it.
 */
const SCENARIOS: { key: string; run: () => Promise<Result> }[] = [
  // --- configuration, tools, flags ---
  { key: 'NOMAD_TOKEN is not set', run: () => scenario('deploy_nomad.mts', [], (sb) => https(makeCerts(sb.dir), { NOMAD_TOKEN: undefined })) },
  { key: 'nomad not found on PATH', run: () => scenario('deploy_nomad.mts', [], (sb) => ({ PATH: sb.pathWithout('nomad') })) },
  { key: 'Unknown option', run: () => scenario('deploy_storefront.mts', ['--allow_dirty']) },
  // --- TLS ---
  { key: 'expired on', run: () => scenario('deploy_nomad.mts', [], (sb) => { const c = makeCerts(sb.dir); return https(c, { NOMAD_CLIENT_CERT: c.expired, NOMAD_CLIENT_KEY: c.key }) }) },
  { key: 'expires in', run: () => scenario('deploy_nomad.mts', [], (sb) => { const c = makeCerts(sb.dir); return https(c, { NOMAD_CACERT: c.soon }) }) },
  { key: 'does not match NOMAD_CLIENT_CERT', run: () => scenario('deploy_nomad.mts', [], (sb) => { const c = makeCerts(sb.dir); return https(c, { NOMAD_CLIENT_CERT: c.cert, NOMAD_CLIENT_KEY: c.wrongKey }) }) },
  { key: 'was not issued by NOMAD_CACERT', run: () => scenario('deploy_nomad.mts', [], (sb) => { const c = makeCerts(sb.dir); return https(c, { NOMAD_CACERT: c.otherCa, NOMAD_CLIENT_CERT: c.cert, NOMAD_CLIENT_KEY: c.key }) }) },
  {
    // The servers' certificate is not signed by NOMAD_CACERT: the double sees no usable CA.
    key: 'TLS handshake with Nomad', run: () => scenario('deploy_nomad.mts', [], (sb) => {
      sb.stub('nomad', `#!/bin/sh\nNOMAD_CACERT=/nonexistent/ca.pem exec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(root, 'test/stubs/nomad.mjs'))} "$@"\n`)
      return https(makeCerts(sb.dir))
    }),
  },
  // --- the cluster ---
  { key: 'Nomad at … refused the token (403)', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ mode: 'forbidden' })) },
  { key: 'cannot reach Nomad at …: a connection problem (…)', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ mode: 'unreachable' })) },
  { key: 'no answer within DEPLOY_COMMAND_TIMEOUT', run: () => scenario('deploy_nomad.mts', [], (sb) => { sb.setState({ mode: 'hang' }); return { DEPLOY_COMMAND_TIMEOUT: '1' } }) },
  {
    key: 'does not parse', run: () => scenario('deploy_nomad.mts', [], (sb) => {
      // The job file as the cluster reads it: one closing brace short.
      const broken = path.join(sb.dir, 'agent.nomad')
      writeFileSync(broken, read('jobs/agent.nomad').replace(/}\s*$/, ''))
      sb.stub('nomad', `#!/bin/bash\nargs=("$@"); last=$(( $# - 1 )); [ "$1" = job ] && [ "$2" = plan ] && args[$last]=${JSON.stringify(broken)}\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(root, 'test/stubs/nomad.mjs'))} "\${args[@]}"\n`)
    }),
  },
  { key: 'cannot place', run: () => scenario('deploy_valkey.mts', [], (sb) => void sb.setState({ placement: 'missing compatible host volumes' })) },
  { key: 'changed on the cluster since the plan', run: () => scenario('deploy_nomad.mts', [], (sb) => {
    nomadCli(sb, 'job', 'run', '-detach', '-var=binary_path=/root/data/agent-0', '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', path.join(root, 'jobs/agent.nomad'))
    sb.setState({ raceAfterPlan: true })
  }) },
  // --- deployments ---
  { key: 'rolling back to job version', run: () => scenario('deploy_nomad.mts', [], (sb) => {
    nomadCli(sb, 'job', 'run', '-var=binary_path=/root/data/agent-0', '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', path.join(root, 'jobs/agent.nomad'))
    sb.setState({ outcome: 'failed' })
  }) },
  { key: '(--timeout); it goes on in Nomad', run: () => scenario('deploy_nomad.mts', ['--timeout', '1'], (sb) => void sb.setState({ polls: 100_000 })) },
  { key: 'is not healthy yet', run: () => scenario('promote_storefront.mts', [], (sb) => {
    storefrontVersion(sb, 'aaaaaaaaaaaa')
    sb.setState({ polls: 100_000 })
    storefrontVersion(sb, 'bbbbbbbbbbbb', 0)
  }) },
  { key: 'nothing to promote', run: () => scenario('promote_storefront.mts', [], (sb) => storefrontVersion(sb, 'aaaaaaaaaaaa')) },
  { key: 'give the version, tag or commit to go back to', run: () => scenario('revert_storefront.mts', [], twoStorefrontVersions) },
  { key: 'is the current version of', run: () => scenario('revert_storefront.mts', ['1'], twoStorefrontVersions) },
  { key: 'has no version tagged', run: () => scenario('revert_storefront.mts', ['storefront-0000aaaa0000'], twoStorefrontVersions) },
  // --- releases: the job lock, the agent's builds ---
  { key: 'another run holds the lock of', run: () => scenario('deploy_nomad.mts', [], (sb) => void holdLock(sb, 'agent-economique')) },
  { key: 'nothing to deploy: agent-economique is not deployed', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ vars: {} })) },
  { key: 'run deploy_binary.mts with the same DEPLOY_SSH_HOST(S) first', run: () => scenario('deploy_nomad.mts', [], (sb) => void stageBinary(sb, AGENT_SHA, { hosts: ['10.0.0.9'] })) },
  { key: 'is not a build recorded on the servers', run: () => scenario('deploy_nomad.mts', ['--binary', 'ffffffffffff']) },
  { key: 'is no longer on the servers', run: () => scenario('revert_agent.mts', ['0'], (sb) => void agentReleases(sb, { drop: 'b'.repeat(64), first: 'b'.repeat(64) })) },
  { key: 'has no earlier good release to return to', run: () => scenario('revert_agent.mts', [], (sb) => void agentReleases(sb, { drop: 'a'.repeat(64) })) },
  { key: 'the deployment is done, but its release bookkeeping failed: nomad var put', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ fail: ['var put'] })) },
  { key: 'deployed before releases were named by their sha256', run: () => scenario('deploy_nomad.mts', [], (sb) => {
    sb.setState({ vars: {} })
    nomadCli(sb, 'job', 'run', '-detach', '-var=binary_path=/root/data/agent', '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', path.join(root, 'jobs/agent.nomad'))
  }) },
  // --- ArangoDB password (Nomad Variable) ---
  { key: 'does not exist (or NOMAD_TOKEN may not read it', run: () => scenario('deploy_arangodb.mts', []) },
  {
    key: 'was changed by someone else since it was read', run: () => scenario('put_arangodb_password.mts', [], (sb) => {
      // Another writer gets in between our read and our write.
      nomadCli(sb, 'var', 'put', '-out=none', ARANGO_VAR, 'root_password=the-old-password')
      sb.stub('nomad', `#!/bin/sh
if [ "$1 $2" = "var put" ] && [ ! -e "$STUB_STATE/raced" ]; then
  touch "$STUB_STATE/raced"
  ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(root, 'test/stubs/nomad.mjs'))} var put -force -out=none ${ARANGO_VAR} root_password=someone-elses >/dev/null </dev/null
fi
exec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(root, 'test/stubs/nomad.mjs'))} "$@"
`)
      return { ARANGO_ROOT_PASSWORD: 'test-arango-password-0001' }
    }),
  },
  // --- Vault ---
  { key: 'Vault at … refused the token (403)', run: () => scenario('put_storefront_secrets.mts', [], (sb) => { sb.setState({ token: 'the-only-accepted-token' }, 'vault'); return VAULT }) },
  {
    key: 'changed in Vault since it was read', run: () => scenario('put_storefront_secrets.mts', [], (sb) => {
      // Someone writes a new version between our read and our write.
      sb.setState({ secrets: { 'secret/data/cedra/prod': { versions: [{ data: { db_url: 'postgres://x' }, created_time: '2024-01-01T00:00:00Z' }] } }, raceAfterGet: { rotated_elsewhere: 'x' } }, 'vault')
      return VAULT
    }),
  },
  { key: 'holds no revalidate_secret', run: () => scenario('put_storefront_secrets.mts', [], () => ({ ...VAULT, REVALIDATE_SECRET: undefined })) },
  { key: 'is not in a KV version 2 mount', run: () => scenario('put_storefront_secrets.mts', [], (sb) => { sb.setState({ mounts: { 'secret/': 1 } }, 'vault'); return VAULT }) },
  // --- storefront build ---
  { key: 'has uncommitted changes', run: () => scenario('deploy_storefront.mts', [], (sb) => storefrontSource(sb, true)) },
  { key: 'does not exist: clone the storefront there', run: () => scenario('deploy_storefront.mts', [], (sb) => ({ ...storefrontSource(sb), STOREFRONT_SOURCE_DIR: path.join(sb.dir, 'nowhere') })) },
  { key: 'docker version failed', run: () => scenario('deploy_storefront.mts', [], (sb) => { sb.setState({ mode: 'no-daemon' }, 'docker'); return storefrontSource(sb) }) },
  { key: 'docker build of', run: () => scenario('deploy_storefront.mts', [], (sb) => { sb.setState({ mode: 'build-fails' }, 'docker'); return storefrontSource(sb) }) },
  { key: 'log in first: docker login', run: () => scenario('deploy_storefront.mts', [], (sb) => { sb.setState({ mode: 'push-denied' }, 'docker'); return storefrontSource(sb) }) },
  // --- ssh (the real sshd) ---
  // Nomad versions and the Vault / Consul flows (test/stubs/nomad.mjs plays each version).
  { key: 'has no token flow', run: () => scenario('deploy_valkey.mts', [], (sb) => { sb.setState({ version: '2.0.5' }); return { DEPLOY_VAULT_AUTH: 'token' } }) },
  { key: 'has no workload identity for Vault (1.7+)', run: () => scenario('deploy_valkey.mts', [], (sb) => { sb.setState({ version: '1.6.10' }); return { DEPLOY_VAULT_AUTH: 'identity' } }) },
  { key: 'cannot parse vault { role }', run: () => scenario('deploy_valkey.mts', [], (sb) => void sb.setState({ version: '1.10.5', cliVersion: '1.6.10' })) },
  { key: 'demands a Vault token', run: () => scenario('deploy_valkey.mts', [], (sb) => void sb.setState({ version: '1.6.10', vaultAllowUnauthenticated: false })) },
  { key: 'demands a Consul token', run: () => scenario('deploy_valkey.mts', [], (sb) => void sb.setState({ version: '1.9.7', consulAllowUnauthenticated: false })) },
  { key: 'would ignore the job\'s policies', run: () => scenario('deploy_valkey.mts', [], (sb) => void sb.setState({ version: '1.9.7', vaultDefaultIdentity: true })) },
  { key: 'has no Vault workload identity configured', run: () => scenario('deploy_valkey.mts', [], (sb) => { sb.setState({ version: '1.9.7' }); return { DEPLOY_VAULT_AUTH: 'identity' } }) },
  { key: 'would turn off TLS verification', run: () => scenario('deploy_nomad.mts', [], () => ({ NOMAD_SKIP_VERIFY: 'true' })) },
  { key: 'NOMAD_CAPATH is set', run: () => scenario('deploy_nomad.mts', [], () => ({ NOMAD_CAPATH: '/etc/ssl/certs' })) },
  { key: 'could not read the servers\' version', run: () => scenario('deploy_valkey.mts', [], (sb) => void sb.setState({ nodeRead: false })) },
  { key: 'is out of support', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ version: '1.6.10' })) },
  // Values and limits (test/security-values.test.ts has the same cases).
  { key: 'holds an unquoted #', run: () => scenario('put_arangodb_password.mts', [], (sb) => void writeFileSync(sb.envFile, 'ARANGO_ROOT_PASSWORD=Sup3r#Secret-long-pass\n')) },
  { key: 'values are taken exactly as written', run: () => scenario('put_arangodb_password.mts', [], () => ({ ARANGO_ROOT_PASSWORD: 'crlf-pass-long-enough\r' })) },
  { key: 'makes Node print every command', run: () => scenario('deploy_nomad.mts', [], () => ({ NODE_DEBUG: 'child_process' })) },
  { key: 'the longest wait a timer can hold', run: () => scenario('deploy_nomad.mts', [], () => ({ DEPLOY_COMMAND_TIMEOUT: '3000000' })) },
  { key: 'poll more often, or wait longer', run: () => scenario('deploy_nomad.mts', ['--timeout', '60'], () => ({ DEPLOY_POLL_SECONDS: '90' })) },
  {
    key: 'waits for promotion (deployment', run: () => scenario('deploy_storefront.mts', [], (sb) => {
      const env = storefrontSource(sb)
      storefrontVersion(sb, 'aaaaaaaaaaaa')
      storefrontVersion(sb, 'bbbbbbbbbbbb') // its canary healthy, waiting for promotion
      return env
    }),
  },
  { key: 'jobs need a look', run: () => scenario('status.mts', [], (sb) => {
    storefrontVersion(sb, 'aaaaaaaaaaaa')
    storefrontVersion(sb, 'bbbbbbbbbbbb') // its canary healthy, waiting for promotion
  }) },
  // Several clients: each ssh host is matched to one ready, eligible Nomad node with the job's driver.
  { key: 'is not a client of the Nomad cluster at', run: () => scenario('deploy_nomad.mts', [], () => ({ DEPLOY_SSH_HOST: '127.0.0.9' })) },
  { key: 'Nomad nodes (…): give the host by the address', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ nodes: [{ Name: 'client-1', Address: '127.0.0.1' }, { Name: 'client-1-old', Address: '127.0.0.1', Status: 'down' }] })) },
  { key: 'is not eligible for new allocations', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ nodes: [{ Name: 'client-1', Address: '127.0.0.1', SchedulingEligibility: 'ineligible' }] })) },
  { key: 'has no healthy raw_exec driver', run: () => scenario('deploy_nomad.mts', [], (sb) => void sb.setState({ nodes: [{ Name: 'client-1', Address: '127.0.0.1', Drivers: { docker: {}, raw_exec: { Detected: true, Healthy: false } } }] })) },
  {
    key: 'already has the dynamic host volume', run: () => scenario('deploy_arango_volume.mts', [], (sb) => {
      sb.setState({ nodes: [{ Name: 'client-1', Address: '127.0.0.1' }] })
      const node = (JSON.parse(nomadCli(sb, 'node', 'status', '-json')) as { ID: string }[])[0].ID
      execFileSync(path.join(sb.bin, 'nomad'), ['volume', 'register', '-'], { input: `type = "host"\nname = "arangodb_data"\nnode_id = "${node}"\nhost_path = "/srv/old-arangodb"\n`, env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' } })
      return server()
    }),
  },
  { key: 'DEPLOY_SSH_HOST and DEPLOY_SSH_HOSTS are both set', run: () => scenario('deploy_nomad.mts', [], () => ({ DEPLOY_SSH_HOSTS: '127.0.0.1,127.0.0.2' })) },
  { key: 'host key has CHANGED', run: () => scenario('deploy_arango_volume.mts', [], () => server({ DEPLOY_SSH_KNOWN_HOSTS: sshd!.changedKnownHosts })) },
  { key: 'host key is not in known_hosts', run: () => scenario('deploy_valkey_volume.mts', [], () => server({ DEPLOY_SSH_KNOWN_HOSTS: sshd!.emptyKnownHosts })) },
  { key: 'authentication refused', run: () => scenario('deploy_arango_volume.mts', [], () => server({ DEPLOY_SSH_KEY: sshd!.strangerKey })) },
  { key: 'failed: a connection problem: ', run: async () => { const port = String(await freePort()); return scenario('deploy_binary.mts', [], () => server({ DEPLOY_SSH_PORT: port, AGENT_SOURCE_DIR: FIXTURE })) } },
  { key: 'but is not a directory', run: () => scenario('deploy_valkey_volume.mts', [], () => { const env = server(); writeFileSync(env.VALKEY_DATA_DIR, 'a file\n'); return env }) },
  // --- the agent binary ---
  { key: 'is not a Go module', run: () => scenario('deploy_binary.mts', [], (sb) => server({ AGENT_SOURCE_DIR: sb.dir })) },
  { key: 'but AGENT_GOOS/AGENT_GOARCH build', run: () => scenario('deploy_binary.mts', [], () => server({ AGENT_SOURCE_DIR: FIXTURE, AGENT_GOARCH: process.arch === 'arm64' ? 'amd64' : 'arm64' })) },
]

describe('DEPLOYMENT_GUIDE.md troubleshooting: every quoted message is printed by a script', () => {
  const entries = troubleshooting()
  const quoted = entries.flatMap((e) => e.messages.map((message) => ({ ...e, message })))
  const scenarioOf = (message: string) => SCENARIOS.filter((s) => message.includes(s.key))

  beforeAll(async () => {
    requireTools()
    ensureUsers()
    sshd = await startSshd()
  })
  afterAll(async () => {
    await sshd?.stop()
    sshd = undefined
    for (const d of remoteDirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })

  it('has entries, each with a quoted message, the exit code, and a fix', () => {
    expect(entries.length).toBeGreaterThan(20)
    for (const e of entries) {
      expect(e.messages.length, `"${e.title}" quotes no message (a \`\`\`text block)`).toBeGreaterThan(0)
      expect(e.exit, `"${e.title}" gives no **Exit N**`).toBeGreaterThanOrEqual(0)
      for (const m of e.messages) expect(m.replace(/…/g, '').replace(/\s+/g, ' ').length, `too little fixed text in: ${m}`).toBeGreaterThan(20)
    }
  })

  it('has one scenario for each quoted message, and no scenario for a message the guide no longer quotes', () => {
    for (const q of quoted) expect(scenarioOf(q.message).map((s) => s.key), `"${q.title}": ${q.message}`).toHaveLength(1)
    for (const s of SCENARIOS) expect(quoted.filter((q) => q.message.includes(s.key)).map((q) => q.title), `scenario "${s.key}"`).toHaveLength(1)
  })

  it.each(quoted.map((q) => [`${q.title}: ${q.message.split('\n').find((l) => !l.startsWith('refused (') && l.replace(/…/g, '').trim().length > 15) ?? q.message}`, q] as const))('%s', async (_name, q) => {
    const [s] = scenarioOf(q.message)
    expect(s, 'no scenario').toBeDefined()
    const r = await s.run()
    expect(printed(r, q.message), `the guide quotes:\n${q.message}\n\nthe script printed:\n${r.output}`).toBe(true)
    expect(r.code, r.output).toBe(q.exit)
  })

  it('the pattern of a quoted message is exact: fixed text in order, on whole lines', () => {
    const re = messagePattern('✗ nothing to promote: its latest deployment … (version …) is …')
    expect(re.test('✗ nothing to promote: its latest deployment 1a2b3c4d (version 0) is successful: done.')).toBe(true)
    expect(re.test('✗ nothing to promote: its latest deployment 1a2b3c4d (version 0)\nis successful')).toBe(false)
    expect(re.test('  ✗ nothing to promote: its latest deployment 1a2b3c4d (version 0) is x')).toBe(false)
    expect(messagePattern('a … b').test('a x b c')).toBe(false)
    expect(messagePattern('refused (nothing was changed):\n  - NOMAD_TOKEN is not set').test('refused (nothing was changed):\n  - NOMAD_TOKEN is not set\n')).toBe(true)
  })
})

// ---------------------------------------------------------------------------------------------
// The manual Nomad client configuration, and the agent binary rollback: the text the scripts print.

/** The `client { ... }` block a script prints (its lines, dedented), with the test directory put back to the default. */
function clientBlock(stdout: string, dir: string, fallback: string): string {
  const lines = stdout.split('\n')
  const start = lines.findIndex((l) => /^\s*client \{$/.test(l))
  expect(start, `no "client {" block in:\n${stdout}`).toBeGreaterThanOrEqual(0)
  const indent = lines[start].match(/^\s*/)![0]
  const end = lines.findIndex((l, i) => i > start && l === `${indent}}`)
  return lines.slice(start, end + 1).map((l) => l.slice(indent.length)).join('\n').split(dir).join(fallback)
}
const hclBlocks = (text: string) => [...text.matchAll(/```hcl\n([\s\S]*?)\n```/g)].map((m) => m[1])

describe('DEPLOYMENT_GUIDE.md: the manual configuration and the agent rollback are what the scripts print', () => {
  const manual = section(guide, 'manual-config')

  beforeAll(async () => {
    requireTools()
    ensureUsers()
    sshd ??= await startSshd()
  })
  afterAll(async () => {
    await sshd?.stop()
    sshd = undefined
    for (const d of remoteDirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })

  it.each([
    ['deploy_arango_volume.mts', 'ARANGO_DATA_DIR', '/opt/arangodb_data', 'deploy_arangodb.mts'],
    ['deploy_valkey_volume.mts', 'VALKEY_DATA_DIR', '/opt/valkey_data', 'deploy_valkey.mts'],
  ])('%s (against the real sshd, Nomad 1.9): the guide holds its host_volume block, with the default %s; the job script reminds the same', async (script, name, fallback, jobScript) => {
    const env = server()
    // The static block is for Nomad before 1.10 (on 1.10+ the volume scripts register the volume).
    const r = await scenario(script, [], (sb) => { sb.setState({ version: '1.9.7' }); return env })
    expect(r.code, r.output).toBe(0)
    const block = clientBlock(r.stdout, env[name], fallback)
    expect(block).toContain(`path      = "${fallback}"`)
    expect(hclBlocks(manual)).toContain(block)
    // The job script's reminder is the same block (in a shape of its own: compare without layout).
    const job = await scenario(jobScript, [], (sb) => {
      sb.setState({ version: '1.9.7' })
      nomadCli(sb, 'var', 'put', '-out=none', ARANGO_VAR, 'root_password=test-arango-password-0001')
      return { [name]: fallback }
    })
    expect(job.code, job.output).toBe(0)
    const words = (s: string) => s.replace(/\s+/g, ' ').trim()
    expect(words(job.stdout)).toContain(words(block))
  })

  it('deploy_nomad: the guide holds its raw_exec plugin block', async () => {
    const r = await scenario('deploy_nomad.mts', [])
    expect(r.code, r.output).toBe(0)
    const plugin = r.stdout.match(/plugin "raw_exec" .*\}$/m)?.[0]
    expect(plugin).toBeDefined()
    expect(hclBlocks(manual)).toContain(plugin)
  })

  it('has no other block than those the scripts print', () => {
    expect(hclBlocks(manual)).toHaveLength(3)
  })

  it('deploy_binary (a real build and upload): the guide\'s agent release and rollback are what it does and prints, with the defaults', async () => {
    const env = server({ AGENT_SOURCE_DIR: FIXTURE })
    const r = await scenario('deploy_binary.mts', [], () => env)
    expect(r.code, r.output).toBe(0)
    // The rollback: the revert_agent line it prints among its useful commands, in the guide's 3.5.
    const list = r.stdout.match(/^ {2}(npx tsx deploy\/revert_agent\.mts --list) +\((.*)\)$/m)
    expect(list, r.stdout).not.toBe(null)
    const rollbackBlock = guide.slice(guide.indexOf('### 3.5'), guide.indexOf('\n## ', guide.indexOf('### 3.5')))
    expect(rollbackBlock).toContain(`\`\`\`bash\n${list![1]}   # ${list![2]}\n`)
    expect(rollbackBlock).not.toContain('.previous')
    // The release: the message it printed, as 3.2 quotes it, and the release file named by its sha256.
    const release = guide.slice(guide.indexOf('### 3.2'), guide.indexOf('### 3.3'))
    const said = r.stdout.split('\n')[0]
    const quoted = release.match(/deploy_binary\.mts +# "(.*?)", or "(.*?)"$/m)
    expect(quoted).not.toBe(null)
    expect(said).toMatch(messagePattern(quoted![1]))
    const sum = r.stdout.match(/^ {2}sha256 {2}([0-9a-f]{64})$/m)![1]
    expect(said.startsWith(`${env.AGENT_REMOTE_DIR}/agent-${sum} `)).toBe(true)
    expect(release).toContain('`AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256>`')
    // Run again: the other message 3.2 quotes.
    const again = await scenario('deploy_binary.mts', [], () => env)
    expect(again.stdout.split('\n')[0]).toMatch(messagePattern(quoted![2]))
  })

})
