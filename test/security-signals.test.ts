// Properties 6 and 7 of SECURITY.md, for EVERY script in deploy/: a child that hangs (the nomad, vault
// or docker double in its "hang" mode, run as a process TREE; on the real sshd, a remote command that
// blocks) is
//   6. interrupted: SIGINT or SIGTERM to the script while the child runs -> exit 130 / 143, no process of
//      the run alive (here or on the server) 5 s later, no temporary file left in TMPDIR;
//   7. bounded: with DEPLOY_COMMAND_TIMEOUT=2 the hung nomad / vault / ssh command is killed with its whole
//      process tree and reported in ONE line that names the time limit, exit 1.
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { sandbox, stageBinary } from './helpers.ts'
import { processesOf, removeRemotes, scenarioOf, SCRIPTS, treeStub, until, type Ctx, type Env } from './security-scenarios.ts'
import { ensureUsers, requireTools, startSshd, USERS } from './sshd.ts'

const cleanup: (() => unknown)[] = []
beforeAll(() => {
  requireTools()
  ensureUsers()
})
afterAll(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
  removeRemotes()
})

/** A real sshd whose sessions find a blocking `stat` and `uname` first on their PATH (each blocks until its ssh channel is gone). */
async function slowServer() {
  const dir = mkdtempSync(path.join(tmpdir(), 'deploy-slow-'))
  chmodSync(dir, 0o755)
  const blocking = '#!/bin/sh\n# A hung command: it lives as long as its ssh channel (a write to a closed channel ends it).\nwhile printf " " >&2; do sleep 0.2; done\n'
  for (const tool of ['stat', 'uname']) writeFileSync(path.join(dir, tool), blocking, { mode: 0o755 })
  const server = await startSshd([`SetEnv PATH=${dir}:/usr/local/bin:/usr/bin:/bin`])
  cleanup.push(() => server.stop(), () => rmSync(dir, { recursive: true, force: true }))
  return { server, dir }
}

/**
 * Set up the script's main path with its first long child hanging. Returns the environment, when the
 * hung child runs, and markers of the run's processes on the server side.
 */
async function hanging(script: string, bounded: boolean, onTestFinished: (fn: () => void) => void) {
  const s = scenarioOf(script)
  let slow: Awaited<ReturnType<typeof slowServer>> | undefined
  if (s.kind === 'ssh') slow = await slowServer()
  const ctx: Ctx = { sb: sandbox(), sshd: slow?.server }
  const env: Env = s.setup(ctx)
  let child: RegExp
  if (s.kind === 'ssh') {
    // The volume scripts stat an existing directory; deploy_binary runs uname first.
    for (const v of ['ARANGO_DATA_DIR', 'VALKEY_DATA_DIR']) if (env[v]) {
      mkdirSync(env[v]!, { mode: 0o700 })
      const id = (flag: string) => Number(execFileSync('id', [flag, USERS.dash], { encoding: 'utf8' }))
      chownSync(env[v]!, id('-u'), id('-g'))
    }
    child = /ControlMaster=no/ // a remote command going through the run's one connection
  } else if (script === 'deploy_storefront.mts' && !bounded) {
    treeStub(ctx.sb, 'docker')
    ctx.sb.setState({ mode: 'hang-build' }, 'docker') // the long phase: the build
    child = /stubs\/docker\.mjs build/
  } else {
    treeStub(ctx.sb, s.kind)
    ctx.sb.setState({ mode: 'hang' }, s.kind)
    child = new RegExp(`stubs/${s.kind}\\.mjs`)
  }
  const tmp = path.join(ctx.sb.dir, 'tmp')
  mkdirSync(tmp)
  const markers = [ctx.remote, slow?.dir].filter((m): m is string => Boolean(m))
  // Whatever the outcome, end what a failed test left running (this run's processes only, by pid).
  onTestFinished(() => {
    for (const p of processesOf(ctx.sb, markers)) try { process.kill(Number(p.split(' ')[0]), 'SIGKILL') } catch { /* gone */ }
  })
  return {
    ctx, s, tmp,
    env: { ...env, TMPDIR: tmp },
    markers,
    // The hung child runs: a double that entered its hang (it says so in its state directory), or the ssh command.
    running: () => processesOf(ctx.sb).some((p) => child.test(p)) && (s.kind === 'ssh' || readdirSync(ctx.sb.state).some((f) => f.startsWith('hanging.'))),
  }
}

