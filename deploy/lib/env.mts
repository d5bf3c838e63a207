// The environment helper: what every script starts with.
// - flags: --help (the script's own header comment), --dry-run, --env-file, parsed strictly;
// - configuration: .env at the repository root (or --env-file), real environment variables win;
// - checks: every problem collected, reported in ONE message, exit 2 before anything changes;
// - the hidden prompt for secrets.
// The run's life and its ways out (steps, failures, children, signals, cleanups) are in run.mts,
// re-exported here: a script imports what it starts with from one place.
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import dotenv from 'dotenv'
import { $, which } from 'zx'
import { report, reportWarning, setupResult } from './result.mts'
import { childEnv, EXIT, exit, installHandlers, onExit, redact, secret, stdoutClosed, watchLauncher } from './run.mts'

export { childEnv, EXIT, exit, fail, onExit, redact, secret, shq, step } from './run.mts'
export { report } from './result.mts'
export const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '')

type Options = NonNullable<ParseArgsConfig['options']>
/** The longest wait a Node timer holds (2^31-1 ms), in whole seconds. */
export const MAX_SECONDS = 2147483

/** Parse flags, print --help, load the configuration, install the failure and signal handlers. */
export function start(scriptUrl: string, spec: { options?: Options; positionals?: string; plan?: boolean } = {}) {
  const script = fileURLToPath(scriptUrl)
  setupResult(script, redact, stdoutClosed)
  installHandlers()
  let parsed
  try {
    parsed = parseArgs({
      strict: true,
      allowPositionals: Boolean(spec.positionals),
      options: {
        help: { type: 'boolean', short: 'h' },
        'dry-run': { type: 'boolean' },
        'env-file': { type: 'string' },
        json: { type: 'boolean' },
        ...(spec.plan ? { plan: { type: 'boolean' } } : {}),
        ...spec.options,
      },
    })
  } catch (e) {
    refuse([`usage: ${(e as Error).message}`, `see: npx tsx deploy/${path.basename(script)} --help`])
  }
  const { values, positionals } = parsed
  if (values.help) {
    process.stdout.write(helpText(script))
    exit(EXIT.done)
  }
  loadEnvFile(values['env-file'] as string | undefined)
  const dryRun = Boolean(values['dry-run'])
  const planOnly = Boolean(values.plan)
  if (dryRun) report({ outcome: 'dry-run', message: 'dry run: the commands a real run would execute are printed; nothing was run or contacted' })
  if (dryRun && planOnly) refuse(['--dry-run and --plan go alone: --dry-run contacts nothing, --plan asks the cluster (read-only)'])
  // A run that changes things stops when whoever started it stops (npx does not pass signals on).
  if (!dryRun) watchLauncher()
  return { flags: values as Record<string, string | boolean | undefined>, args: positionals, dryRun, planOnly, check: checks(dryRun) }
}

/** --help is the script's header comment: one text for the reader of the file and of the terminal. */
function helpText(script: string): string {
  const lines = readFileSync(script, 'utf8').split('\n')
  const header = []
  for (const line of lines.slice(lines[0].startsWith('#!') ? 1 : 0)) {
    if (!line.startsWith('//')) break
    header.push(line.replace(/^\/\/ ?/, ''))
  }
  return header.join('\n').trim() + '\n'
}

// What the env file holds that dotenv and the shell would read differently (reported with the checks).
const fileProblems: string[] = []

