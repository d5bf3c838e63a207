// The scenario table of the security tests (test/security-*.test.ts, SECURITY.md): for EVERY script in
// deploy/, how to set up a sandbox in which its main path succeeds, what it talks to, and what in the
// world a run may change. The tests enumerate deploy/ with readdirSync: a new script fails them until it
// has a scenario here.
import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { AGENT_SHA, root, stageBinary, type Call, type Sandbox } from './helpers.ts'
import { goEnv, spy, userDir, USERS, type Sshd } from './sshd.ts'

export type Env = Record<string, string | undefined>

/** Every script in deploy/, as the user runs them. */
export const SCRIPTS = readdirSync(path.join(root, 'deploy')).filter((f) => f.endsWith('.mts')).sort()

/** Canary values for every secret a script may see: none may ever show up in an argv or in the output. */
export const CANARIES = {
  NOMAD_TOKEN: 'cnry-nomad-token-5c1e7a',
  VAULT_TOKEN: 'cnry-vault-token-9b2f04',
  ARANGO_ROOT_PASSWORD: 'cnry-arango-root-pw-3d8e61',
  REVALIDATE_SECRET: 'cnry-revalidate-secret-7a40c2',
  SESSION_SECRET: 'cnry-session-secret-e19b5f',
  VALKEY_PASSWORD: 'cnry-valkey-password-0c6d93',
  REGISTRY_PASSWORD: 'cnry-registry-password-4f7a28',
} as const

/** The variables a script says it reads: the names in the "Reads:" part of its header (its --help). */
export function readsOf(script: string): string[] {
  const header = readFileSync(path.join(root, 'deploy', script), 'utf8').split('\n').filter((l) => l.startsWith('//')).join('\n')
  const reads = header.slice(header.indexOf('Reads:'), header.indexOf('Options:'))
  return [...new Set(reads.match(/\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b/g) ?? [])].sort()
}

/** Subcommands that change something (on the cluster, in Vault, in a registry). */
export const WRITES: Record<string, string[]> = {
  // (var lock writes the job's lock variable: taken and released by every run that may change a job)
  nomad: ['job run', 'job revert', 'job promote', 'job dispatch', 'job stop', 'job tag', 'var put', 'var purge', 'var lock', 'deployment promote', 'deployment fail', 'volume register', 'volume create', 'volume delete'],
  vault: ['kv put', 'kv patch', 'kv delete', 'kv destroy', 'kv rollback'],
  docker: ['build', 'push', 'tag', 'rmi'],
}
/** The subcommand of a recorded stub call: "job plan", "kv put", "build", "buildx version". */
export function subcommand(call: Call): string {
  if (call.tool === 'docker') return call.argv[0] === 'buildx' ? `buildx ${call.argv[1]}` : call.argv[0]
  return call.argv.slice(0, 2).join(' ')
}
export const writeCalls = (calls: Call[]) => calls.filter((c) => WRITES[c.tool]?.includes(subcommand(c))).map((c) => `${c.tool} ${c.argv.join(' ')}`)

export type Ctx = {
  sb: Sandbox
  /** The real sshd the ssh scripts reach (started by the test file). */
  sshd?: Sshd
  /** The ssh spy (records every ssh the run executes), for ssh scenarios. */
  ssh?: ReturnType<typeof spy>
  /** The directory on the "server" the run works in (ssh scenarios). */
  remote?: string
}

export type Scenario = {
  /** What the script talks to. */
  kind: 'nomad' | 'vault' | 'ssh'
  /** Programs a real run of the main path executes (a trace without them is vacuous). */
  tools: string[]
  args?: string[]
  /** Prepare the sandbox so that the main path succeeds; returns the run's environment. */
  setup(ctx: Ctx): Env
  /** Make the main path fail AFTER the checks (exit 1), for the failure runs. */
  breakIt(ctx: Ctx, env: Env): Env
  /** A script that only reads (status): its first run must change nothing either. */
  readOnly?: boolean
  /**
   * Running it a second time with the same inputs: the exit code and what it says; `writes` the write
   * calls it still makes; `marks` what it still may do: touch the files matching `files` (times only:
   * same inode, size, mode and content), rewrite the variables `vars`, and run the remote scripts
   * matching `remote` (e.g. a lock taken and released).
   */
  again: { code: number; says: RegExp; writes?: string[]; marks?: { files: RegExp; vars: string[]; remote: RegExp[] } }
}

