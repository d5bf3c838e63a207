// The machine-readable result (--json): ONE JSON object on stdout when the run ends, whatever the way
// out (done, failed, refused, a signal), in the shape of result.schema.json beside this file. The human lines
// then go to stderr, so stdout holds the JSON alone: `npx tsx deploy/x.mts --json > result.json`.
// A script says what it touched with report(); the outcome and the exit code are settled at the end.
import { writeSync } from 'node:fs'
import path from 'node:path'

const SCHEMA = 'nomad-deploy-kit/result/v1'

/** The outcomes, by exit code: 0 the first seven, 1 failed/timeout/drift, 2 refused, 129-143 interrupted. */
export type Outcome = 'deployed' | 'canary-waiting' | 'unchanged' | 'done' | 'planned' | 'dry-run' | 'in-sync'
  | 'failed' | 'timeout' | 'drift' | 'refused' | 'interrupted'

export type Fields = {
  outcome?: Outcome
  message?: string
  problems?: string[]
  warnings?: string[]
  /** The run passed its point of no return: it may have changed something. */
  acted?: boolean
  /** --plan: a real run would change something. */
  changes?: boolean
  nomad?: { address: string; server?: string; cli?: string }
  job?: string
  version?: number
  deployment?: string
  image?: string
  commit?: string
  binary?: { path: string; sha256?: string }
  tag?: string
  release?: { job: string; version: number; action: 'deploy' | 'revert'; outcome: string; when: string; by: string; commit?: string; image?: string; sha256?: string; path?: string; tag?: string; deployment?: string; kit?: string }
  releases?: { version: number; tag?: string | null; commit?: string | null; image?: string | null; sha256?: string | null; submitted?: string; stable?: boolean; current?: boolean; kept?: boolean }[]
  host?: string
  /** The ssh scripts, one entry per host. */
  hosts?: { host: string; outcome: Outcome; message: string }[]
  /** The Nomad node of each host. */
  nodes?: { host: string; id: string; name: string }[]
  vaultPath?: string
  variable?: string
  next?: string[]
  allocation?: { id: string; task?: string; event?: string; logs?: string }
  jobs?: unknown[]
}

const fields: Fields = {}
const started = new Date()
let json = false
let script = ''

/** Add what the run touched or learned to the result (later values win). */
export function report(more: Fields) {
  Object.assign(fields, more)
}

/** Collect a warning for the result (it is printed on stderr by the caller). */
export function reportWarning(text: string) {
  ;(fields.warnings ??= []).push(text)
}

/**
 * Turn --json on before anything is printed (even a usage error is a result): human stdout lines go
 * to stderr, and the result is written when the process exits. `redact` hides registered secrets.
 */
export function setupResult(scriptPath: string, redact: (s: string) => string, stdoutClosed: () => boolean) {
  script = path.basename(scriptPath).replace(/\.mts$/, '')
  json = process.argv.slice(2).includes('--json') && !process.argv.slice(2).some((a) => a === '--help' || a === '-h')
  if (!json) return
  console.log = console.error
  console.info = console.error
  process.on('exit', (code) => {
    if (stdoutClosed()) return
    write(`${JSON.stringify(scrub(finish(code), redact), null, 2)}\n`)
  })
}

function finish(code: number) {
  const outcome: Outcome = code === 2 ? 'refused'
    : code >= 128 ? 'interrupted'
      : code === 1 ? (['failed', 'timeout', 'drift'].includes(fields.outcome ?? '') ? fields.outcome! : 'failed')
        : fields.outcome && !['failed', 'timeout', 'drift', 'refused', 'interrupted'].includes(fields.outcome) ? fields.outcome : 'done'
  const { outcome: _, message, ...rest } = fields
  return {
    schema: SCHEMA,
    script,
    outcome,
    exitCode: code,
    message: message ?? (code === 0 ? 'done' : code === 2 ? 'refused' : code >= 128 ? 'interrupted' : 'failed'),
    ...rest,
    startedAt: started.toISOString(),
    durationSeconds: Math.round((Date.now() - started.getTime()) / 100) / 10,
  }
}

/** Every string of the result, with the registered secrets replaced. */
function scrub(value: unknown, redact: (s: string) => string): unknown {
  if (typeof value === 'string') return redact(value)
  if (Array.isArray(value)) return value.map((v) => scrub(v, redact))
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrub(v, redact)]))
  return value
}

/** A synchronous write that survives a full non-blocking pipe (EAGAIN): the process is exiting. */
function write(text: string) {
  let buf = Buffer.from(text)
  for (let tries = 0; buf.length && tries < 10_000; tries++) {
    try {
      buf = buf.subarray(writeSync(1, buf))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return
    }
  }
}
