// The connection helper: how scripts reach the cluster and the servers.
// - Nomad: NOMAD_* variables checked (TLS files parsed with node:crypto) and handed to the local
//   nomad CLI through its environment, never as flags; the plan -> run -check-index -> follow sequence.
// - ssh: the DEPLOY_SSH_* target checked, ONE authenticated master connection per run, and remote
//   commands that are a fixed `sh -c` script with POSIX-quoted arguments.
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { $, type ProcessOutput } from 'zx'
import { EXIT, fail, onExit, refuse, root, secret, step, type Checks } from './env.mts'

// ---------------------------------------------------------------------------------------------
// Nomad

const TLS_VARS = ['NOMAD_CACERT', 'NOMAD_CLIENT_CERT', 'NOMAD_CLIENT_KEY', 'NOMAD_TLS_SERVER_NAME'] as const
// Nomad 1.6-1.9 attach VAULT_TOKEN / CONSUL_HTTP_TOKEN from the environment to the job: never hand them over.
const NEVER_TO_NOMAD = ['VAULT_TOKEN', 'CONSUL_HTTP_TOKEN']

export type Nomad = ReturnType<typeof nomadConnection>

/** Check the NOMAD_* configuration and the nomad CLI; return what runs nomad with it. */
export function nomadConnection(check: Checks) {
  const addr = check.need('NOMAD_ADDR')
  let https = true
  try {
    const url = new URL(addr)
    if (url.protocol !== 'https:' && url.protocol !== 'http:') check.problem(`NOMAD_ADDR=${addr} must start with https:// or http://`)
    https = url.protocol === 'https:'
  } catch {
    if (addr) check.problem(`NOMAD_ADDR=${JSON.stringify(addr)} is not a URL (https://host:4646)`)
  }
  const token = https ? check.need('NOMAD_TOKEN') : check.optional('NOMAD_TOKEN')
  secret(token)
  check.optional('NOMAD_NAMESPACE')
  check.optional('NOMAD_REGION')
  const limit = check.seconds('DEPLOY_COMMAND_TIMEOUT', 60)
  check.tool('nomad', 'install the Nomad CLI 1.6+: https://developer.hashicorp.com/nomad/install')

  const env: Record<string, string | undefined> = { ...process.env }
  for (const name of NEVER_TO_NOMAD) delete env[name]
  if (https) {
    const ca = check.localPath('NOMAD_CACERT', 'certs/ca.pem')!
    const cert = check.localPath('NOMAD_CLIENT_CERT')
    const key = check.localPath('NOMAD_CLIENT_KEY')
    check.optional('NOMAD_TLS_SERVER_NAME')
    checkTls(check, { ca, cert, key })
    Object.assign(env, { NOMAD_CACERT: ca, NOMAD_CLIENT_CERT: cert, NOMAD_CLIENT_KEY: key })
  } else {
    const set = TLS_VARS.filter((n) => process.env[n] !== undefined)
    if (set.length) check.problem(`NOMAD_ADDR is http:// but ${set.join(', ')} ${set.length > 1 ? 'are' : 'is'} set: use https:// or unset them`)
  }
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]
  const nomad = $({ env, timeout: `${limit}s`, nothrow: true })
  const shown = ['NOMAD_ADDR', ...TLS_VARS, 'NOMAD_NAMESPACE', 'NOMAD_REGION'].filter((n) => env[n])
  return {
    addr,
    limit,
    /** zx shell with the nomad environment and the time limit; results are checked by the caller (nothrow). */
    $: nomad,
    /** One copy-pasteable line that sets the same environment (the token as a reference). */
    exportLine: `export ${shown.map((n) => `${n}=${shq(env[n]!)}`).join(' ')}${token ? ' NOMAD_TOKEN="$NOMAD_TOKEN"' : ''}`,
  }
}