/** What the run left in TMPDIR (tsx's own compile cache aside). */
const leftIn = (tmp: string) => readdirSync(tmp).filter((f) => !/^tsx-\d+$/.test(f))

describe.concurrent('6. interrupts: SIGINT, SIGTERM, SIGHUP and SIGQUIT while a child runs', () => {
  const cases = SCRIPTS.flatMap((s) => [[s, 'SIGINT', 130], [s, 'SIGTERM', 143], [s, 'SIGHUP', 129], [s, 'SIGQUIT', 131]] as const)
  it.for(cases)('%s, %s: exit %i, no process of the run left, no temporary file left', async ([script, signal, code], { expect, onTestFinished }) => {
    const h = await hanging(script, false, onTestFinished)
    let pid = 0
    const run = h.ctx.sb.run(script, h.s.args, { env: h.env, onStart: (p) => (pid = p) })
    expect(await until(h.running, 30_000), 'the child started and hangs').toBe(true)
    if (h.s.kind === 'ssh') expect(leftIn(h.tmp), 'the ssh control socket lives in TMPDIR').not.toEqual([])
    process.kill(pid, signal)
    const r = await run
    expect(r.code, r.stderr).toBe(code)
    expect(r.stderr).toContain(`✗ interrupted by ${signal}`)
    await until(() => processesOf(h.ctx.sb, h.markers).length === 0, 5000)
    expect(processesOf(h.ctx.sb, h.markers)).toEqual([])
    expect(leftIn(h.tmp)).toEqual([])
  })
})

describe.concurrent('7. timeouts: DEPLOY_COMMAND_TIMEOUT bounds every nomad, vault and ssh command', () => {
  it.for(SCRIPTS)('%s: a hung command is killed with its process tree and reported in one line (exit 1)', async (script, { expect, onTestFinished }) => {
    const h = await hanging(script, true, onTestFinished)
    const r = await h.ctx.sb.run(script, h.s.args, { env: { ...h.env, DEPLOY_COMMAND_TIMEOUT: '2' }, timeoutMs: 25_000 })
    expect(r.code, r.stderr).toBe(1)
    await until(() => processesOf(h.ctx.sb, h.markers).length === 0, 5000)
    expect(processesOf(h.ctx.sb, h.markers)).toEqual([])
    expect(leftIn(h.tmp)).toEqual([])
    const failures = r.stderr.split('\n').filter((l) => l.startsWith('✗'))
    expect(failures, r.stderr).toHaveLength(1)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    expect(failures[0]).toMatch(h.s.kind === 'ssh' ? /@127\.0\.0\.1/ : new RegExp(`\\b${h.s.kind}\\b`))
    // It says the command got no answer in time, and which setting bounds it.
    expect(failures[0]).toMatch(/DEPLOY_COMMAND_TIMEOUT/)
  })
})