/** Run the nomad double directly (setting up a cluster's state; not a call under test). */
export function nomadDouble(sb: Sandbox, ...args: string[]): string {
  return execFileSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646', NOMAD_TOKEN: '' }, encoding: 'utf8' })
}
const STOREFRONT_JOB = path.join(root, 'jobs/cedra-storefront.nomad')
/** A storefront version registered with the double, its deployment left where it stops by itself; promoted and finished when asked. */
function storefrontVersion(sb: Sandbox, tag: string, promote: boolean) {
  const read = () => JSON.parse(nomadDouble(sb, 'job', 'deployments', '-latest', '-json', 'cedra-storefront'))
  nomadDouble(sb, 'job', 'run', '-detach', `-var=image_tag=${tag}`, STOREFRONT_JOB)
  for (let i = 0; i < 3; i++) read()
  if (promote && read().Status === 'running') {
    nomadDouble(sb, 'job', 'promote', '-detach', 'cedra-storefront')
    for (let i = 0; i < 3; i++) read()
  }
}

/** A git checkout of the storefront with a Dockerfile, one commit. */
export function storefrontSource(dir: string, content = 'first') {
  mkdirSync(dir, { recursive: true })
  writeFileSync(path.join(dir, 'Dockerfile'), 'FROM oven/bun:1 AS build\nWORKDIR /app\nCOPY . .\nRUN bun install --frozen-lockfile && bun run build\n')
  writeFileSync(path.join(dir, 'version.ts'), `export const version = ${JSON.stringify(content)}\n`)
  const git = (...a: string[]) => execFileSync('git', ['-c', 'user.name=Test', '-c', 'user.email=test@example.com', ...a], { cwd: dir, stdio: 'pipe' })
  if (!existsSync(path.join(dir, '.git'))) git('init', '-q', '-b', 'main')
  git('add', '-A')
  git('commit', '-q', '--allow-empty', '-m', content)
  return dir
}

/** A fresh directory on the "server" owned by the login user; removed by removeRemotes(). */
const remotes: string[] = []
export function remoteDir(user: string = USERS.dash) {
  const d = userDir(user)
  remotes.push(d)
  return d
}
/** A directory the login user may not write in (root's, mode 755): creating anything under it fails. */
export function lockedRemoteDir() {
  const d = mkdtempSync(path.join(tmpdir(), 'deploy-locked-'))
  chmodSync(d, 0o755)
  remotes.push(d)
  return d
}
export function removeRemotes() {
  for (const d of remotes.splice(0)) rmSync(d, { recursive: true, force: true })
}

const FIXTURE = path.join(root, 'test/fixtures/agent')
const sshEnv = (ctx: Ctx) => {
  if (!ctx.sshd) throw new Error('this scenario needs the test sshd (startSshd() in beforeAll)')
  // The Nomad client behind the test sshd, with no static host volume: on Nomad 2.0 the volume scripts register theirs.
  ctx.sb.setState({ nodes: [{ Name: 'node-1', Address: '127.0.0.1' }] })
  ctx.ssh ??= spy(ctx.sb, 'ssh')
  ctx.remote ??= remoteDir()
  return ctx.sshd.env(USERS.dash)
}
const failing = (ctx: Ctx, tool: string, subcommands: string[]) => ctx.sb.setState({ fail: subcommands }, tool)
const ARANGO_VAR = 'nomad/jobs/arangodb-agent-economique'
// (the job's lock is taken and released by a second run too: its only write)
const upToDate = { code: 0, says: /already up to date \(the plan shows no change\): nothing was run/ }