function loadEnvFile(flag: string | undefined) {
  const file = flag ? path.resolve(process.cwd(), flag) : path.join(root, '.env')
  if (flag && !existsSync(file)) refuse([`--env-file ${flag}: no such file`])
  if (!existsSync(file)) return
  // DOTENV_CONFIG_* would change how the file is read (QUIET=false prints a tip on stdout, OVERRIDE
  // would let the file win over the environment): the kit reads it one way only.
  for (const k of Object.keys(process.env)) if (k.startsWith('DOTENV_CONFIG_')) delete process.env[k]
  // An unquoted value with a # that no blank precedes: dotenv cuts it there, `set -a; . ./.env` does
  // not (Sup3r#Secret is "Sup3r" for one, whole for the other). Refused, so both read the same.
  const given = new Set(Object.keys(process.env))
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = line.match(/^\s*(?:export\s+)?([\w.-]+)\s*=\s*(.*)$/)
    if (!m || given.has(m[1]) || /^['"`]/.test(m[2])) continue
    if (/(^|[^\s])#/.test(m[2].replace(/\s+#.*$/, '')))
      fileProblems.push(`${m[1]} in ${path.relative(process.cwd(), file) || file} holds an unquoted # (dotenv would cut the value there, the shell would not): quote the value, ${m[1]}='...'`)
  }
  // Real environment variables win over the file (dotenv never overrides by default).
  dotenv.config({ path: file, quiet: true })
}

/** What a value must never hold: it would not reach a file, a URL or a server as written. */
function badCharacters(v: string): string | undefined {
  if (v.includes('\r')) return 'a carriage return (\\r)'
  if (v.includes('\n')) return 'a line feed (\\n)'
  if (v.includes('\t')) return 'a TAB'
  if (v.includes('\0')) return 'a NUL byte'
  if (v.includes('\uFFFD')) return 'bytes that are not UTF-8'
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(v)) return 'a control character'
}

// ---------------------------------------------------------------------------------------------
// Checks: collect every problem, then refuse once.

export type Checks = ReturnType<typeof checks>

function checks(dryRun: boolean) {
  const problems: string[] = [...fileProblems]
  const soft: string[] = [] // what a real run refuses on but a dry run only warns about
  const warnings: string[] = []

  // Node reads NODE_DEBUG once, at its start: with child_process (or *) it prints every child's
  // environment and input on stderr, tokens and secrets included. Too late to clear: refused.
  if (process.env.NODE_DEBUG)
    problems.push(`NODE_DEBUG=${process.env.NODE_DEBUG} makes Node print every command's environment and input on stderr (tokens and secrets): unset it`)
  const seen = new Set<string>()
  const raw = (name: string) => {
    const v = process.env[name]
    const bad = v === undefined ? undefined : badCharacters(v)
    if (bad && !seen.has(name)) problems.push(`${name} holds ${bad}: remove it (values are taken exactly as written, or refused)`)
    // Linux passes at most 128 KiB per environment entry to a child: a longer value would fail its command.
    else if (v !== undefined && v.length > 100_000 && !seen.has(name)) problems.push(`${name} is ${v.length} characters long, more than a command's environment can carry (128 KiB an entry): check its value`)
    seen.add(name)
    return v
  }
  const c = {
    dryRun,
    problem: (msg: string) => void problems.push(msg),
    /** A missing tool or file: refused for real, a warning in --dry-run so the plan still prints. */
    missing: (msg: string) => void soft.push(msg),
    warn: (msg: string) => void warnings.push(msg),

    /** A variable that must be set and not empty. */
    need(name: string): string {
      const v = raw(name)
      if (v === undefined) problems.push(`${name} is not set`)
      else if (v.trim() === '') problems.push(`${name} is empty`)
      return v ?? ''
    },
    /** A secret a real run needs: a dry run shows it as $NAME, and only warns when it is missing. */
    needSecret(name: string): string {
      const v = raw(name)
      if (v === undefined || v.trim() === '') soft.push(`${name} is ${v === undefined ? 'not set' : 'empty'}`)
      return v ?? ''
    },
    /** A variable with a default; set but empty is refused (an empty value is never what was meant). */
    get(name: string, fallback: string): string {
      const v = raw(name)
      if (v === undefined) return fallback
      if (v.trim() === '') problems.push(`${name} is empty (unset it to use the default ${fallback})`)
      return v
    },
    /** An optional variable: undefined when unset; set but empty is refused. */
    optional(name: string): string | undefined {
      const v = raw(name)
      if (v !== undefined && v.trim() === '') problems.push(`${name} is empty (unset it or give a value)`)
      return v === undefined || v.trim() === '' ? undefined : v
    },
    /** A required http(s):// address (`example` shows the form); `https` says which. */
    address(name: string, example: string): { addr: string; https: boolean } {
      const addr = c.need(name)
      try {
        const url = new URL(addr)
        if (url.protocol !== 'https:' && url.protocol !== 'http:') problems.push(`${name}=${addr} must start with https:// or http://`)
        return { addr, https: url.protocol !== 'http:' }
      } catch {
        if (addr) problems.push(`${name}=${JSON.stringify(addr)} is not a URL (${example})`)
        return { addr, https: true }
      }
    },
    /** A local path: relative paths resolve against the repository root, ~/ against HOME. */
    localPath(name: string, fallback?: string): string | undefined {
      const v = fallback === undefined ? c.optional(name) : c.get(name, fallback)
      if (!v) return undefined
      return v.startsWith('~/') ? path.join(homedir(), v.slice(2)) : path.resolve(root, v)
    },
    /** A path on a server: absolute, and only characters that no shell treats specially. */
    remotePath(name: string, fallback: string): string {
      const v = c.get(name, fallback)
      if (v && !v.startsWith('/')) problems.push(`${name}=${JSON.stringify(v)} must be an absolute path`)
      else if (v && !/^\/[A-Za-z0-9._/+@-]*$/.test(v))
        problems.push(`${name}=${JSON.stringify(v)} may only hold letters, digits and . _ / + @ - (no spaces or shell characters)`)
      else if (v && /(^|\/)\.\.?(\/|$)/.test(v)) problems.push(`${name}=${JSON.stringify(v)} must not contain . or .. segments`)
      return v.replace(/(.)\/+$/, '$1')
    },
    /** A file name on a server: same characters, no slash, not starting with - or . */
    remoteName(name: string, fallback: string): string {
      const v = c.get(name, fallback)
      if (v && !/^[A-Za-z0-9_+@][A-Za-z0-9._+@-]*$/.test(v))
        problems.push(`${name}=${JSON.stringify(v)} must be a plain file name: letters, digits and . _ + @ -, not starting with - or .`)
      return v
    },
    /** A positive number of seconds (decimals allowed), with a default. */
    seconds(name: string, fallback: number): number {
      const v = c.get(name, String(fallback))
      if (v && !(/^\d+(\.\d+)?$/.test(v) && Number(v) > 0)) {
        problems.push(`${name}=${JSON.stringify(v)} must be a positive number of seconds`)
        return fallback
      }
      // Node's timers hold at most 2^31-1 ms; past that they fire at once.
      if (Number(v) > MAX_SECONDS) {
        problems.push(`${name}=${v} is more than ${MAX_SECONDS} seconds (24 days), the longest wait a timer can hold`)
        return fallback
      }
      return Number(v)
    },
    /**
     * A Vault KV v2 path as the vault CLI takes it (<mount>/<path>), and its mount: `mount` when given
     * (a mount may be nested: team/kv), else the first segment. The vault CLI inserts /data/ after the
     * WHOLE mount (command/kv_helpers.go addPrefixToKVPath): `api` is what templates read,
     * <mount>/data/<path>; `args` name the mount explicitly for vault kv (-mount=<mount> <path>).
     */
    kvPath(name: string, fallback: string, mount?: string): { path: string; api: string; mount: string; args: string[] } {
      const v = c.get(name, fallback)
      const m = (mount ?? v.split('/')[0]).replace(/^\/+|\/+$/g, '')
      const rest = v.startsWith(`${m}/`) ? v.slice(m.length + 1) : ''
      const bad = (p: string) => p.split('/').some((x) => x === '.' || x === '..')
      if (v && !/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_.-]+)+$/.test(v))
        problems.push(`${name}=${JSON.stringify(v)} must be <mount>/<path> of letters, digits and _ . - (such as secret/cedra/prod)`)
      else if (bad(v) || bad(m)) problems.push(`${name}=${JSON.stringify(v)} must not contain . or .. segments`)
      else if (!rest) problems.push(`${name}=${JSON.stringify(v)} is not inside the mount ${m}: it must start with ${m}/ (STOREFRONT_VAULT_MOUNT is the KV mount, such as secret or team/kv)`)
      else if (rest.split('/')[0] === 'data')
        problems.push(`${name}=${JSON.stringify(v)}: give the path as the vault CLI takes it, without /data/ (${m}/cedra/prod, not ${m}/data/cedra/prod)`)
      return { path: v, api: `${m}/data/${rest}`, mount: m, args: [`-mount=${m}`, rest] }
    },
    /** A tool on PATH. */
    tool(name: string, hint: string) {
      if (!which.sync(name, { nothrow: true })) soft.push(`${name} not found on PATH (${hint})`)
    },
    /** Report everything at once; exit 2 if a real run cannot go on. */
    done() {
      // From here on, a child (ssh, go, git...) gets none of the kit's secrets unless its connection allows it.
      $.env = childEnv()
      for (const w of warnings) console.error(`warning: ${w}`)
      if (dryRun) for (const s of soft) console.error(`warning: a real run would refuse: ${s}`)
      for (const w of [...warnings, ...(dryRun ? soft.map((s) => `a real run would refuse: ${s}`) : [])]) reportWarning(redact(w))
      const all = dryRun ? problems : [...problems, ...soft]
      if (all.length) refuse(all)
    },
  }
  return c
}

