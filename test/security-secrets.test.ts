// Property 1 of SECURITY.md (secrets), for EVERY script in deploy/: with canary values for every secret,
// each script runs under strace (every execve of it and its descendants, zx's own `bash -c` included) on
// its main path, on a failure path and with --dry-run; no canary may appear in any argv nor in stdout or
// stderr, and no secret may be a nomad -var. The ssh scripts' traces also prove host trust for every
// ssh they run (property 3).
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { makeCerts, root, sandbox, type Result } from './helpers.ts'
import { CANARIES, removeRemotes, SCENARIOS, scenarioOf, SCRIPTS, type Ctx, type Env } from './security-scenarios.ts'
import { ensureUsers, requireTools, startSshd, type Sshd } from './sshd.ts'

let sshd: Sshd
let tls: Env
beforeAll(async () => {
  requireTools()
  ensureUsers()
  sshd = await startSshd()
  // Nomad over https with a client certificate: the full configuration, the token required.
  const certs = makeCerts(sandbox().dir)
  tls = { NOMAD_ADDR: 'https://nomad.test:4646', NOMAD_CACERT: certs.ca, NOMAD_CLIENT_CERT: certs.cert, NOMAD_CLIENT_KEY: certs.key }
})
afterAll(async () => {
  await sshd?.stop()
  removeRemotes()
})

type Exec = { file: string; argv: string[] }
/** The execve calls of an strace log: program and argv (C string escapes kept as they are). */
function execs(trace: string): Exec[] {
  return [...trace.matchAll(/execve\("((?:[^"\\]|\\.)*)", \[(.*?)\](?:\.\.\.)?, /g)].map((m) => ({
    file: m[1],
    argv: [...m[2].matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((a) => a[1]),
  }))
}

/** A sandbox with the scenario set up, the canaries in the environment, and the doubles requiring the canary tokens. */
function prepare(script: string) {
  const ctx: Ctx = { sb: sandbox(), sshd }
  const env: Env = { ...tls, ZX_VERBOSE: 'true', ZX_QUIET: 'false', ...scenarioOf(script).setup(ctx), ...CANARIES }
  ctx.sb.setState({ token: CANARIES.NOMAD_TOKEN })
  ctx.sb.setState({ token: CANARIES.VAULT_TOKEN }, 'vault')
  const setupCalls = ctx.sb.calls().length
  /** The calls of the run under test (not those of the set-up). */
  const calls = (tool: string) => ctx.sb.calls().slice(setupCalls).filter((c) => c.tool === tool)
  return { ctx, env, calls }
}

