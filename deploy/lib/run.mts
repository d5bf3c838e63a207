// The run's life and every way out of it, the same for every script:
// - steps and failures: `==> step` banners on stderr, a failed command becomes ONE line, exit 1;
//   exit() ends the run with a code once cleanups have run and output has drained;
// - secrets registered once, redacted from every line printed;
// - children: echoed on stderr, tracked, and stopped with their process trees on the way out;
// - cleanups registered by a script run once, whatever the way out;
// - signals: SIGINT 130, SIGTERM 143, SIGHUP 129, SIGQUIT 131;
// - the launcher gone: `npx tsx deploy/x.mts` runs npm exec -> sh -c tsx -> tsx -> node script, and npx
//   forwards no signal to us (a SIGTERM to npx leaves tsx and the script orphaned, observed with npm
//   11): the run watches that chain and stops as on SIGHUP (129) when a link of it goes away;
// - a closed stdout or stderr (a reader that exits, a runner that drops the log): the run stops at
//   once, without writing again, with exit 141 (128 + SIGPIPE, as a shell reports it).
import { AsyncLocalStorage } from 'node:async_hooks'
import { spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { $, ProcessOutput } from 'zx'
import { report } from './result.mts'

export const EXIT = { done: 0, failed: 1, refused: 2, hangup: 129, interrupted: 130, quit: 131, pipe: 141, terminated: 143 } as const

const EXIT_REQUEST = Symbol('exit request')
/**
 * End the script here with this exit code, once cleanups have run and output has drained
 * (process.exit() can cut a piped stdout short on macOS).
 */
export function exit(code: number): never {
  throw Object.assign(new Error(`exit ${code}`), { [EXIT_REQUEST]: code })
}

let currentStep = 'start'
export function step(title: string) {
  currentStep = title
  console.error(`==> ${title}`)
}

const STEP_FAILED = Symbol('step failed')
/** A failure the script detects itself (not a failed command): one line, exit 1. */
export function fail(message: string): never {
  throw Object.assign(new Error(message), { [STEP_FAILED]: true })
}

const secrets = new Set<string>()
/** Register a value that must never be printed; failure lines and echoed commands redact it. */
export function secret(value: string | undefined) {
  if (value && value.length >= 4) secrets.add(value)
  return value
}
/** POSIX sh single-quoting: safe for dash and bash alike (zx's $'...' is bash-only). */
export function shq(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}
export function redact(text: string): string {
  let out = text
  for (const name of ['NOMAD_TOKEN', 'VAULT_TOKEN', 'CONSUL_HTTP_TOKEN', 'REGISTRY_PASSWORD']) secret(process.env[name])
  for (const s of secrets) out = out.split(s).join('[REDACTED]')
  return out
}

/** The kit's secrets by name (and every value registered with secret()): a child gets only those it is allowed. */
const SECRET_NAMES = ['NOMAD_TOKEN', 'VAULT_TOKEN', 'CONSUL_HTTP_TOKEN', 'NOMAD_HTTP_AUTH', 'REGISTRY_PASSWORD', 'ARANGO_ROOT_PASSWORD',
  'REVALIDATE_SECRET', 'SESSION_SECRET', 'VALKEY_PASSWORD', 'DEPLOY_VAULT_SUBMIT_TOKEN', 'DEPLOY_CONSUL_SUBMIT_TOKEN']
/** The environment of a child: ours, less every secret but the ones `allow` names (an allow-list). */
export function childEnv(allow: string[] = []): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || (!allow.includes(k) && (SECRET_NAMES.includes(k) || secrets.has(v)))) continue
    env[k] = v
  }
  return env
}

const cleanups: (() => unknown)[] = []
/** Run fn once when the script ends: normally, on failure, or on a signal. */
export function onExit(fn: () => unknown) {
  cleanups.push(fn)
}
// The cleanups run in this context: once the run is stopping, only they may start a child.
const inCleanup = new AsyncLocalStorage<true>()
// One cleanup run, shared by every way out (a failure and a signal can race): each waits for it.
let cleaning: Promise<void> | undefined
function runCleanups(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length) {
      try {
        const fn = cleanups.pop()!
        await inCleanup.run(true, fn)
      } catch (e) {
        say(`warning: cleanup failed: ${redact((e as Error).message)}`)
      }
    }
  })()
  return cleaning
}

