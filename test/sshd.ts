// A real OpenSSH server for the ssh scripts' tests (Debian openssh-server): 127.0.0.1, a free port,
// its own host key, sshd_config and log (LogLevel VERBOSE, so tests can COUNT authentications), a client
// key made with ssh-keygen at test time (no key is committed), and a known_hosts file for it.
// Also: the two login users (dash and bash) that prove remote quoting, spies that record the argv of
// the real ssh and go and then exec them, and a directory a user may write to.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Sandbox } from './helpers.ts'

const SSHD = '/usr/sbin/sshd'
/** Login users created at test time when missing: one whose shell is dash, one whose shell is bash. */
export const USERS = { dash: 'deploytest-dash', bash: 'deploytest-bash' } as const

/** Fail (never skip) when the tests cannot run here, saying how to fix it. */
export function requireTools() {
  const problems: string[] = []
  if (process.getuid?.() !== 0)
    problems.push('these tests start a real sshd and create two login users: run them as root (in CI, or: sudo npm test)')
  if (!existsSync(SSHD)) problems.push(`${SSHD} not found: apt-get install openssh-server`)
  for (const [tool, pkg] of [['ssh', 'openssh-client'], ['ssh-keygen', 'openssh-client'], ['go', 'golang-go'], ['dash', 'dash'], ['useradd', 'passwd'], ['perl', 'perl-base']])
    if (!which(tool)) problems.push(`${tool} not found on PATH: apt-get install ${pkg}`)
  if (problems.length) throw new Error(`cannot run the ssh tests:\n  - ${problems.join('\n  - ')}`)
}

export function which(tool: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v "$1"', 'sh', tool], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

/** Create the dash and bash users if missing (password field `*`: no password, not locked, keys only). */
export function ensureUsers() {
  for (const [shell, user] of Object.entries(USERS)) {
    const line = () => {
      try {
        return execFileSync('getent', ['passwd', user], { encoding: 'utf8' }).trim()
      } catch {
        return ''
      }
    }
    if (!line()) {
      try {
        execFileSync('useradd', ['-m', '-s', `/bin/${shell}`, '-p', '*', user], { stdio: 'pipe' })
      } catch (e) {
        if (!line()) throw e // another test file may have created it meanwhile
      }
    }
    const got = line().split(':').at(-1)
    if (got !== `/bin/${shell}`) throw new Error(`user ${user} exists with shell ${got}, expected /bin/${shell}: usermod -s /bin/${shell} ${user}`)
    chatty(user)
  }
  return USERS
}

/**
 * The login users talk, as real servers' do: a banner on stdout and stderr from ~/.bashrc (bash reads
 * it for `ssh host cmd`), ~/.profile, and ~/.ssh/rc (sshd runs it before any command, whatever the
 * shell: the dash user's banner). Every ssh test thus runs against a chatty login.
 */
/** The frame before every remote command (deploy/lib/ssh.mts), as a regular expression: a fresh marker on stdout, then on stderr. */
export const FRAME = "printf '%s\\\\n' '@@deploy-kit [0-9a-f]{16}@@' && printf '%s\\\\n' '@@deploy-kit [0-9a-f]{16}@@' >&2 && "
export const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

export const BANNER = 'Welcome to deploytest — authorised use only'
function chatty(user: string) {
  const home = execFileSync('getent', ['passwd', user], { encoding: 'utf8' }).trim().split(':')[5]
  const id = (flag: string) => Number(execFileSync('id', [flag, user], { encoding: 'utf8' }))
  const say = `echo "${BANNER}"; echo "last login: yesterday" >&2\n`
  mkdirSync(path.join(home, '.ssh'), { recursive: true, mode: 0o700 })
  for (const [file, text] of [['.bashrc', say], ['.profile', say], ['.ssh/rc', say]] as const) {
    const f = path.join(home, file)
    if (!existsSync(f) || readFileSync(f, 'utf8') !== text) writeFileSync(f, text)
    chownSync(f, id('-u'), id('-g'))
  }
  chownSync(path.join(home, '.ssh'), id('-u'), id('-g'))
}

/** A fresh directory owned by `user` (the remote paths of a test live under it). */
export function userDir(user: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'deploy-remote-'))
  const id = (flag: string) => Number(execFileSync('id', [flag, user], { encoding: 'utf8' }))
  chownSync(dir, id('-u'), id('-g'))
  chmodSync(dir, 0o755)
  return dir
}

export type Sshd = Awaited<ReturnType<typeof startSshd>>

/**
 * Start sshd in the foreground (-D) with its own config; resolves once it listens.
 * `config` adds sshd_config lines (e.g. `SetEnv PATH=...` to put a wrapper first on the remote PATH).
 */