describe.concurrent('6b. stop means stop through the runbook\'s own command line (npx tsx, timeout)', () => {
  // npx forwards no signal (npm 11: npm exec -> sh -c tsx -> tsx -> node script); the run watches that chain.
  const cases = SCRIPTS.flatMap((s) => [[s, 'SIGTERM'], [s, 'SIGHUP']] as const)
  it.for(cases)('%s, %s to the npx process while a child runs: no process of the run alive 2 s later, no temporary file left', async ([script, signal], { expect, onTestFinished }) => {
    const h = await hanging(script, false, onTestFinished)
    let pid = 0
    const run = h.ctx.sb.run(script, h.s.args, { env: h.env, onStart: (p) => (pid = p), launcher: ['npx', 'tsx'] })
    expect(await until(h.running, 30_000), 'the child started and hangs').toBe(true)
    process.kill(pid, signal)
    await run
    await until(() => processesOf(h.ctx.sb, h.markers).length === 0, 2000)
    expect(processesOf(h.ctx.sb, h.markers)).toEqual([])
    expect(leftIn(h.tmp)).toEqual([])
  })

  it('`nohup npx tsx … &` from a shell that then exits: the run goes on to its end, as nohup means', async ({ expect }) => {
    const sb = sandbox()
    stageBinary(sb) // the build deploy_binary records: what deploy_nomad deploys
    sb.setState({ polls: 120 }) // a deployment that takes about 6 s: the shell exits in the middle of it
    const r = await sb.run('deploy_nomad.mts', [], { launcher: ['sh', '-c', 'nohup npx tsx "$@" >/dev/null 2>&1 & sleep 3; exit 0', 'sh'] })
    expect(r.code).toBe(0)
    expect(await until(() => sb.readState().jobs?.['agent-economique']?.deployments?.[0]?.Status === 'successful', 30_000), 'the deploy finished').toBe(true)
    await until(() => processesOf(sb).length === 0, 5000)
    expect(processesOf(sb)).toEqual([])
  })

  it.for(['deploy_nomad.mts', 'deploy_arango_volume.mts'])('%s under `timeout 4 npx tsx …` (cron): the run ends with the time limit, nothing left 2 s later', async (script, { expect, onTestFinished }) => {
    const h = await hanging(script, false, onTestFinished)
    const r = await h.ctx.sb.run(script, h.s.args, { env: h.env, launcher: ['timeout', '4', 'npx', 'tsx'], timeoutMs: 40_000 })
    expect(r.code).toBe(124)
    await until(() => processesOf(h.ctx.sb, h.markers).length === 0, 2000)
    expect(processesOf(h.ctx.sb, h.markers)).toEqual([])
    expect(leftIn(h.tmp)).toEqual([])
  })
})

describe.concurrent('6e. a write under way when npx is stopped never lands after the run is gone', () => {
  const phases = [
    { script: 'put_arangodb_password.mts', tool: 'nomad', cmd: 'var put', env: { ARANGO_ROOT_PASSWORD: 'slow-canary-password-1' }, written: (sb: Ctx['sb']) => Object.keys(sb.readState().vars ?? {}).length > 0 },
    { script: 'put_storefront_secrets.mts', tool: 'vault', cmd: 'kv put', env: { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'hvs.slow-token', REVALIDATE_SECRET: 'slow-revalidate-1', SESSION_SECRET: 'slow-session-1' },
      written: (sb: Ctx['sb']) => Object.keys(sb.readState('vault').secrets ?? {}).length > 0 },
  ] as const
  it.for(phases)('$script: SIGTERM to npx during $tool $cmd (a slow server): nothing written, nothing left 2 s after its end', async (p, { expect }) => {
    const sb = sandbox()
    sb.stub('vault')
    sb.setState({ slow: { [p.cmd]: 3 } }, p.tool)
    let pid = 0
    const run = sb.run(p.script, [], { env: p.env, onStart: (x) => (pid = x), launcher: ['npx', 'tsx'] })
    expect(await until(() => readdirSync(sb.state).some((f) => f.startsWith('slow.')), 30_000), 'the write is under way').toBe(true)
    process.kill(pid, 'SIGTERM')
    await run
    await new Promise((r) => setTimeout(r, 5000)) // past the slow server's 3 s
    expect(p.written(sb)).toBe(false)
    expect(processesOf(sb)).toEqual([])
  })
})

