// What the test doubles of nomad, vault and docker share: the state directory ($STUB_STATE), each
// tool's state file written atomically, the call log (one JSON line per call), one call at a time
// under a lock file (as a server applies requests), and the hang and barrier knobs.
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'

export const dir = process.env.STUB_STATE
if (!dir) {
  process.stderr.write(`${path.basename(process.argv[1])}: STUB_STATE is not set\n`)
  process.exit(99)
}

export const out = (s) => process.stdout.write(s.endsWith('\n') ? s : s + '\n')
export const err = (s) => process.stderr.write(s.endsWith('\n') ? s : s + '\n')

/** The tool's state, with its defaults filled in. */
export function readState(tool, defaults) {
  const file = path.join(dir, `${tool}.json`)
  return defaults(existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {})
}

/** Write the tool's state atomically (rename), so that a concurrent reader never sees half of it. */
export function writeState(tool, state) {
  const file = path.join(dir, `${tool}.json`)
  const tmp = `${file}.${process.pid}`
  writeFileSync(tmp, JSON.stringify(state, null, 2))
  renameSync(tmp, file)
}

/** Append this call to $STUB_STATE/calls.jsonl: argv, the chosen environment variables, stdin. */
export function logCall(tool, argv, envNames, stdin) {
  const env = Object.fromEntries(envNames.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]))
  appendFileSync(path.join(dir, 'calls.jsonl'), JSON.stringify({ tool, argv, ...(stdin === undefined ? {} : { stdin }), env }) + '\n')
}

/** The server applies one request at a time: hold a lock file (our pid) until this process exits. */
export function lock(tool) {
  const file = path.join(dir, `${tool}.lock`)
  const nap = new Int32Array(new SharedArrayBuffer(4))
  for (;;) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' })
      break
    } catch (e) {
      if (e.code !== 'EEXIST') throw e
    }
    let holder = 0
    try { holder = Number(readFileSync(file, 'utf8')) } catch { continue }
    if (holder && !alive(holder)) { try { unlinkSync(file) } catch {} continue } // a call killed while holding it
    Atomics.wait(nap, 0, 0, 5)
  }
  process.on('exit', () => { try { if (readFileSync(file, 'utf8') === String(process.pid)) unlinkSync(file) } catch {} })
}

/** Never answer (a server that accepted the connection and hangs); $STUB_STATE/hanging.<pid> says it hangs now. */
export function hang() {
  writeFileSync(path.join(dir, `hanging.${process.pid}`), '')
  setInterval(() => {}, 1000)
  return new Promise(() => {})
}

/** The barrier knob: wait until `n` calls of this subcommand have arrived (each leaves a file). */
export async function barrier(tool, cmd, n) {
  if (!n) return
  const d = path.join(dir, `barrier-${tool}-${cmd.replace(/\W+/g, '-')}`)
  mkdirSync(d, { recursive: true })
  writeFileSync(path.join(d, String(process.pid)), '')
  for (const end = Date.now() + 30_000; readdirSync(d).length < n; await new Promise((r) => setTimeout(r, 20)))
    if (Date.now() > end) { err(`${tool} test double: barrier "${cmd}" waited 30s for ${n} calls`); process.exit(99) }
}

function alive(pid) {
  try { process.kill(pid, 0); return true } catch (e) { return e.code === 'EPERM' }
}

/** The slow knob: this call waits `seconds` before it acts ($STUB_STATE/slow.<pid> says it is under way). */
export async function slowDown(cmd, seconds) {
  if (!seconds) return
  writeFileSync(path.join(dir, `slow.${process.pid}`), cmd)
  await new Promise((r) => setTimeout(r, seconds * 1000))
}

/** Let the lock go before this process ends (a call that goes on waiting, as an attached monitor does). */
export function unlock(tool) {
  const file = path.join(dir, `${tool}.lock`)
  try { if (readFileSync(file, 'utf8') === String(process.pid)) unlinkSync(file) } catch {}
}

/**
 * The signalAfter knob, { cmd, signal, pid }: when this call of `cmd` ends, it sends `signal` to `pid`
 * (the script under test), so that the signal arrives just as the step's command has succeeded.
 */
export function signalAfter(cmd, knob) {
  if (!knob || knob.cmd !== cmd) return
  process.on('exit', () => { try { process.kill(knob.pid, knob.signal) } catch {} })
}