/** TLS files: exist, parse as PEM, not expired (warning under 30 days), key matches cert, cert issued by CA. */
function checkTls(check: Checks, files: { ca: string; cert?: string; key?: string }) {
  if (Boolean(files.cert) !== Boolean(files.key)) check.problem('NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY go together: set both or neither')
  const ca = readCerts(check, 'NOMAD_CACERT', files.ca)
  const cert = files.cert ? readCerts(check, 'NOMAD_CLIENT_CERT', files.cert)?.[0] : undefined
  if (files.key && cert) {
    const pem = readPem(check, 'NOMAD_CLIENT_KEY', files.key)
    if (pem !== undefined) {
      try {
        if (!cert.checkPrivateKey(createPrivateKey(pem))) check.problem(`NOMAD_CLIENT_KEY (${files.key}) does not match NOMAD_CLIENT_CERT (${files.cert})`)
      } catch {
        check.problem(`NOMAD_CLIENT_KEY (${files.key}) is not a PEM private key`)
      }
    }
  }
  if (ca && cert && !ca.some((c) => cert.checkIssued(c) && cert.verify(c.publicKey)))
    check.problem(`NOMAD_CLIENT_CERT (${files.cert}) was not issued by NOMAD_CACERT (${files.ca})`)
}

function readPem(check: Checks, name: string, file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    const hint = name.startsWith('NOMAD_') ? ' (see certs/README.md)' : ''
    check.missing(`${name}: ${file} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}${hint}`)
  }
}

/** PEM certificates in a file: each parses, none expired (a warning under 30 days left). */
export function readCerts(check: Checks, name: string, file: string): X509Certificate[] | undefined {
  const pem = readPem(check, name, file)
  if (pem === undefined) return
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  const certs: X509Certificate[] = []
  for (const block of blocks) {
    try {
      certs.push(new X509Certificate(block))
    } catch {
      /* reported below */
    }
  }
  if (!certs.length || certs.length !== blocks.length) {
    check.problem(`${name} (${file}) is not a PEM certificate`)
    return
  }
  for (const c of certs) {
    const left = (Date.parse(c.validTo) - Date.now()) / 86_400_000
    if (left < 0) check.problem(`${name} (${file}) expired on ${c.validTo}`)
    else if (left < 30) check.warn(`${name} (${file}) expires in ${Math.floor(left)} days (${c.validTo})`)
    if (Date.parse(c.validFrom) > Date.now()) check.problem(`${name} (${file}) is not valid before ${c.validFrom}`)
  }
  return certs
}

/** Why a nomad call failed, in words a person can act on; the exit code it deserves. */
export function nomadError(nomad: Nomad, out: ProcessOutput): { message: string; code: number } {
  const err = (out.stderr.trim() || out.stdout.trim()).split('\n').filter(Boolean)
  const text = err.join(' ')
  if (/\b403\b|Permission denied|ACL token not found/i.test(text))
    return { code: EXIT.refused, message: `Nomad at ${nomad.addr} refused the token (403): check NOMAD_TOKEN and its ACL policy (${err[0]})` }
  if (/x509|certificate|tls:/i.test(text))
    return { code: EXIT.refused, message: `TLS handshake with Nomad at ${nomad.addr} failed: check NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_TLS_SERVER_NAME (${err[0]})` }
  if (timedOut(out, nomad.limit))
    return { code: EXIT.failed, message: `cannot reach Nomad at ${nomad.addr}: a connection problem (${noAnswer(nomad.limit)})` }
  if (/dial tcp|connection refused|no such host|i\/o timeout|deadline exceeded|network is unreachable/i.test(text) || out.signal)
    return { code: EXIT.failed, message: `cannot reach Nomad at ${nomad.addr}: a connection problem (${err[0] ?? out.signal})` }
  return { code: EXIT.failed, message: `nomad exited ${out.exitCode}: ${err.slice(-3).join(' | ')}` }
}

/**
 * Did a command end because its time limit stopped it? zx kills the tree with SIGTERM: the shell in
 * between reports either the signal or 143, after at least the limit.
 */
export function timedOut(out: ProcessOutput, limitSeconds: number): boolean {
  return (out.signal === 'SIGTERM' || out.exitCode === 143) && out.duration >= limitSeconds * 1000 - 250
}
export const noAnswer = (limitSeconds: number) => `no answer within DEPLOY_COMMAND_TIMEOUT=${limitSeconds}s; stopped with its process tree`

