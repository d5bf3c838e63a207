// Property 9 of SECURITY.md (bad configuration and input), and what properties 2 and 3 need beyond the
// ssh scripts' own tests, for EVERY script in deploy/: each bad value is refused with exit 2 and ONE
// message before anything changes (no stub call that writes, nothing changed in the doubles or on the
// server, no ssh connection at all for a refusal of the configuration).
import { spawn } from 'node:child_process'
import { appendFileSync, cpSync, existsSync, readFileSync, symlinkSync } from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, it, type ExpectStatic } from 'vitest'
import { baseEnv, makeCerts, root, sandbox, type Result, type Sandbox } from './helpers.ts'
import { readsOf, removeRemotes, scenarioOf, SCRIPTS, world, writeCalls, type Ctx, type Env } from './security-scenarios.ts'
import { ensureUsers, freePort, requireTools, startSshd, type Sshd } from './sshd.ts'

let sshd: Sshd
let certs: ReturnType<typeof makeCerts>
beforeAll(async () => {
  requireTools()
  ensureUsers()
  sshd = await startSshd()
  certs = makeCerts(sandbox().dir)
})
afterAll(async () => {
  await sshd?.stop()
  removeRemotes()
})

/** A scenario set up for `script`; `run` runs it with extra environment, and knows what "nothing changed" means. */
function setUp(script: string) {
  const s = scenarioOf(script)
  const ctx: Ctx = { sb: sandbox(), sshd }
  const env = s.setup(ctx)
  const before = world(ctx)
  const calls = ctx.sb.calls().length
  return {
    ctx, env, s,
    run: (extra: Env, args = s.args ?? []) => ctx.sb.run(script, args, { env: { ...env, ...extra } }),
    /** Nothing changed, nothing written, no ssh connection; with noCall, no call of a double at all. */
    expectNothing(expect: ExpectStatic, opts: { noCall?: boolean } = { noCall: true }) {
      const made = ctx.sb.calls().slice(calls)
      if (opts.noCall) expect(made.map((c) => `${c.tool} ${c.argv.join(' ')}`)).toEqual([])
      // The job's lock (taken before the plan, released with the run) is bookkeeping, not a change.
      expect(writeCalls(made).filter((c) => !c.startsWith('nomad var lock '))).toEqual([])
      expect(world(ctx)).toEqual(before)
      expect(ctx.ssh?.argv() ?? []).toEqual([])
    },
    /** Refused: exit 2, ONE message, no stack trace, and nothing else happened. */
    expectRefused(r: Result, expect: ExpectStatic, opts: { noCall?: boolean } = { noCall: true }) {
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr.match(/refused \(nothing was changed\):/g) ?? [], r.stderr).toHaveLength(1)
      expect(r.stderr).not.toMatch(/✗|\n\s+at /)
      this.expectNothing(expect, opts)
    },
  }
}

describe.concurrent('9. bad configuration: every variable a script reads', () => {
  it.for(SCRIPTS)('%s: each one set but empty is named in ONE refusal (exit 2), before anything runs', async (script, { expect }) => {
    const t = setUp(script)
    const reads = readsOf(script)
    expect(reads.length).toBeGreaterThan(0)
    const r = await t.run(Object.fromEntries(reads.map((n) => [n, ''])))
    t.expectRefused(r, expect)
    for (const name of reads) expect(r.stderr, `${name}="" is not refused`).toMatch(new RegExp(`\\b${name}\\b`))
  })

  // Node 20 itself stops on a missing --env-file anywhere in argv (exit 9) before the script runs;
  // from Node 22 on, the flag after the script name is the script's, and it refuses with exit 2.
  it.for(SCRIPTS)('%s: an --env-file that does not exist is refused before anything runs', async (script, { expect }) => {
    const t = setUp(script)
    // (Run without the harness, which writes to the child's stdin: node may be gone already.)
    const r = await runFrom(path.join(root, 'deploy', script), t.ctx.sb, ['--env-file', 'nope.env', ...(t.s.args ?? [])], t.env)
    if (Number(process.versions.node.split('.')[0]) < 22) {
      expect(r.code).toBe(9)
      expect(r.stderr).toContain('nope.env: not found')
      t.expectNothing(expect)
    } else {
      t.expectRefused(r, expect)
      expect(r.stderr).toContain('--env-file nope.env: no such file')
    }
  })
})