describe.concurrent('6f. a signal that arrives as a step\'s command succeeds: the next command is never started', () => {
  // The window between a child's success and the next spawn: the step goes on while the run stops (its
  // cleanups and the children's kill take a moment). Only the cleanups may start a command by then.
  const cases = [
    { script: 'deploy_nomad.mts', after: 'job plan', never: 'job run', env: {}, written: (sb: Ctx['sb']) => Boolean(sb.readState().jobs?.['agent-economique']) },
    { script: 'put_arangodb_password.mts', after: 'var get', never: 'var put', env: { ARANGO_ROOT_PASSWORD: 'late-canary-password-1' }, written: (sb: Ctx['sb']) => Boolean(sb.readState().vars?.['nomad/jobs/arangodb-agent-economique']) },
  ] as const
  it.for(cases)('$script: SIGTERM as `nomad $after` ends: exit 143, no `nomad $never`, nothing written', async (c, { expect }) => {
    for (let round = 0; round < 3; round++) {
      const sb = sandbox()
      stageBinary(sb) // deploy_nomad: the build deploy_binary records
      const run = sb.run(c.script, [], { env: c.env, onStart: (pid) => sb.setState({ signalAfter: { cmd: c.after, signal: 'SIGTERM', pid } }) })
      const r = await run
      expect(r.code, r.stderr).toBe(143)
      expect(sb.commands('nomad').some((x) => x.startsWith(c.after)), 'the signal came from that command').toBe(true)
      await new Promise((res) => setTimeout(res, 300)) // a command started late would be under way by now
      expect(sb.commands('nomad').filter((x) => x.startsWith(c.never)), r.stderr).toEqual([])
      expect(c.written(sb)).toBe(false)
    }
  })
})

describe.concurrent('6c. SIGKILL: the ssh connection dies with the script', () => {
  const ssh = SCRIPTS.filter((s) => scenarioOf(s).kind === 'ssh')
  it.for(ssh)('%s, SIGKILL while a remote command runs: no ssh process of the run 2 s later, its control directory removed', async (script, { expect, onTestFinished }) => {
    const h = await hanging(script, false, onTestFinished)
    let pid = 0
    const run = h.ctx.sb.run(script, h.s.args, { env: h.env, onStart: (p) => (pid = p) })
    expect(await until(h.running, 30_000), 'the remote command started and hangs').toBe(true)
    process.kill(pid, 'SIGKILL')
    await run
    await until(() => processesOf(h.ctx.sb, h.markers).filter((p) => /\bssh\b/.test(p)).length === 0 && leftIn(h.tmp).length === 0, 2000)
    expect(processesOf(h.ctx.sb, h.markers).filter((p) => /\bssh\b/.test(p))).toEqual([])
    expect(leftIn(h.tmp)).toEqual([])
  })
})

describe.concurrent('6d. a closed output pipe ends the run at its next line', () => {
  it.for(SCRIPTS)('%s, its output read by `… 2>&1 | head -n 1`: exit 141 at the next line it writes, nothing left running', async (script, { expect, onTestFinished }) => {
    const h = await hanging(script, true, onTestFinished)
    // The reader goes away after one line; the run's next line (here: the hung command's time limit) finds the pipe closed.
    const shell = 'node --import tsx "$@" 2>&1 | head -n 1 >/dev/null; exit ${PIPESTATUS[0]}'
    const r = await h.ctx.sb.run(script, h.s.args, { env: { ...h.env, DEPLOY_COMMAND_TIMEOUT: '2' }, launcher: ['bash', '-c', shell, 'bash'], timeoutMs: 40_000 })
    expect(r.code, r.output).toBe(141)
    await until(() => processesOf(h.ctx.sb, h.markers).length === 0, 5000)
    expect(processesOf(h.ctx.sb, h.markers)).toEqual([])
    expect(leftIn(h.tmp)).toEqual([])
  })
})