/** Stop with nomad's reason: exit 2 when the configuration is at fault and nothing changed, else 1. */
function nomadFailed(nomad: Nomad, what: string, out: ProcessOutput, changed: boolean): never {
  const { message, code } = nomadError(nomad, out)
  if (changed || code !== EXIT.refused) fail(`${what}: ${message}`)
  refuse([`${what}: ${message}`])
}

export type Plan = { job: string; file: string; vars: string[]; index: number; unchanged: boolean; created: boolean }

/** `nomad job plan`: proves the cluster answers and accepts the token, shows the diff, gives the modify index. */
export async function planJob(nomad: Nomad, job: string, file: string, vars: Record<string, string> = {}): Promise<Plan> {
  const varArgs = Object.entries(vars).map(([k, v]) => `-var=${k}=${v}`)
  const out = await nomad.$`nomad job plan ${varArgs} ${file}`
  // 0: no allocation changes (also in-place updates), 1: allocations change, 255: error.
  if (out.exitCode !== 0 && out.exitCode !== 1) {
    if (/Error getting job struct|Error parsing job file|Unset variable|Undefined -var variable/.test(out.stderr))
      refuse([`${path.relative(root, file)} does not parse: ${out.stderr.trim().split('\n').slice(-2).join(' ')}`,
        `check it with: nomad job validate ${[...varArgs, shown(file)].map(shq).join(' ')}`])
    nomadFailed(nomad, `nomad job plan ${path.basename(file)}`, out, false)
  }
  const index = out.stdout.match(/^Job Modify Index: (\d+)$/m)
  if (!index) fail(`nomad job plan printed no "Job Modify Index" line:\n${out.stdout}`)
  const diff = out.stdout.slice(0, out.stdout.indexOf('Job Modify Index:')).trimEnd()
  console.error(diff.replace(/^/gm, '    '))
  // The scheduler could not place it (a host volume no client declares, no capacity...): running it
  // would leave a blocked deployment. Refuse, with the scheduler's reasons.
  if (/WARNING: Failed to place/.test(out.stdout)) {
    const reasons = diff.split('\n').map((l) => l.trim().replace(/^[-*]\s*/, '')).filter((l) => /^Constraint|^Task Group/.test(l))
    refuse([`nomad cannot place ${job} (nothing was run): ${reasons.join('; ')}` +
      (/host volume/.test(diff) ? ' — declare the host_volume on a client by hand (DEPLOYMENT_GUIDE.md, section 2) and restart it' : '')])
  }
  // The first diff line carries the job's marker: "+ Job:" new, "+/- Job:" edited, bare "Job:" unchanged.
  const first = out.stdout.split('\n', 1)[0]
  return {
    job, file, vars: varArgs, index: Number(index[1]),
    unchanged: out.exitCode === 0 && first.startsWith('Job: '),
    created: first.startsWith('+ Job: '),
  }
}

/** `nomad job run -check-index N -detach`: a concurrent change aborts instead of being overwritten. */
export async function runJob(nomad: Nomad, plan: Plan): Promise<number> {
  const out = await nomad.$`nomad job run -check-index ${plan.index} -detach ${plan.vars} ${plan.file}`
  if (!out.ok) {
    if (/Enforcing job modify index/.test(out.stderr))
      fail(`${plan.job} changed on the cluster since the plan (${out.stderr.trim().split('\n')[0]}): nothing was overwritten; run again to plan against the new version`)
    nomadFailed(nomad, 'nomad job run', out, true)
  }
  const version = await nomad.$`nomad job inspect -t ${'{{.Version}}'} ${plan.job}`
  if (!version.ok) nomadFailed(nomad, 'nomad job inspect', version, true)
  return Number(version.stdout.trim())
}

export type Outcome = { outcome: 'successful' | 'canary' | 'failed' | 'timeout' | 'none'; line: string; deployment?: string }

/**
 * Follow the deployment of a job version until it succeeds, fails, or waits for promotion.
 * (`deployment status -monitor` always exits 0 and an attached `job run` blocks while a canary waits.)
 */