describe.concurrent('9. bad configuration: TLS', () => {
  const nomadScripts = SCRIPTS.filter((s) => readsOf(s).includes('NOMAD_CACERT'))
  const vaultScripts = SCRIPTS.filter((s) => readsOf(s).includes('VAULT_CACERT'))

  it('the scripts that reach Nomad or Vault read their TLS variables (every script does: the ssh scripts ask Nomad which clients their hosts are)', ({ expect }) => {
    expect(nomadScripts.length + vaultScripts.length).toBe(SCRIPTS.length)
  })

  it.for(nomadScripts)('%s: an http:// NOMAD_ADDR with TLS files is refused (exit 2), nomad never called', async (script, { expect }) => {
    const t = setUp(script)
    const r = await t.run({ NOMAD_ADDR: 'http://127.0.0.1:4646', NOMAD_CACERT: certs.ca, NOMAD_CLIENT_CERT: certs.cert, NOMAD_CLIENT_KEY: certs.key })
    t.expectRefused(r, expect)
    expect(r.stderr).toContain('NOMAD_ADDR is http:// but NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY are set')
  })

  it.for(nomadScripts)('%s: an expired client certificate and a key that does not match it are both refused (exit 2)', async (script, { expect }) => {
    const t = setUp(script)
    const r = await t.run({ NOMAD_ADDR: 'https://nomad.test:4646', NOMAD_TOKEN: 't0k3n-value', NOMAD_CACERT: certs.ca, NOMAD_CLIENT_CERT: certs.expired, NOMAD_CLIENT_KEY: certs.wrongKey })
    t.expectRefused(r, expect)
    expect(r.stderr).toMatch(/NOMAD_CLIENT_CERT \(.*expired\.pem\) expired on /)
    expect(r.stderr).toMatch(/NOMAD_CLIENT_KEY \(.*wrong-key\.pem\) does not match NOMAD_CLIENT_CERT/)
  })

  it.for(vaultScripts)('%s: an http:// VAULT_ADDR with a CA file, or an expired CA, is refused (exit 2), vault never called', async (script, { expect }) => {
    const t = setUp(script)
    let r = await t.run({ VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_CACERT: certs.ca })
    t.expectRefused(r, expect)
    expect(r.stderr).toContain('VAULT_ADDR is http:// but VAULT_CACERT is set')
    r = await t.run({ VAULT_ADDR: 'https://vault.test:8200', VAULT_CACERT: certs.expired })
    t.expectRefused(r, expect)
    expect(r.stderr).toMatch(/VAULT_CACERT \(.*expired\.pem\) expired on /)
  })
})

describe.concurrent('9. bad input: a job file that does not parse (a broken edit of jobs/*.nomad)', () => {
  const jobScripts = SCRIPTS.map((s) => [s, readFileSync(path.join(root, 'deploy', s), 'utf8').match(/path\.join\(root, '(jobs\/[\w.-]+\.nomad)'\)/)?.[1]] as const).filter(([, job]) => job)

  it('the scripts that deploy a job file are found', ({ expect }) => {
    expect(jobScripts.map(([s]) => s)).toEqual(['deploy_arangodb.mts', 'deploy_nomad.mts', 'deploy_storefront.mts', 'deploy_valkey.mts'])
  })

  it.for(jobScripts)('%s (%s): refused with exit 2 and one message naming the job file, nothing run, built or changed', async ([script, job], { expect }) => {
    const t = setUp(script)
    // A copy of the repository whose job file lost its closing brace.
    const copy = path.join(t.ctx.sb.dir, 'repo')
    for (const f of ['deploy', 'jobs', 'package.json']) cpSync(path.join(root, f), path.join(copy, f), { recursive: true })
    symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'))
    appendFileSync(path.join(copy, job!), '\ngroup "half-written" {\n')
    const r = await runFrom(path.join(copy, 'deploy', script), t.ctx.sb, [...(t.s.args ?? []), '--env-file', t.ctx.sb.envFile], t.env)
    t.expectRefused(r, expect, { noCall: false })
    expect(r.stderr).toMatch(/does not parse|Unclosed configuration block/)
    expect(r.stderr).toContain(path.basename(job!))
    expect(t.ctx.sb.calls('docker').filter((c) => ['build', 'push'].includes(c.argv[0]))).toEqual([])
  })
})