const children = new Set<ChildProcess>()

// Children that the cleanups still need (the ssh master: unlocking and closing go through it), by a
// piece of their command line; they are stopped after the cleanups instead of before.
const spared: string[] = []
export function spareUntilCleanup(marker: string) {
  spared.push(marker)
}

/** Stop children with their process trees: SIGTERM, then SIGKILL for what is left after 800 ms. */
async function stopChildren({ all }: { all: boolean }) {
  const spare = (c: ChildProcess) => !all && spared.some((m) => c.spawnargs.join(' ').includes(m))
  const targets = () => [...children].filter((c) => c.pid && !spare(c))
  if (!targets().length) return
  await Promise.allSettled(targets().map((c) => $.kill(c.pid!, 'SIGTERM')))
  for (let i = 0; i < 16 && targets().length; i++) await new Promise((r) => setTimeout(r, 50))
  await Promise.allSettled(targets().map((c) => $.kill(c.pid!, 'SIGKILL')))
}
/** The last word, synchronous (nothing can start after it): SIGKILL to the process group of every child left. */
function killChildGroups() {
  for (const c of children) if (c.pid) try { process.kill(-c.pid, 'SIGKILL') } catch { /* gone */ }
}

// Output that can no longer be written (EPIPE, EIO): nothing is written to it again.
const closed = { stdout: false, stderr: false }
export const stdoutClosed = () => closed.stdout
/** One line on stderr (redacted), unless stderr is closed. */
function say(line: string) {
  if (!closed.stderr) process.stderr.write(`${redact(line)}\n`)
}

let stopping = false
/** The way out for a signal, a gone launcher or a closed pipe: children, cleanups, then exit now. */
async function stopRun(message: string, code: number) {
  if (stopping) return
  stopping = true
  say(message)
  report({ message: message.trim().replace(/^✗ /, '') })
  // Nothing more is said: the steps still awaiting a child would report its end as their failure.
  console.log = console.error = () => {}
  closed.stderr = true
  await stopChildren({ all: false })
  await runCleanups()
  await stopChildren({ all: true })
  killChildGroups()
  process.exit(code)
}

function describe(e: unknown): string {
  if (e instanceof ProcessOutput) {
    // A child stopped by SIGTERM while this script runs on was stopped by its time limit (zx timeout).
    const how = e.signal === 'SIGTERM'
      ? `gave no answer in ${(e.duration / 1000).toFixed(0)}s and was stopped with its process tree (time limit: DEPLOY_COMMAND_TIMEOUT for nomad, vault and ssh)`
      : e.signal ? `was stopped by ${e.signal}` : `exited ${e.exitCode}`
    const err = e.stderr.trim().split('\n').slice(-3).join(' | ') || e.stdout.trim().split('\n').slice(-2).join(' | ')
    return `${lastCommand} ${how}${err ? `: ${err}` : ''}`
  }
  if (e instanceof Error && STEP_FAILED in e) return e.message
  return e instanceof Error ? e.message : String(e)
}