export async function followDeployment(nomad: Nomad, job: string, version: number, timeoutSeconds: number): Promise<Outcome> {
  const every = Number(process.env.DEPLOY_POLL_SECONDS ?? 5) * 1000 // checked by timeoutSeconds()
  const deadline = Date.now() + timeoutSeconds * 1000
  let last = ''
  for (;;) {
    const out = await nomad.$`nomad job deployments -latest -json ${job}`
    if (!out.ok) nomadFailed(nomad, 'nomad job deployments', out, true)
    let d = out.stdout.trim() && out.stdout.trim() !== 'null' ? JSON.parse(out.stdout) : undefined
    if (d && d.JobVersion > version) {
      // A newer version: the auto-revert of OUR failed deployment, or someone else's deploy. Ours says which.
      const all = await nomad.$`nomad job deployments -json ${job}`
      if (!all.ok) nomadFailed(nomad, 'nomad job deployments', all, true)
      const mine = (JSON.parse(all.stdout || '[]') as { JobVersion: number }[] | null)?.find((x) => x.JobVersion === version)
      if (!mine) return { outcome: 'failed', line: `${job} version ${version} was superseded by version ${d.JobVersion} (deployment ${d.ID.slice(0, 8)}): someone else deployed meanwhile`, deployment: d.ID }
      d = mine
    }
    if (d && d.JobVersion === version) {
      const id = d.ID.slice(0, 8)
      // Groups that auto_promote are promoted by Nomad itself: they never wait for a person.
      const groups = Object.values(d.TaskGroups ?? {}) as { DesiredCanaries: number; HealthyAllocs: number; Promoted: boolean; AutoPromote?: boolean }[]
      const progress = `${d.Status}: ${d.StatusDescription}`
      if (progress !== last) console.error(`    deployment ${id} ${progress}`)
      last = progress
      if (d.Status === 'successful') return { outcome: 'successful', line: `${job} version ${version}: deployment ${id} successful (${d.StatusDescription})`, deployment: d.ID }
      if (['failed', 'cancelled'].includes(d.Status)) return { outcome: 'failed', line: `${job} version ${version}: deployment ${id} ${d.Status}: ${d.StatusDescription}`, deployment: d.ID }
      const waiting = groups.filter((g) => g.DesiredCanaries > 0 && !g.Promoted && !g.AutoPromote)
      if (d.Status === 'running' && waiting.length && waiting.every((g) => g.HealthyAllocs >= g.DesiredCanaries))
        return { outcome: 'canary', line: `${job} version ${version}: canary healthy, deployment ${id} waiting for promotion`, deployment: d.ID }
    }
    if (Date.now() + every > deadline)
      return { outcome: 'timeout', line: `${job} version ${version}: deployment ${d?.JobVersion === version ? `${d.ID.slice(0, 8)} still ${d.Status}` : 'not started'} after ${timeoutSeconds}s (--timeout); it goes on in Nomad`, deployment: d?.ID }
    await new Promise((r) => setTimeout(r, every))
  }
}

/** The shared sequence: plan (already done above the point of no return) -> run -> follow -> one-line outcome. */
export async function deployPlanned(nomad: Nomad, plan: Plan, timeoutSeconds: number): Promise<Outcome> {
  if (plan.unchanged) {
    console.log(`${plan.job} is already up to date (the plan shows no change): nothing was run`)
    return { outcome: 'none', line: `${plan.job} already up to date` }
  }
  step(`Run ${plan.job} (check-index ${plan.index})`)
  const version = await runJob(nomad, plan)
  step(`Follow the deployment of ${plan.job} version ${version}`)
  const result = await followDeployment(nomad, plan.job, version, timeoutSeconds)
  console.log(result.line)
  if (result.outcome === 'failed' || result.outcome === 'timeout') process.exitCode = EXIT.failed
  return result
}

/** The commands a dry run prints instead of running (one per line, copy-pasteable). */
export function planCommands(nomad: Nomad, file: string, vars: Record<string, string> = {}) {
  const v = Object.entries(vars).map(([k, val]) => ` ${shq(`-var=${k}=${val}`)}`).join('')
  const f = shq(shown(file))
  return [nomad.exportLine, `nomad job plan${v} ${f}`, `nomad job run -check-index "$JOB_MODIFY_INDEX_FROM_PLAN" -detach${v} ${f}`]
}