/** Print every problem in one message and exit 2: nothing has changed. */
export function refuse(problems: string[]): never {
  report({ problems: problems.map(redact), message: `refused (nothing was changed): ${redact(problems[0] ?? '')}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}` })
  console.error(`refused (nothing was changed):\n${problems.map((p) => `  - ${redact(p)}`).join('\n')}`)
  exit(EXIT.refused)
}

/**
 * Ask for a secret at the terminal with echo off (raw mode is set BEFORE the prompt shows, so no
 * keystroke is ever echoed). Ctrl-C, which raw mode turns into a character, is handed back as SIGINT.
 */
/** A person can be asked: stdin and stderr are a terminal, and no CI variable says otherwise. */
export function canPrompt(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY && !process.env.CI)
}

const PROMPT_SECONDS = 300
export async function askHidden(label: string): Promise<string> {
  const tty = process.stdin
  tty.setRawMode(true)
  onExit(() => tty.isRaw && tty.setRawMode(false))
  process.stderr.write(label)
  tty.setEncoding('utf8')
  tty.resume()
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = ''
      let control = false // a TAB or another control character: refused, never silently dropped
      const timer = setTimeout(() => {
        tty.off('data', onData)
        reject(Object.assign(new Error(`no answer at the prompt within ${PROMPT_SECONDS / 60} minutes: nothing was written`), { refused: true }))
      }, PROMPT_SECONDS * 1000)
      timer.unref()
      const onData = (chunk: string) => {
        for (const ch of chunk) {
          if (ch === '\r' || ch === '\n' || ch === '\u0004') {
            tty.off('data', onData)
            clearTimeout(timer)
            if (control) return reject(Object.assign(new Error('the typed value holds a TAB or another control character: type it again without'), { refused: true }))
            return resolve(secret(value) ?? value)
          }
          if (ch === '\u0003') {
            tty.off('data', onData)
            tty.setRawMode(false)
            return void process.kill(process.pid, 'SIGINT')
          }
          if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('')
          else if (ch >= ' ') value += ch
          else control = true
        }
      }
      tty.on('data', onData)
    })
  } catch (e) {
    if ((e as { refused?: boolean }).refused) refuse([(e as Error).message])
    throw e
  } finally {
    tty.setRawMode(false)
    tty.pause()
    process.stderr.write('\n')
  }
}