let lastCommand = ''
let installed = false
/** Install the failure, signal and closed-pipe handlers (once). */
export function installHandlers() {
  if (installed) return
  installed = true
  $.verbose = false
  $.quiet = true
  // Every line printed goes through the redaction, whoever prints it.
  for (const name of ['log', 'error'] as const) {
    const print = console[name]
    console[name] = (...args: unknown[]) => print(...args.map((a) => (typeof a === 'string' ? redact(a) : a)))
  }
  // Each child leads its own process group: stopping it (zx's kill signals the group too) also stops
  // what it started, even a grandchild already orphaned by a dying shell in between.
  $.detached = true
  // Echo each command on stderr as it starts (secrets never reach argv, and are redacted anyway), once
  // when it repeats at once (a deployment's status read each poll), and remember it for the failure line.
  $.log = (entry) => {
    if (entry.kind !== 'cmd') return
    const cmd = redact(entry.cmd.replace(/\s+/g, ' '))
    if (cmd !== lastCommand) say(`$ ${cmd}`)
    lastCommand = cmd
  }
  // Track every child so that every way out can end it with its whole process tree.
  // Once the run is stopping, a step whose child ended just before the signal must not start the next
  // command (a `nomad job run` after Ctrl-C): only the cleanups may still start one; the step fails.
  const spawnChild = $.spawn
  $.spawn = ((...args: Parameters<typeof $.spawn>) => {
    if (stopping && !inCleanup.getStore()) throw new Error('not started: the run is stopping')
    const child = spawnChild(...args)
    children.add(child)
    child.once('exit', () => children.delete(child))
    return child
  }) as typeof $.spawn

  const onError = async (e: unknown) => {
    if (e instanceof Error && EXIT_REQUEST in e) process.exitCode = e[EXIT_REQUEST] as number
    else {
      const line = redact(`${currentStep} failed: ${describe(e)}`)
      say(`✗ ${line}`)
      // A step whose child a signal stopped is not the reason the run ends: stopRun said that.
      if (!stopping) report({ message: line })
      process.exitCode = EXIT.failed
    }
    await runCleanups()
  }
  process.on('uncaughtException', onError)
  process.on('unhandledRejection', onError)

  let ended = false
  process.on('beforeExit', async () => {
    if (ended) return
    ended = true
    await runCleanups()
  })

  const signals = [['SIGINT', EXIT.interrupted], ['SIGTERM', EXIT.terminated], ['SIGHUP', EXIT.hangup], ['SIGQUIT', EXIT.quit]] as const
  for (const [sig, code] of signals)
    process.on(sig, () => void stopRun(`\n✗ interrupted by ${sig} during: ${currentStep}; stopping children and cleaning up`, code))

  // A closed output: stop at once, say it on the other stream if that one still works.
  for (const name of ['stdout', 'stderr'] as const) {
    process[name].on('error', (e: NodeJS.ErrnoException) => {
      closed[name] = true
      void stopRun(`✗ ${name} was closed (${e.code}) during: ${currentStep}; stopping children and cleaning up`, EXIT.pipe)
    })
  }
}

/**
 * The chain of processes that launched this script for the user (tsx, `sh -c tsx`, npm exec / npx),
 * each with the parent it had: when one of them goes away or is re-parented, the person, cron job or
 * CI runner that started the command has stopped it, and so does the run (as on SIGHUP). Linux reads
 * /proc every 250 ms; elsewhere `ps` once a second.
 */
export function watchLauncher() {
  const proc = process.platform === 'linux'
  const parentOf = (pid: number): { ppid: number; args: string } | undefined => {
    try {
      if (proc) {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
        const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim()
        return { ppid, args }
      }
      const out = spawnSync('ps', ['-o', 'ppid=,args=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim()
      const m = out.match(/^(\d+)\s+(.*)$/)
      return m ? { ppid: Number(m[1]), args: m[2] } : undefined
    } catch {
      return undefined
    }
  }
  // The links: from our parent up, tsx and `sh -c tsx`, up to npx (npm exec) itself and no further:
  // what started npx is the user's (a shell, cron, a runner). npx may outlive its own parent on purpose
  // (`nohup npx tsx … &` goes on after a logout); a link below it that loses its parent means npx, or
  // the shell it ran, is gone.
  const isNpx = /(^|[\s/])(npx|npx-cli\.js)(\s|$)|(^|[\s/])npm(-cli\.js)?\s+exec(\s|$)/
  const below = /(^|[\s/])tsx(\s|$)|^sh -c '?tsx'?(\s|$)/
  const watched: { pid: number; ppid: number }[] = []
  for (let pid = process.ppid; pid > 1 && watched.length < 6;) {
    const p = parentOf(pid)
    if (!p || isNpx.test(p.args)) break
    if (!below.test(p.args)) return // not started through npx: nothing to watch
    watched.push({ pid, ppid: p.ppid })
    pid = p.ppid
  }
  if (!watched.length) return
  const every = proc ? 250 : 1000
  const timer = setInterval(() => {
    for (const link of watched) {
      const now = parentOf(link.pid)
      if (now && now.ppid === link.ppid) continue
      clearInterval(timer)
      return void stopRun(`\n✗ the command that started this run is gone (process ${link.pid}${now ? ' lost its parent' : ' ended'}: npx or the job runner was stopped) during: ${currentStep}; stopping children and cleaning up`, EXIT.hangup)
    }
  }, every)
  timer.unref()
}