/** --timeout of a script that follows a deployment (and the poll interval it follows it with). */
/** A path as a person at this terminal would type it: relative when under the current directory. */
function shown(file: string): string {
  const rel = path.relative(process.cwd(), file)
  return rel && !rel.startsWith('..') ? rel : file
}

export function timeoutSeconds(flag: string | boolean | undefined, check: Checks, fallback = 600): number {
  check.seconds('DEPLOY_POLL_SECONDS', 5)
  if (flag === undefined) return fallback
  const m = String(flag).match(/^(\d+)(s|m)?$/)
  if (!m || Number(m[1]) === 0) {
    check.problem(`--timeout ${flag}: give a positive duration such as 300, 300s or 10m`)
    return fallback
  }
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1)
}

// ---------------------------------------------------------------------------------------------
// ssh

/** POSIX sh single-quoting: safe for dash and bash alike (zx's $'...' is bash-only). */
export function shq(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

const CONNECT_TIMEOUT = 10 // seconds: TCP connect and the ssh banner

export type SshTarget = ReturnType<typeof sshTarget>

/** Check the DEPLOY_SSH_* configuration and the ssh client. */
export function sshTarget(check: Checks) {
  const host = check.need('DEPLOY_SSH_HOST')
  const user = check.get('DEPLOY_SSH_USER', 'root')
  const port = check.get('DEPLOY_SSH_PORT', '22')
  const key = check.localPath('DEPLOY_SSH_KEY')
  const knownHosts = check.localPath('DEPLOY_SSH_KNOWN_HOSTS')
  if (host && !/^[A-Za-z0-9][A-Za-z0-9.:-]*$/.test(host))
    check.problem(`DEPLOY_SSH_HOST=${JSON.stringify(host)} must be a host name or address (letters, digits, . : -, not starting with -)`)
  if (user && !/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(user))
    check.problem(`DEPLOY_SSH_USER=${JSON.stringify(user)} must be a plain user name (letters, digits, _ . -, not starting with -)`)
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) check.problem(`DEPLOY_SSH_PORT=${JSON.stringify(port)} must be a port number (1-65535)`)
  for (const [name, file] of [['DEPLOY_SSH_KEY', key], ['DEPLOY_SSH_KNOWN_HOSTS', knownHosts]] as const) {
    if (!file) continue
    // ssh splits these option values at whitespace and expands % and ${...} in them.
    if (/[\s%$"'\\]/.test(file)) check.problem(`${name}=${JSON.stringify(file)}: ssh cannot use a path holding whitespace, %, $, quotes or \\ (move or link the file)`)
    else readPem(check, name, file)
  }
  const limit = check.seconds('DEPLOY_COMMAND_TIMEOUT', 60)
  check.tool('ssh', 'install an OpenSSH client')
  const options = [
    '-o', 'BatchMode=yes', '-o', `ConnectTimeout=${CONNECT_TIMEOUT}`, '-o', 'StrictHostKeyChecking=yes',
    '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=2', '-p', port, '-l', user,
    ...(key ? ['-i', key, '-o', 'IdentitiesOnly=yes'] : []),
    ...(knownHosts ? ['-o', `UserKnownHostsFile=${knownHosts}`] : []),
  ]
  // What a person types to log in the same way (for the useful commands a script prints).
  const login = ['ssh', '-p', port, ...(key ? ['-i', key] : []), ...(knownHosts ? ['-o', `UserKnownHostsFile=${knownHosts}`] : []), `${user}@${host}`].map(shq).join(' ')
  return { host, user, port, options, limit, destination: `${user}@${host}`, login }
}

/** The string the remote login shell parses: a FIXED script, its arguments POSIX-quoted as "$1" "$2"... */
function remoteCommand(script: string, args: string[]): string {
  return ['sh', '-c', script, 'sh', ...args].map(shq).join(' ')
}

/**
 * One remote command as a copy-pasteable line (for --dry-run): the remote part exactly as a real run
 * sends it. `more` is appended in LOCAL shell syntax as one more remote word (e.g. "$SUM").
 */
export function sshCommand(target: SshTarget, script: string, args: string[] = [], more = ''): string {
  const remote = remoteCommand(script, args) + (more ? ' ' : '')
  return [...['ssh', ...target.options, '--', target.host].map(shq), shq(remote) + more].join(' ')
}

export type Ssh = Awaited<ReturnType<typeof openSsh>>

/**
 * Authenticate ONCE: a master connection (our own child, on a private control socket, its output
 * piped to us, never holding the script's stdout/stderr) that every remote command of this run goes
 * through; closed by close() or, whatever the way out, by onExit.
 */
export async function openSsh(target: SshTarget) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'deploy-ssh-')) // 0700, unique to this run
  const socket = path.join(dir, 's')
  const control = ['-S', socket.replace(/%/g, '%%')]
  const master = $({ nothrow: true })`ssh ${target.options} ${control} -o ControlMaster=yes -o ControlPersist=no -n -N -- ${target.host}`
  let ended = false
  void master.finally(() => (ended = true))
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    if (!ended) await $({ nothrow: true, timeout: '5s' })`ssh ${control} -O exit -- ${target.host}`
    for (let i = 0; !ended && i < 50; i++) await sleep(100)
    if (!ended) await $.kill(master.pid!, 'SIGKILL').catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  }
  onExit(close)
  // ssh creates the control socket once authenticated; it ends early when it cannot connect or log in.
  const deadline = Date.now() + (CONNECT_TIMEOUT + 20) * 1000
  while (!existsSync(socket)) {
    if (ended) fail(`ssh to ${target.destination} port ${target.port} failed: ${sshReason((await master).stderr)}`)
    if (Date.now() > deadline) {
      await close()
      fail(`ssh to ${target.destination} port ${target.port} failed: a connection problem: no login within ${CONNECT_TIMEOUT + 20}s`)
    }
    await sleep(50)
  }
  const late = new WeakSet<object>()
  const stopped = new WeakMap<ProcessOutput, number>()
  // Commands go through the master only: if it is gone, ProxyCommand=false fails them instead of
  // silently opening (and authenticating) a second connection.
  const through = [...control, '-o', 'ControlMaster=no', '-o', 'ProxyCommand=false', '-o', 'BatchMode=yes']
  return {
    /**
     * Run a FIXED sh script on the server; `args` arrive as "$1", "$2"... POSIX-quoted, so the remote
     * login shell (dash or bash) cannot reinterpret them. Data, if any, goes on stdin. Check the result.
     */
    async run(script: string, args: string[] = [], opts: { input?: NodeJS.ReadableStream | Buffer | string; timeoutSeconds?: number } = {}): Promise<ProcessOutput> {
      const stdin = opts.input === undefined ? ['-n'] : []
      const p = $({ nothrow: true, input: opts.input as never })`ssh ${through} ${stdin} -- ${target.host} ${remoteCommand(script, args)}`
      p.stdin?.on('error', () => {}) // the remote side stopped reading: its exit status and stderr say why
      // The time limit is ours, not zx's: the master holds this command's pipes, so killing the client
      // alone never ends it. Past the limit, stop the client AND close the connection.
      const limit = opts.timeoutSeconds ?? target.limit
      const timer = setTimeout(() => {
        late.add(p)
        void p.kill('SIGTERM').catch(() => {})
        void close()
      }, limit * 1000)
      const out = await p.finally(() => clearTimeout(timer))
      if (late.has(p)) stopped.set(out, limit)
      return out
    },
    /** Why a remote command failed, in words a person can act on. */
    why(out: ProcessOutput): string {
      if (stopped.has(out)) return `a connection problem (${noAnswer(stopped.get(out)!)}; the connection was closed)`
      if (out.signal) return `stopped by ${out.signal}`
      const err = out.stderr.trim()
      if (out.exitCode === 255 && ended) return `the ssh connection to ${target.destination} was lost: a connection problem (${sshReason(err)})`
      return `exited ${out.exitCode}${err ? `: ${err.split('\n').slice(-3).join(' | ')}` : ''}`
    },
    close,
  }
}