describe.concurrent('1. secrets: no canary in any child\'s argv (strace) nor in the output', () => {
  it('every script in deploy/ has a scenario (a new script needs one in test/security-scenarios.ts)', ({ expect }) => {
    expect(Object.keys(SCENARIOS).sort()).toEqual(SCRIPTS)
  })

  it.for(SCRIPTS)('%s: on its main path, on a failure and with --dry-run', async (script, { expect }) => {
    const s = scenarioOf(script)
    const noLeak = (r: Result, what: string) => {
      for (const [name, value] of Object.entries(CANARIES)) {
        expect(r.trace, `${what}: ${name} in a child's argv`).not.toContain(value)
        expect(r.output, `${what}: ${name} in the output`).not.toContain(value)
      }
    }

    // The main path: it succeeds, it did run its tools (the trace is not vacuous), nothing leaked.
    const ok = prepare(script)
    const r = await ok.ctx.sb.run(script, s.args, { env: ok.env, trace: true })
    expect(r.code, r.stderr).toBe(0)
    const run = execs(r.trace!)
    expect(run.some((e) => e.file.endsWith('/bash') && e.argv[1] === '-c'), 'zx\'s bash -c is traced').toBe(true)
    for (const tool of s.tools) expect(run.some((e) => e.file.endsWith(`/${tool}`)), `${tool} was executed`).toBe(true)
    noLeak(r, 'main path')
    // The tokens did reach the doubles, through the environment.
    for (const call of ok.calls('nomad')) expect(call.env.NOMAD_TOKEN).toBe(CANARIES.NOMAD_TOKEN)
    for (const call of ok.calls('vault')) expect(call.env.VAULT_TOKEN).toBe(CANARIES.VAULT_TOKEN)
    // No secret is ever a nomad -var (plan output and Nomad's stored job source keep them).
    for (const call of ok.calls('nomad')) {
      const vars = call.argv.flatMap((a, i) => (a.startsWith('-var=') ? [a.slice(5)] : a === '-var' ? [call.argv[i + 1]] : []))
      for (const v of vars) {
        expect(v, `nomad ${call.argv.join(' ')}`).not.toMatch(/^[^=]*(password|token)[^=]*=/i)
        expect(Object.values(CANARIES)).not.toContain(v.slice(v.indexOf('=') + 1))
      }
    }
    // Host trust, for every ssh of the run: keys checked, options end before the destination.
    for (const e of run.filter((x) => x.file.endsWith('/ssh'))) {
      const line = e.argv.join(' ')
      expect(line).not.toMatch(/StrictHostKeyChecking[= ](no|off|accept-new)|UserKnownHostsFile[= ]\/dev\/null/i)
      expect(e.argv).toContain('--')
      expect(e.argv.indexOf('--')).toBe(e.argv.length - (e.argv.at(-1) === '127.0.0.1' ? 2 : 3))
      if (e.argv.includes('ControlMaster=yes')) expect(e.argv).toContain('StrictHostKeyChecking=yes')
    }

    // A failure after the checks, with --json: exit 1, nothing leaked in the failure line nor in the
    // JSON result on stdout (its message, its fields).
    const bad = prepare(script)
    const failed = await bad.ctx.sb.run(script, [...(s.args ?? []), '--json'], { env: s.breakIt(bad.ctx, bad.env), trace: true })
    expect(failed.code, failed.stderr).toBe(1)
    expect(failed.stderr).toMatch(/✗ /)
    expect(JSON.parse(failed.stdout)).toMatchObject({ outcome: 'failed', exitCode: 1 })
    noLeak(failed, 'failure')

    // --dry-run: runs nothing of the tools, secrets shown as $NAME references.
    const dry = prepare(script)
    const d = await dry.ctx.sb.run(script, ['--dry-run', ...(s.args ?? [])], { env: dry.env, trace: true })
    expect(d.code, d.stderr).toBe(0)
    expect([...dry.calls('nomad'), ...dry.calls('vault'), ...dry.calls('docker')]).toEqual([])
    expect(execs(d.trace!).filter((e) => /\/(nomad|vault|docker|ssh|go)$/.test(e.file))).toEqual([])
    noLeak(d, '--dry-run')
    if (s.kind === 'nomad') expect(d.stdout).toContain('NOMAD_TOKEN="$NOMAD_TOKEN"')
    if (s.kind === 'vault') expect(d.stdout).toContain('VAULT_TOKEN="$VAULT_TOKEN"')
  })
})

// The canaries themselves: distinct, long, and never a substring of one another (a test that cannot fail is worse than none).
describe('the canaries', () => {
  it('are distinct and cannot hide in one another', ({ expect }) => {
    const values = Object.values(CANARIES)
    for (const a of values) for (const b of values) if (a !== b) expect(a.includes(b)).toBe(false)
    expect(values.every((v) => v.length >= 20)).toBe(true)
  })
})

describe('SECURITY.md', () => {
  it('states the ten properties, and maps them to test files that exist, every security test file included', ({ expect }) => {
    const doc = readFileSync(path.join(root, 'SECURITY.md'), 'utf8')
    expect([...doc.matchAll(/^## (\d+)\. /gm)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    const files = [...new Set([...doc.matchAll(/`(test\/[\w.-]+\.ts)`/g)].map((m) => m[1]))]
    for (const f of files) expect(existsSync(path.join(root, f)), f).toBe(true)
    const security = readdirSync(path.join(root, 'test')).filter((f) => /^security-.*\.test\.ts$/.test(f)).map((f) => `test/${f}`)
    expect(files).toEqual(expect.arrayContaining(security))
  })
})