export const SCENARIOS: Record<string, Scenario> = {
  'deploy_nomad.mts': {
    kind: 'nomad', tools: ['nomad'],
    setup: ({ sb }) => (stageBinary(sb), {}), // the build deploy_binary recorded
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['job run']), env),
    again: { ...upToDate, writes: ['var lock'] },
  },
  'revert_agent.mts': {
    kind: 'nomad', tools: ['nomad'], args: ['0'],
    setup: ({ sb }) => {
      // Two releases deployed (versions 0 and 1), both builds still on the server.
      for (const sha of [AGENT_SHA, 'b'.repeat(64)]) {
        stageBinary(sb, sha)
        nomadDouble(sb, 'job', 'run', '-detach', `-var=binary_path=/root/data/agent-${sha}`, `-var=binary_sha256=${sha}`, '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', path.join(root, 'jobs/agent.nomad'))
        for (let i = 0; i < 3; i++) nomadDouble(sb, 'job', 'deployments', '-latest', '-json', 'agent-economique')
      }
      return {}
    },
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['job revert']), env),
    // Version 0 again: Nomad registers nothing new when the specification is already the current one.
    again: { code: 0, says: /already has the specification of version 0: Nomad registered nothing new/, writes: ['var lock', 'job revert'] },
  },
  'deploy_arangodb.mts': {
    kind: 'nomad', tools: ['nomad'],
    setup: ({ sb }) => {
      sb.setState({ index: 20, vars: { [ARANGO_VAR]: { Namespace: 'default', Path: ARANGO_VAR, CreateIndex: 20, ModifyIndex: 20, CreateTime: 1, ModifyTime: 1, Items: { root_password: CANARIES.ARANGO_ROOT_PASSWORD } } } })
      return {}
    },
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['job run']), env),
    again: { ...upToDate, writes: ['var lock'] },
  },
  'deploy_valkey.mts': {
    kind: 'nomad', tools: ['nomad'],
    setup: () => ({}),
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['job run']), env),
    again: { ...upToDate, writes: ['var lock'] },
  },
  'deploy_storefront.mts': {
    kind: 'nomad', tools: ['nomad', 'docker', 'git'],
    setup: ({ sb }) => {
      sb.stub('docker')
      return { STOREFRONT_SOURCE_DIR: storefrontSource(path.join(sb.dir, 'cedra-storefront')), STOREFRONT_IMAGE: 'registry.test:5000/cedra/storefront' }
    },
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['job run']), env),
    again: { code: 0, says: /already runs .* \(the plan shows no change\): nothing was built, pushed or run/, writes: ['var lock'] },
  },
  'promote_storefront.mts': {
    kind: 'nomad', tools: ['nomad'],
    setup: ({ sb }) => {
      storefrontVersion(sb, 'aaaaaaaaaaaa', true)
      storefrontVersion(sb, 'bbbbbbbbbbbb', false) // its canary waits for promotion
      return {}
    },
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['job promote']), env),
    again: { code: 1, says: /nothing to promote: .*is successful/, writes: ['var lock'] },
  },
  'revert_storefront.mts': {
    kind: 'nomad', tools: ['nomad'], args: ['0'],
    setup: ({ sb }) => {
      storefrontVersion(sb, 'aaaaaaaaaaaa', true)
      storefrontVersion(sb, 'bbbbbbbbbbbb', true)
      return {}
    },
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['job revert']), env),
    // Version 0 again: Nomad registers nothing new when the specification is already the current one.
    again: { code: 0, says: /already has the specification of version 0: Nomad registered nothing new/, writes: ['var lock', 'job revert'] },
  },
  'put_arangodb_password.mts': {
    kind: 'nomad', tools: ['nomad'],
    setup: () => ({ ARANGO_ROOT_PASSWORD: 'arango-root-password-of-the-tests' }),
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['var put']), env),
    again: { code: 0, says: /already that password: unchanged, nothing was written/ },
  },
  'put_storefront_secrets.mts': {
    kind: 'vault', tools: ['vault'],
    setup: ({ sb }) => {
      sb.stub('vault')
      return { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'vault-token-of-the-tests', REVALIDATE_SECRET: 'revalidate-secret-of-the-tests', SESSION_SECRET: 'session-secret-of-the-tests' }
    },
    breakIt: (ctx, env) => (failing(ctx, 'vault', ['kv put']), env),
    again: { code: 0, says: /is unchanged: version 1 already holds these values; nothing was written/ },
  },
  'deploy_arango_volume.mts': {
    kind: 'ssh', tools: ['ssh'],
    setup: (ctx) => ({ ...sshEnv(ctx), ARANGO_DATA_DIR: `${ctx.remote}/arangodb_data` }),
    // (sshEnv: one client without static host volumes, so that Nomad 2.0 registers the directory)
    breakIt: (_ctx, env) => ({ ...env, ARANGO_DATA_DIR: `${lockedRemoteDir()}/arangodb_data` }),
    again: { code: 0, says: /already exists on .* with mode 755: nothing changed/ },
  },
  'deploy_valkey_volume.mts': {
    kind: 'ssh', tools: ['ssh'],
    setup: (ctx) => ({ ...sshEnv(ctx), VALKEY_DATA_DIR: `${ctx.remote}/valkey_data` }),
    breakIt: (_ctx, env) => ({ ...env, VALKEY_DATA_DIR: `${lockedRemoteDir()}/valkey_data` }),
    again: { code: 0, says: /already exists on .* with mode 755: nothing changed/ },
  },
  'status.mts': {
    kind: 'nomad', tools: ['nomad'],
    // The four jobs registered as a deploy from this repository would (the same -var), deployments done.
    setup: ({ sb }) => {
      const vault = ['-var=vault_secret=secret/data/cedra/prod', '-var=vault_auth=identity', '-var=vault_role=cedra-storefront']
      for (const [job, file, ...vars] of [['agent-economique', 'agent.nomad', '-var=binary_path=/root/data/agent', '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59'], ['arangodb-agent-economique', 'arangodb.nomad'],
        ['valkey', 'valkey.nomad', ...vault], ['cedra-storefront', 'cedra-storefront.nomad', '-var=image=registry.test/cedra/storefront', '-var=image_tag=aaaaaaaaaaaa', ...vault]]) {
        nomadDouble(sb, 'job', 'run', '-detach', ...vars, path.join(root, 'jobs', file))
        for (let i = 0; i < 3; i++) nomadDouble(sb, 'job', 'deployments', '-latest', '-json', job)
      }
      return {}
    },
    // The servers cannot be listed: the run stops at its first read (a job's failed read is a row, exit 1, instead).
    breakIt: (ctx, env) => (failing(ctx, 'nomad', ['server members']), env),
    readOnly: true,
    again: { code: 0, says: /All 4 jobs run as the repository says/ },
  },
  'deploy_binary.mts': {
    kind: 'ssh', tools: ['ssh', 'go'],
    setup: (ctx) => ({ ...sshEnv(ctx), ...goEnv, AGENT_SOURCE_DIR: FIXTURE, AGENT_REMOTE_DIR: `${ctx.remote}/data` }),
    breakIt: (_ctx, env) => ({ ...env, AGENT_REMOTE_DIR: `${lockedRemoteDir()}/data` }),
    again: { code: 0, says: /is unchanged \(already there, the newest release, sha256 checked\): nothing sent/ },
  },
}