// ---------------------------------------------------------------------------------------------
// Host volume directories (the volume scripts): look, make, and the block a person adds by hand.

// Fixed remote scripts; the path arrives as "$1". LOOK only reads: "absent", "dir MODE" or "other".
const LOOK_DIR = 'if [ -d "$1" ]; then echo "dir $(stat -L -c %a -- "$1")"; elif [ -e "$1" ] || [ -L "$1" ]; then echo other; else echo absent; fi'
const MAKE_DIR = 'mkdir -p -- "$1" && chmod 755 -- "$1"'

/** The commands a dry run of a volume script prints (the second runs only when needed). */
export function volumeCommands(target: SshTarget, dir: string): string[] {
  return [sshCommand(target, LOOK_DIR, [dir]), sshCommand(target, MAKE_DIR, [dir])]
}

/** What is at `dir` on the server: "absent" or "dir MODE"; something else there is refused (exit 2). */
export async function lookAtVolume(ssh: Ssh, target: SshTarget, dir: string, variable: string): Promise<string> {
  const look = await ssh.run(LOOK_DIR, [dir])
  if (!look.ok) fail(`looking at ${dir} on ${target.destination}: ${ssh.why(look)}`)
  const state = look.stdout.trim()
  if (state === 'other') {
    await ssh.close()
    refuse([`${dir} exists on ${target.destination} but is not a directory: move it away or set ${variable}`])
  }
  return state
}

