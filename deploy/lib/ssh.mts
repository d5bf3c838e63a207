// ssh: the DEPLOY_SSH_* target checked, ONE authenticated master connection per run, and remote
// commands that are a fixed `sh -c` script with POSIX-quoted arguments.
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { $, type ProcessOutput } from 'zx'
import { fail, onExit, shq, type Checks } from './env.mts'
import { spareUntilCleanup } from './run.mts'
import { noAnswer } from './nomad.mts'
import { readPem } from './tls.mts'

const CONNECT_TIMEOUT = 10 // seconds: TCP connect and the ssh banner

export type SshTarget = { host: string; user: string; port: string; options: string[]; limit: number; destination: string; login: string }

/**
 * The hosts: DEPLOY_SSH_HOST for one, DEPLOY_SSH_HOSTS for several (separated by spaces or commas).
 * The ssh scripts reach them; deploy_nomad and status only match them to Nomad nodes (no ssh).
 */
export function sshHosts(check: Checks): string[] {
  const one = check.optional('DEPLOY_SSH_HOST')
  const list = check.optional('DEPLOY_SSH_HOSTS')
  if (one && list) check.problem('DEPLOY_SSH_HOST and DEPLOY_SSH_HOSTS are both set: keep one (DEPLOY_SSH_HOSTS for several hosts)')
  if (process.env.DEPLOY_SSH_HOST === undefined && process.env.DEPLOY_SSH_HOSTS === undefined)
    check.problem('DEPLOY_SSH_HOST is not set (or DEPLOY_SSH_HOSTS, for several hosts: host1,host2)')
  const variable = list ? 'DEPLOY_SSH_HOSTS' : 'DEPLOY_SSH_HOST'
  const hosts = list ? list.split(/[\s,]+/).filter(Boolean) : one ? [one] : []
  for (const host of hosts) {
    // A name or an IPv4 address, or an IPv6 address (::1, fe80::1); never anything ssh could read as an option.
    if (!/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(host) && !/^[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*$/.test(host))
      check.problem(`${variable}=${JSON.stringify(list ?? one)}${list ? `: ${JSON.stringify(host)}` : ''} must be a host name or address (letters, digits, . -, or an IPv6 address such as ::1; not starting with -)`)
  }
  const twice = hosts.filter((h, i) => hosts.indexOf(h) !== i)
  if (twice.length) check.problem(`DEPLOY_SSH_HOSTS names ${[...new Set(twice)].join(', ')} more than once`)
  return hosts
}

/** Check the DEPLOY_SSH_* configuration and the ssh client: the hosts, each reached with the same user, port, key and known_hosts. */
export function sshTargets(check: Checks): SshTarget[] {
  const hosts = sshHosts(check)
  const user = check.get('DEPLOY_SSH_USER', 'root')
  const port = check.get('DEPLOY_SSH_PORT', '22')
  const key = check.localPath('DEPLOY_SSH_KEY')
  const knownHosts = check.localPath('DEPLOY_SSH_KNOWN_HOSTS')
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
  return hosts.map((host) => ({
    host, user, port, options, limit, destination: `${user}@${host}`,
    // What a person types to log in the same way (for the useful commands a script prints).
    login: ['ssh', '-p', port, ...(key ? ['-i', key] : []), ...(knownHosts ? ['-o', `UserKnownHostsFile=${knownHosts}`] : []), `${user}@${host}`].map(shq).join(' '),
  }))
}

/** The string the remote login shell parses: a FIXED script, its arguments POSIX-quoted as "$1" "$2"... */
function remoteCommand(script: string, args: string[]): string {
  return ['sh', '-c', script, 'sh', ...args].map(shq).join(' ')
}

/** One remote step of a dry run: a NAME for its script, what it does, the script and its arguments. */
export type DryStep = { name: string; what: string; script: string; args: string[]; more?: string; stdin?: string }

/**
 * The ssh commands of a dry run, for a person to read and paste (sh or bash): the connection once, as
 * a function; each fixed remote script one statement a line, in a quoted here-document (taken as
 * written, nothing expanded); then the call, the same `sh -c '<script>' sh <args>` that a real run
 * sends. `more` is one more remote word in LOCAL shell syntax (e.g. $SUM), `stdin` a redirection.
 */
/** A one-line script (statements joined by "; ") laid out one statement a line, if/then/else indented. */
function statements(script: string): string[] {
  const out: string[] = []
  let depth = 0
  // A `case` arm's ";; " is no statement end: splitting there would leave a lone ";" (a syntax error).
  const tokens = script.split(/(?<!;); (?!;)/)
  for (let i = 0; i < tokens.length; i++) {
    let t = tokens[i]
    // A { ...; } group stays on one line.
    while (t.includes('{ ') && !t.includes('}') && i + 1 < tokens.length) t += `; ${tokens[++i]}`
    if (t.startsWith('then ')) {
      out[out.length - 1] += '; then'
      t = t.slice(5)
      depth++
    } else if (t.startsWith('else ')) {
      out.push(`${'  '.repeat(depth - 1)}else`)
      t = t.slice(5)
    } else if (t.startsWith('elif ')) {
      depth--
    } else if (t === 'fi') depth--
    out.push(`${'  '.repeat(depth)}${t}`)
  }
  return out
}

export function sshDryRun(target: SshTarget, steps: DryStep[]): string[] {
  const lines = [`ssh_to() { ${['ssh', ...target.options, '--', target.host].map(shq).join(' ')} "$@"; }`]
  for (const s of steps) {
    // The script goes inside '...' and the call inside "...": neither may hold what would end them.
    const args = s.args.map(shq).join(' ')
    if (s.script.includes("'") || /["$`\\]/.test(args)) throw new Error(`dry run of ${s.name}: a remote script with a ' or an argument with " $ \` \\ cannot be shown this way`)
    lines.push(`# ${s.name}: ${s.what}`, `${s.name}=$(cat <<'REMOTE'`, ...statements(s.script), 'REMOTE', ')',
      `ssh_to "sh -c '$${s.name}' sh ${args}${s.more ? ` ${s.more}` : ''}"${s.stdin ? ` < ${s.stdin}` : ''}`)
  }
  return lines
}

export type Ssh = Awaited<ReturnType<typeof openSsh>>
/** A remote command's result: `stdout` is what our script printed, after the frame's marker line. */
export type Remote = { ok: boolean; exitCode: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; framed: boolean; out: ProcessOutput }

/** The refusal for a command that ran but whose output has no frame: nothing of it can be trusted. */
export function unframed(target: SshTarget): string {
  return `the output of ${target.destination} lacks the kit's marker line, so what the server printed cannot be told apart from what the login shell printed: nothing was changed; check what \`${target.login} true\` prints`
}

// "$1": the run's directory; the rest: the ssh master's command. The master ends by itself (ssh -O exit,
// a lost connection, a failed login: the keeper then exits with its status) or when our pipe closes.
// (An asynchronous list reads /dev/null unless redirected explicitly: POSIX, hence fd 3.)
const KEEPER = 'd=$1; shift; exec 3<&0; "$@" </dev/null 3<&- & m=$!; { cat <&3 >/dev/null; kill $m 2>/dev/null; } & w=$!; exec 3<&-; wait $m; s=$?; kill $w 2>/dev/null; rm -rf -- "$d"; exit $s'

/**
 * Authenticate ONCE: a master connection (our own child, on a private control socket, its output
 * piped to us, never holding the script's stdout/stderr) that every remote command of this run goes
 * through; closed by close() or, whatever the way out, by onExit.
 */
export async function openSsh(target: SshTarget) {
  // 0700, unique to this run. A unix socket path holds at most 104-108 bytes: a long TMPDIR falls back to /tmp.
  const base = path.join(os.tmpdir(), 'deploy-ssh-XXXXXX', 's').length > 100 ? '/tmp' : os.tmpdir()
  const dir = mkdtempSync(path.join(base, 'deploy-ssh-'))
  const socket = path.join(dir, 's')
  const control = ['-S', socket.replace(/%/g, '%%')]
  // The master lives exactly as long as this script: a POSIX sh keeper holds the end of a pipe we
  // write nothing to. Whatever ends the script (even SIGKILL, which no handler sees), the pipe closes,
  // `cat` returns, the keeper stops the master and removes the control socket's directory.
  const lifeline = new PassThrough()
  // On a signal the master outlives the other children until the cleanups (unlock, close) are done.
  spareUntilCleanup(`${dir} ssh `)
  const master = $({ nothrow: true, input: lifeline as never })`sh -c ${KEEPER} sh ${dir} ssh ${target.options} ${control} -o ControlMaster=yes -o ControlPersist=no -n -N -- ${target.host}`
  let ended = false
  void master.finally(() => (ended = true))
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    if (!ended) await $({ nothrow: true, timeout: '5s' })`ssh ${control} -O exit -- ${target.host}`
    for (let i = 0; !ended && i < 50; i++) await sleep(100)
    if (!ended) await $.kill(master.pid!, 'SIGKILL').catch(() => {})
    lifeline.end()
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
    async run(script: string, args: string[] = [], opts: { input?: NodeJS.ReadableStream | Buffer | string; timeoutSeconds?: number } = {}): Promise<Remote> {
      const stdin = opts.input === undefined ? ['-n'] : []
      // The frame: whatever the login shell prints first (a banner in ~/.bashrc, ~/.ssh/rc), our
      // script's output starts after this line, which nothing else can print (a fresh random marker).
      const marker = `@@deploy-kit ${randomBytes(8).toString('hex')}@@`
      const framed = `printf '%s\\n' ${shq(marker)} && printf '%s\\n' ${shq(marker)} >&2 && ${remoteCommand(script, args)}`
      const p = $({ nothrow: true, input: opts.input as never })`ssh ${through} ${stdin} -- ${target.host} ${framed}`
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
      const after = (text: string) => (text.includes(`${marker}\n`) ? text.slice(text.indexOf(`${marker}\n`) + marker.length + 1) : undefined)
      const stdout = after(out.stdout)
      // stderr without the login shell's banner when the frame is there (ssh's own errors come before it).
      return { ok: out.ok, exitCode: out.exitCode, signal: out.signal, out, framed: stdout !== undefined, stdout: stdout ?? '', stderr: after(out.stderr) ?? out.stderr }
    },
    /** Why a remote command failed, in words a person can act on. */
    why({ out, stderr }: Remote): string {
      if (stopped.has(out)) return `a connection problem (${noAnswer(stopped.get(out)!)}; the connection was closed)`
      if (out.signal) return `stopped by ${out.signal}`
      const err = stderr.trim()
      if (out.exitCode === 255 && ended) return `the ssh connection to ${target.destination} was lost: a connection problem (${sshReason(err)})`
      return `exited ${out.exitCode}${err ? `: ${err.split('\n').slice(-3).join(' | ')}` : ''}`
    },
    close,
  }
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