export async function startSshd(config: string[] = []) {
  const dir = mkdtempSync(path.join(tmpdir(), 'deploy-sshd-'))
  chmodSync(dir, 0o755) // sshd reads authorized_keys as the logging-in user
  const f = (name: string) => path.join(dir, name)
  const keygen = (file: string, comment: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { stdio: 'pipe' })
  keygen(f('host_key'), 'test-host')
  keygen(f('other_host_key'), 'another-host')
  keygen(f('client_key'), 'test-client')
  keygen(f('stranger_key'), 'not-authorized')
  writeFileSync(f('authorized_keys'), readFileSync(f('client_key.pub')))
  chmodSync(f('authorized_keys'), 0o644)
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }) // privilege separation directory

  const port = await freePort()
  // The server answers on 127.0.0.1 and 127.0.0.2 (loopback both): two "hosts" for the multi-client tests.
  const hostLine = (pub: string) => ['127.0.0.1', '127.0.0.2'].map((ip) => `[${ip}]:${port} ${readFileSync(pub, 'utf8').split(' ').slice(0, 2).join(' ')}\n`).join('')
  writeFileSync(f('known_hosts'), hostLine(f('host_key.pub')))
  writeFileSync(f('changed_known_hosts'), hostLine(f('other_host_key.pub')))
  writeFileSync(f('empty_known_hosts'), '')
  writeFileSync(f('sshd_config'), [
    `ListenAddress 127.0.0.1:${port}`,
    `ListenAddress 127.0.0.2:${port}`,
    `HostKey ${f('host_key')}`,
    'PidFile none',
    'LogLevel VERBOSE',
    `AuthorizedKeysFile ${f('authorized_keys')}`,
    'StrictModes no', // the test files live under /tmp, which is world-writable
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    `AllowUsers ${Object.values(USERS).join(' ')}`,
    ...config,
  ].join('\n') + '\n')
  execFileSync(SSHD, ['-t', '-f', f('sshd_config')], { stdio: 'pipe' })

  const log = f('sshd.log')
  writeFileSync(log, '')
  const child: ChildProcess = spawn(SSHD, ['-D', '-f', f('sshd_config'), '-E', log], { stdio: 'ignore' })
  let exited = false
  child.on('exit', () => (exited = true))
  const read = () => readFileSync(log, 'utf8')
  for (let i = 0; !read().includes(`Server listening on 127.0.0.1 port ${port}`); i++) {
    if (exited || i > 100) throw new Error(`sshd did not start:\n${read()}`)
    await new Promise((r) => setTimeout(r, 50))
  }

  const count = (re: RegExp) => (read().match(new RegExp(re.source, 'gm')) ?? []).length
  return {
    port, dir, log,
    key: f('client_key'),
    strangerKey: f('stranger_key'),
    knownHosts: f('known_hosts'),
    changedKnownHosts: f('changed_known_hosts'),
    emptyKnownHosts: f('empty_known_hosts'),
    read,
    /** How many logins succeeded so far (one per authenticated connection). */
    accepted: () => count(/Accepted publickey for /),
    /** How many TCP connections reached sshd so far. */
    connections: () => count(/^Connection from /),
    /** The DEPLOY_SSH_* variables that reach this server as `user`. */
    env: (user: string): Record<string, string> => ({
      DEPLOY_SSH_HOST: '127.0.0.1', DEPLOY_SSH_PORT: String(port), DEPLOY_SSH_USER: user,
      DEPLOY_SSH_KEY: f('client_key'), DEPLOY_SSH_KNOWN_HOSTS: f('known_hosts'),
    }),
    async stop() {
      if (!exited) {
        const done = new Promise((r) => child.once('exit', r))
        child.kill('SIGTERM')
        await done
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** A port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/**
 * Put a spy for a real tool first on the sandbox PATH: it records its argv, working directory and the
 * chosen environment variables (count-prefixed, NUL-separated: unambiguous) and execs the real
 * program, which keeps the process id and signals.
 */
export function spy(sb: Sandbox, tool: string, envNames: string[] = []) {
  const real = which(tool)
  if (!real) throw new Error(`${tool} not found on PATH`)
  const logFile = path.join(sb.state, `${tool}.argv`)
  const env = envNames.map((n) => ` "${n}=\${${n}-}"`).join('')
  sb.stub(tool, `#!/bin/sh\nprintf '%s\\0' "$#" "$PWD"${env} "$@" >> '${logFile}'\nexec '${real}' "$@"\n`)
  return {
    /** Each call: argv, cwd, env (the chosen variables, empty when unset). */
    calls(): { argv: string[]; cwd: string; env: Record<string, string> }[] {
      if (!existsSync(logFile)) return []
      const parts = readFileSync(logFile, 'utf8').split('\0')
      const calls = []
      for (let i = 0; i < parts.length - 1; ) {
        const n = Number(parts[i])
        const cwd = parts[i + 1]
        const env = Object.fromEntries(parts.slice(i + 2, i + 2 + envNames.length).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
        i += 2 + envNames.length
        calls.push({ argv: parts.slice(i, i + n), cwd, env })
        i += n
      }
      return calls
    },
    /** Each call's argv. */
    argv(): string[][] {
      return this.calls().map((c) => c.argv)
    },
  }
}

/** Go's build cache shared by every test (a cold cache costs ~10 s per build). */
export const goEnv = { GOCACHE: path.join(tmpdir(), 'deploy-test-gocache'), GOTOOLCHAIN: 'local', GOFLAGS: '', GOPROXY: 'off' }

/** ELF header facts: 64-bit, little-endian, the machine field (0x3e is x86-64). */
export function elf(file: string) {
  const h = readFileSync(file).subarray(0, 20)
  return { magic: h.subarray(0, 4).toString('latin1'), class64: h[4] === 2, littleEndian: h[5] === 1, machine: h.readUInt16LE(18) }
}