/** Create `dir` with mode 755 (or fix its mode); idempotent: says so when nothing had to change. */
export async function makeVolume(ssh: Ssh, target: SshTarget, dir: string, state: string): Promise<string> {
  if (state === 'dir 755') return `${dir} already exists on ${target.destination} with mode 755: nothing changed`
  step(state === 'absent' ? `Create ${dir} (mode 755)` : `Set mode 755 on ${dir} (was ${state.slice(4)})`)
  const made = await ssh.run(MAKE_DIR, [dir])
  if (!made.ok) fail(`creating ${dir} on ${target.destination}: ${ssh.why(made)}`)
  return state === 'absent' ? `${dir} created on ${target.destination} with mode 755` : `${dir} on ${target.destination}: mode ${state.slice(4)} changed to 755`
}

/** The client configuration a person adds by hand for a host volume (no script ever applies it). */
export function hostVolumeBlock(volume: string, dir: string, host = 'the client that runs the job'): string {
  return `Add by hand to /etc/nomad.d/nomad.hcl on ${host}, inside its client block (no script does this):
  client {
    host_volume "${volume}" {
      path      = "${dir}"
      read_only = false
    }
  }
then restart Nomad on that server: sudo systemctl restart nomad`
}

/** ssh's stderr, read for what a person should do. */
function sshReason(stderr: string): string {
  const s = stderr.trim()
  const last = s.split('\n').filter(Boolean).pop() ?? 'no message'
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED/.test(s))
    return 'the server\'s host key has CHANGED (possible man-in-the-middle): nothing was run on it; verify the new key out of band, then fix known_hosts (ssh-keygen -R HOST, or the line for [HOST]:PORT)'
  if (/Host key verification failed|host key is known|No .* host key is known/.test(s))
    return 'the server\'s host key is not in known_hosts: verify its fingerprint, then add it (ssh-keyscan -p PORT HOST >> DEPLOY_SSH_KNOWN_HOSTS)'
  if (/UNPROTECTED PRIVATE KEY FILE/.test(s)) return 'DEPLOY_SSH_KEY is readable by others and ssh ignores it: chmod 600 it'
  if (/Permission denied|Too many authentication failures/.test(s)) return `authentication refused: check DEPLOY_SSH_USER and DEPLOY_SSH_KEY (${last})`
  if (/timed out|Connection refused|No route to host|Could not resolve|Name or service not known|Network is unreachable|Connection closed|Connection reset|kex_exchange_identification|banner exchange/i.test(s))
    return `a connection problem: ${last}`
  return s.split('\n').slice(-2).join(' | ') || 'no message'
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