/** The scenario of a script, or a failure that says what to add. */
export function scenarioOf(script: string): Scenario {
  const s = SCENARIOS[script]
  if (!s) throw new Error(`deploy/${script} has no scenario in test/security-scenarios.ts: add one, so that every security property is tested for it`)
  return s
}

/**
 * Everything a run could have changed: the doubles' jobs, versions, deployments, variables, secrets,
 * images and pushes, and every file under the remote directory (inode, size, mode, times).
 */
export function world(ctx: Ctx) {
  const nomad = ctx.sb.readState('nomad')
  const vault = ctx.sb.readState('vault')
  const docker = ctx.sb.readState('docker')
  const files: Record<string, unknown> = {}
  const walk = (d: string) => {
    if (!existsSync(d)) return
    for (const f of readdirSync(d)) {
      const p = path.join(d, f)
      const s = lstatSync(p)
      files[p] = [s.ino, s.size, s.mode, s.mtimeMs, s.ctimeMs]
      if (s.isDirectory()) walk(p)
    }
  }
  if (ctx.remote) walk(ctx.remote)
  return {
    jobs: Object.fromEntries(Object.entries(nomad.jobs ?? {}).map(([name, j]: [string, any]) => [name, {
      modifyIndex: j.modifyIndex,
      versions: j.versions.map((v: any) => `${v.key} stable=${v.stable}`),
      deployments: j.deployments.map((d: any) => `${d.ID} v${d.JobVersion} ${d.Status} promoted=${Object.values(d.TaskGroups).map((g: any) => g.Promoted)}`),
    }])),
    // The job locks (nomad/jobs/<job>/lock) are taken and released by every run that may change a job: not a change.
    vars: Object.fromEntries(Object.entries(nomad.vars ?? {}).filter(([p]) => !p.endsWith('/lock')).map(([p, v]: [string, any]) => [p, v.ModifyIndex])),
    hostVolumes: (nomad.hostVolumes ?? []).map((v: any) => `${v.Name} ${v.NodeID} ${v.HostPath} ${v.ModifyIndex}`),
    secrets: Object.fromEntries(Object.entries(vault.secrets ?? {}).map(([p, s]: [string, any]) => [p, s.versions.length])),
    images: docker.images?.map((i: any) => `${i.ref} ${i.id}`) ?? [],
    pushed: docker.pushed ?? [],
    files,
  }
}

/**
 * Processes that belong to a run in this sandbox: its environment names the sandbox's stub state
 * (every child of a script inherits it), or its command line mentions the sandbox or a marker (a remote
 * directory: the server side of an ssh command).
 */
export function processesOf(sb: Sandbox, markers: string[] = []): string[] {
  const found: string[] = []
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (Number(pid) === process.pid) continue
    let cmd: string
    let env = ''
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim()
    } catch {
      continue
    }
    try {
      env = readFileSync(`/proc/${pid}/environ`, 'latin1')
    } catch { /* gone, or a kernel thread */ }
    if (!cmd) continue // a zombie or a kernel thread
    if (env.split('\0').includes(`STUB_STATE=${sb.state}`) || [sb.dir, ...markers].some((m) => cmd.includes(m))) found.push(`${pid} ${cmd}`)
  }
  return found
}

export async function until(ok: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; !ok(); ) {
    if (Date.now() > end) return false
    await new Promise((r) => setTimeout(r, 50))
  }
  return true
}

/**
 * A stub wrapper that does NOT exec the double: sh stays the parent of node, so a process TREE runs
 * (killing only the top process would leave the double running).
 */
export function treeStub(sb: Sandbox, tool: string) {
  sb.stub(tool, `#!/bin/sh\n${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(root, 'test/stubs', `${tool}.mjs`))} "$@"\n`)
}

/** The last non-empty line a stream printed. */
export const lastLine = (text: string) => text.trim().split('\n').filter((l) => l.trim()).at(-1) ?? ''