describe.concurrent('2, 3. every ssh script refuses a bad target or remote path before any connection', () => {
  // The scripts that reach a host over ssh (deploy_nomad and status read DEPLOY_SSH_HOST only to find its Nomad node).
  const sshScripts = SCRIPTS.filter((s) => readsOf(s).includes('DEPLOY_SSH_USER'))
  // The variables whose values a remote shell sees, and those that never reach one (checked otherwise).
  const REMOTE_PATHS = ['AGENT_REMOTE_DIR', 'ARANGO_DATA_DIR', 'VALKEY_DATA_DIR']
  const REMOTE_NAMES = ['AGENT_BINARY_NAME']
  // (DEPLOY_KEEP_RELEASES reaches deploy_binary's PRUNE as a quoted argument, once checked as a whole number from 2 to 50.)
  const LOCAL = ['DEPLOY_KEEP_RELEASES', 'DEPLOY_SSH_HOST', 'DEPLOY_SSH_HOSTS', 'NOMAD_ADDR', 'NOMAD_TOKEN', 'NOMAD_CACERT', 'NOMAD_CLIENT_CERT', 'NOMAD_CLIENT_KEY', 'NOMAD_TLS_SERVER_NAME', 'NOMAD_NAMESPACE', 'NOMAD_REGION', 'DEPLOY_SSH_USER', 'DEPLOY_SSH_PORT', 'DEPLOY_SSH_KEY', 'DEPLOY_SSH_KNOWN_HOSTS', 'DEPLOY_COMMAND_TIMEOUT', 'AGENT_SOURCE_DIR', 'AGENT_GOOS', 'AGENT_GOARCH']
  const pwned = '/tmp/pwned-security-test'
  // Each run sets one bad host, one bad user and every remote path of the script (the scripts' own tests
  // cover more path values one by one).
  const hosts = ['-oProxyCommand=touch /tmp/pwned-security-test', 'host name', 'h;touch /tmp/pwned-security-test', '$(touch /tmp/pwned-security-test)', '`touch /tmp/pwned-security-test`', 'a\nb', "h'x"]
  const users = ['-oProxyCommand=touch /tmp/pwned-security-test', 'a b', 'root;id', '$(id)', '`id`', 'u\nx', "o'brien"]
  const paths = ['-rf', '/tmp/a b', '/tmp/a;touch /tmp/pwned-security-test', '/tmp/$(touch /tmp/pwned-security-test)', '/tmp/`touch /tmp/pwned-security-test`', '/tmp/a\nb', 'relative/dir']
  const names = ['-rf', 'a b', 'a;touch /tmp/pwned-security-test', '$(touch /tmp/pwned-security-test)', '`touch /tmp/pwned-security-test`', 'a\nb', "it's"]

  it('every variable an ssh script reads is known to reach the remote shell or not (a new one must be classified here)', ({ expect }) => {
    expect(sshScripts.length).toBeGreaterThan(0)
    for (const s of sshScripts) expect(readsOf(s).filter((n) => ![...REMOTE_PATHS, ...REMOTE_NAMES, ...LOCAL].includes(n)), s).toEqual([])
  })

  it.for(sshScripts.flatMap((s) => paths.map((_, i) => [s, i] as const)))('%s, bad values #%i: host, user and every remote path refused at once (exit 2), no ssh', async ([script, i], { expect }) => {
    const t = setUp(script)
    const bad: Env = { DEPLOY_SSH_HOST: hosts[i], DEPLOY_SSH_USER: users[i] }
    for (const n of readsOf(script)) {
      if (REMOTE_PATHS.includes(n)) bad[n] = paths[i]
      if (REMOTE_NAMES.includes(n)) bad[n] = names[i]
    }
    const r = await t.run(bad)
    t.expectRefused(r, expect)
    for (const [name, value] of Object.entries(bad)) {
      expect(r.stderr).toMatch(new RegExp(`${name}=${escapeRe(JSON.stringify(value))} (must|may only)`))
    }
    expect(existsSync(pwned)).toBe(false)
  })

  it.for(sshScripts)('%s: an unreachable server fails with exit 1 and says it is a connection problem', async (script, { expect }) => {
    const t = setUp(script)
    const r = await t.run({ DEPLOY_SSH_PORT: String(await freePort()) })
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toMatch(/a connection problem/)
    expect(r.stderr.match(/^✗ /gm)).toHaveLength(1)
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })

  it.for(sshScripts)('%s: a changed host key fails before any remote command (exit 1), nothing created', async (script, { expect }) => {
    const t = setUp(script)
    const before = world(t.ctx)
    const r = await t.run({ DEPLOY_SSH_KNOWN_HOSTS: sshd.changedKnownHosts })
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toContain('host key has CHANGED')
    expect(t.ctx.ssh!.argv().filter((a) => a.at(-1)!.startsWith('sh -c'))).toEqual([]) // the master only: no remote command
    expect(world(t.ctx)).toEqual(before)
  })
})

/** Run a script file (e.g. of a COPY of the repository) as the harness does: the sandbox's PATH, HOME and doubles; no stdin. */
function runFrom(file: string, sb: Sandbox, args: string[], extra: Env): Promise<Result> {
  const env: Record<string, string> = { PATH: `${sb.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin`, HOME: sb.home, LANG: 'C.UTF-8', STUB_STATE: sb.state, ...baseEnv }
  for (const [k, v] of Object.entries(extra)) if (v === undefined) delete env[k]
  else env[k] = v
  const child = spawn(process.execPath, ['--import', path.join(root, 'node_modules/tsx/dist/esm/index.mjs'), file, ...args],
    { cwd: sb.dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  let output = ''
  child.stdout.on('data', (d) => { stdout += d; output += d })
  child.stderr.on('data', (d) => { stderr += d; output += d })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, output }))
  })
}

function escapeRe(s: string) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
