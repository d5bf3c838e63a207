// deploy_binary.mts with a REAL go build (test/fixtures/agent) and a REAL OpenSSH server (test/sshd.ts).
// Faults are real too: a remote sha256sum that finds a corrupted upload, a slow remote reader to kill
// a transfer halfway (both put first on the remote PATH by sshd's SetEnv), a running old binary.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, root, sandbox, type Sandbox } from './helpers.ts'
import { elf, ensureUsers, FRAME, freePort, goEnv, requireTools, spy, startSshd, userDir, USERS, type Sshd } from './sshd.ts'

const SCRIPT = 'deploy_binary.mts'
const FIXTURE = path.join(root, 'test/fixtures/agent')
let sshd: Sshd
let sb: Sandbox
let ssh: ReturnType<typeof spy>
let go: ReturnType<typeof spy>
let base: string
let remote: string
const cleanup: (() => unknown)[] = []

beforeAll(async () => {
  requireTools()
  ensureUsers()
  sshd = await startSshd()
})
afterAll(async () => {
  await sshd?.stop()
})
beforeEach(() => {
  sb = sandbox()
  ssh = spy(sb, 'ssh')
  go = spy(sb, 'go', ['GOOS', 'GOARCH', 'CGO_ENABLED'])
  base = newBase(USERS.dash)
  remote = `${base}/data`
})
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

function newBase(user: string) {
  const b = userDir(user)
  cleanup.push(() => rmSync(b, { recursive: true, force: true }))
  return b
}
/** Run the script as `user` against `server`; returns the result and the logins it made there. */
async function run(env: Record<string, string | undefined> = {}, args: string[] = [], opts: { user?: string; server?: Sshd; onStart?: (pid: number) => void } = {}) {
  const server = opts.server ?? sshd
  const before = { accepted: server.accepted(), connections: server.connections() }
  const r = await sb.run(SCRIPT, args, {
    env: { ...goEnv, ...server.env(opts.user ?? USERS.dash), AGENT_SOURCE_DIR: FIXTURE, AGENT_REMOTE_DIR: remote, ...env },
    onStart: opts.onStart,
  })
  return { ...r, logins: server.accepted() - before.accepted, connections: server.connections() - before.connections }
}
/** A copy of the fixture whose binary differs (another version string). */
function variant(version: string) {
  const dir = path.join(sb.dir, `src-${version}`)
  cpSync(FIXTURE, dir, { recursive: true })
  const main = path.join(dir, 'main.go')
  writeFileSync(main, readFileSync(main, 'utf8').replace('"fixture-1"', JSON.stringify(version)))
  return dir
}
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex')
const uploads = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.includes('.upload.')) : [])
/** A second sshd whose sessions find `wrappers` first on their PATH (a real fault on the server). */
async function faultyServer(wrappers: Record<string, string>) {
  const dir = mkdtempSync(path.join(tmpdir(), 'deploy-wrappers-'))
  chmodSync(dir, 0o755)
  for (const [name, body] of Object.entries(wrappers)) writeFileSync(path.join(dir, name), body, { mode: 0o755 })
  const server = await startSshd([`SetEnv PATH=${dir}:/usr/local/bin:/usr/bin:/bin`])
  cleanup.push(() => server.stop(), () => rmSync(dir, { recursive: true, force: true }))
  return server
}
async function until(ok: () => boolean, ms: number) {
  for (const end = Date.now() + ms; !ok(); ) {
    if (Date.now() > end) return false
    await new Promise((r) => setTimeout(r, 50))
  }
  return true
}
/** Processes whose command line mentions one of `markers` (this run's socket, build dir, paths). */
function processesMentioning(markers: string[]) {
  return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n')
    .filter((l) => markers.some((m) => l.includes(m)) && !l.includes('ps -eo'))
}
const socketOf = (calls: string[][]) => calls[0][calls[0].indexOf('-S') + 1]
const buildDirOf = (i = 0) => path.dirname(go.argv()[i][go.argv()[i].indexOf('-o') + 1])

describe('deploy_binary: build and upload against a real sshd', () => {
  it('builds for linux/amd64 (CGO off, reproducible flags) and installs an executable ELF with the same sha256, over one login', async () => {
    const r = await run({ GOOS: 'darwin', GOARCH: 'arm64', CGO_ENABLED: '1' }) // the laptop's own settings do not leak in
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    const live = `${remote}/agent`
    const sum = sha(live)
    const size = statSync(live).size
    expect(elf(live)).toEqual({ magic: '\x7fELF', class64: true, littleEndian: true, machine: 0x3e })
    expect(statSync(live).mode & 0o777).toBe(0o755)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(r.logins).toBe(1)

    const build = buildDirOf()
    expect(go.calls()).toEqual([{
      argv: ['build', '-trimpath', '-buildvcs=false', '-ldflags=-s -w -buildid=', '-o', `${build}/agent`, '.'],
      cwd: FIXTURE, env: { GOOS: 'linux', GOARCH: 'amd64', CGO_ENABLED: '0' },
    }])
    expect(existsSync(build)).toBe(false) // the local temporary directory is gone
    const calls = ssh.argv()
    const socket = socketOf(calls)
    const through = ['-S', socket, '-o', 'ControlMaster=no', '-o', 'ProxyCommand=false', '-o', 'BatchMode=yes']
    expect(calls).toEqual([
      [...calls[0].slice(0, calls[0].indexOf('-S')), '-S', socket, '-o', 'ControlMaster=yes', '-o', 'ControlPersist=no', '-n', '-N', '--', '127.0.0.1'],
      [...through, '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'command -v sha256sum .*' sh ${remote} agent$`))],
      [...through, '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'mkdir -p -- "\\$1" && l=.*' sh ${remote} agent '[^']+ pid \\d+ since [^']+' 15$`))],
      [...through, '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'set -e; mkdir -p .*' sh ${remote} agent [0-9a-f]{12} ${sum}$`))],
      [...through, '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'l=.*' sh ${remote} agent '[^']+ pid \\d+ since [^']+'$`))],
      ['-S', socket, '-O', 'exit', '--', '127.0.0.1'],
    ])
    expect(calls[0]).toEqual(expect.arrayContaining(['StrictHostKeyChecking=yes', `UserKnownHostsFile=${sshd.knownHosts}`, 'BatchMode=yes', 'ConnectTimeout=10']))
    expect(existsSync(path.dirname(socket))).toBe(false)
    expect(uploads(remote)).toEqual([])
    expect(existsSync(`${live}.previous`)).toBe(false) // nothing to keep on a first upload
    expect(r.stdout).toBe(`${live} on ${USERS.dash}@127.0.0.1 updated (${size} bytes sent)
  sha256  ${sum}
  size    ${size} bytes
  path    ${live}  (linux/amd64)

Useful commands:
  npx tsx deploy/deploy_nomad.mts          (first deploy: the job runs ${live})
  nomad job restart agent-economique        (the job already runs: start it on the new binary)
  ssh -p ${sshd.port} -i ${sshd.key} -o UserKnownHostsFile=${sshd.knownHosts} ${USERS.dash}@127.0.0.1 sha256sum ${live}
  roll back by hand: ssh -p ${sshd.port} -i ${sshd.key} -o UserKnownHostsFile=${sshd.knownHosts} ${USERS.dash}@127.0.0.1 mv -f ${live}.previous ${live}   then restart the job
`)
  })

  it('a second run sends nothing and says "unchanged" (same sha256: reproducible build), over one login', async () => {
    expect((await run()).code).toBe(0)
    const live = `${remote}/agent`
    const before = statSync(live)
    const from = ssh.argv().length
    const r = await run({ AGENT_SOURCE_DIR: variant('fixture-1') }) // another checkout of the same source
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`^${live} on ${USERS.dash}@127\\.0\\.0\\.1 is unchanged \\(same sha256\\): nothing sent\n  sha256  ${sha(live)}\n`))
    expect(r.stderr).not.toContain('==> Upload')
    const calls = ssh.argv().slice(from)
    expect(calls.map((a) => a.at(-1))).toEqual(['127.0.0.1', expect.stringContaining('command -v sha256sum'), '127.0.0.1'])
    expect(calls.flat().join(' ')).not.toMatch(/mkdir|upload/)
    expect(r.logins).toBe(1)
    const after = statSync(live)
    expect([after.ino, after.mtimeMs, after.ctimeMs]).toEqual([before.ino, before.mtimeMs, before.ctimeMs])
    expect(existsSync(`${live}.previous`)).toBe(false)
  })

  it('keeps the previous binary beside the new one for a manual rollback', async () => {
    expect((await run()).code).toBe(0)
    const live = `${remote}/agent`
    const first = sha(live)
    const r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`updated (${statSync(live).size} bytes sent); the previous binary is ${live}.previous`)
    expect(sha(`${live}.previous`)).toBe(first)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(execFileSync(`${live}.previous`, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(uploads(remote)).toEqual([])
    expect(r.logins).toBe(1)
  })

  it('replaces a RUNNING binary by rename: the old process keeps running, the live path gets a new inode', async () => {
    expect((await run()).code).toBe(0)
    const live = `${remote}/agent`
    const oldInode = statSync(live).ino
    const old: ChildProcess = spawn(live, ['sleep', '60'], { stdio: 'ignore' })
    cleanup.push(() => old.kill('SIGKILL'))
    expect(await until(() => existsSync(`/proc/${old.pid}/exe`) && statSync(`/proc/${old.pid}/exe`).ino === oldInode, 5000)).toBe(true)
    // Writing into it is what the kernel forbids while it runs (ETXTBSY): the script must not need to.
    expect(() => writeFileSync(live, 'x', { flag: 'r+' })).toThrow(/ETXTBSY/)

    const r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code).toBe(0)
    expect(old.exitCode).toBe(null)
    expect(() => process.kill(old.pid!, 0)).not.toThrow()
    expect(statSync(live).ino).not.toBe(oldInode)
    expect(statSync(`${live}.previous`).ino).toBe(oldInode)
    expect(statSync(`/proc/${old.pid}/exe`).ino).toBe(oldInode)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-2\n')
  })

  it('removes uploads left by killed runs once idle for 10 minutes, and leaves a fresh one (a concurrent run\'s) alone', async () => {
    mkdirSync(remote)
    execFileSync('chown', [USERS.dash, remote])
    const hourAgo = new Date(Date.now() - 3600_000)
    for (const f of ['.agent.upload.0123456789ab', '.agent.upload.fresh00000000', '.other.upload.0123456789ab']) writeFileSync(`${remote}/${f}`, 'partial')
    for (const f of ['.agent.upload.0123456789ab', '.other.upload.0123456789ab']) utimesSync(`${remote}/${f}`, hourAgo, hourAgo)
    const r = await run()
    expect(r.code).toBe(0)
    expect(uploads(remote).sort()).toEqual(['.agent.upload.fresh00000000', '.other.upload.0123456789ab'])
  })
})

describe('deploy_binary: failures leave the live binary as it was', () => {
  it('a checksum mismatch on the server aborts without renaming (exit 1) and removes the upload', async () => {
    expect((await run()).code).toBe(0)
    const live = `${remote}/agent`
    const before = { bytes: readFileSync(live), ino: statSync(live).ino }
    // The server's sha256sum reads a corrupted upload: one byte is appended to the file it verifies.
    const corrupting = await faultyServer({ sha256sum: `#!/bin/sh\nfor f in "$@"; do case "$f" in *.upload.*) printf x >> "$f";; esac; done\nexec /usr/bin/sha256sum "$@"\n` })
    const v2 = variant('fixture-2')
    const r = await run({ AGENT_SOURCE_DIR: v2 }, [], { server: corrupting })
    expect(r.code).toBe(1)
    const m = r.stderr.match(/✗ Upload .* failed: sha256 mismatch on the server: got ([0-9a-f]{64}), expected ([0-9a-f]{64}): the upload was removed and (\S+) left as it was/)
    expect(m).not.toBe(null)
    expect(m![1]).not.toBe(m![2])
    expect(m![3]).toBe(live)
    expect(readFileSync(live).equals(before.bytes)).toBe(true)
    expect(statSync(live).ino).toBe(before.ino)
    expect(existsSync(`${live}.previous`)).toBe(false)
    expect(uploads(remote)).toEqual([])
    expect(r.logins).toBe(1)
    // The expected sum was the build's: an honest server accepts the same binary.
    expect((await run({ AGENT_SOURCE_DIR: v2 })).code).toBe(0)
    expect(sha(live)).toBe(m![2])
  })

  it.each([['SIGTERM', 143], ['SIGINT', 130]] as const)('a transfer killed by %s halfway leaves the live binary byte-identical, no process behind, and the next run succeeds', async (signal, code) => {
    expect((await run()).code).toBe(0)
    const live = `${remote}/agent`
    const before = { bytes: readFileSync(live), ino: statSync(live).ino }
    // A slow link: the server reads the upload 16 KiB every 0.2 s (over 10 s for the whole binary).
    const slow = await faultyServer({ cat: `#!/bin/sh\nexec perl -e '$| = 1; while (read(STDIN, my $b, 16384)) { print $b; select(undef, undef, undef, 0.2) }'\n` })
    let pid = 0
    const from = ssh.argv().length
    const goFrom = go.argv().length
    const running = run({ AGENT_SOURCE_DIR: variant('fixture-2') }, [], { server: slow, onStart: (p) => (pid = p) })
    const started = await until(() => uploads(remote).some((f) => statSync(`${remote}/${f}`, { throwIfNoEntry: false })?.size), 30_000)
    expect(started).toBe(true)
    process.kill(pid, signal)
    const r = await running
    expect(r.code).toBe(code)
    expect(r.stderr).toContain(`✗ interrupted by ${signal} during: Upload`)
    expect(readFileSync(live).equals(before.bytes)).toBe(true)
    expect(statSync(live).ino).toBe(before.ino)

    // A few seconds later: no ssh or go of that run left here, no upload script left on the server,
    // its upload removed (by the server-side script once its input ended), the local build dir gone.
    const build = buildDirOf(goFrom)
    const markers = [path.dirname(socketOf(ssh.argv().slice(from))), build, slow.key, remote]
    await until(() => processesMentioning(markers).length === 0 && uploads(remote).length === 0, 10_000)
    expect(processesMentioning(markers)).toEqual([])
    expect(uploads(remote)).toEqual([])
    expect(existsSync(build)).toBe(false)

    const next = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(next.code).toBe(0)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(readFileSync(`${live}.previous`).equals(before.bytes)).toBe(true)
  })

  it('a changed host key fails before any remote command and before the build (exit 1)', async () => {
    const r = await run({ DEPLOY_SSH_KNOWN_HOSTS: sshd.changedKnownHosts })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('host key has CHANGED')
    expect(r.logins).toBe(0)
    expect(ssh.argv()).toHaveLength(1)
    expect(go.calls()).toEqual([])
    expect(existsSync(remote)).toBe(false)
  })

  it('an unreachable server fails fast with exit 1, a connection problem, and nothing built', async () => {
    const r = await run({ DEPLOY_SSH_PORT: String(await freePort()) })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/failed: ssh to deploytest-dash@127\.0\.0\.1 port \d+ failed: a connection problem/)
    expect(go.calls()).toEqual([])
  })

  it('refuses (exit 2) a server whose platform is not the one built for, before building or changing anything', async () => {
    const r = await run({ AGENT_GOARCH: 'arm64' })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('127.0.0.1 is Linux x86_64 (linux/amd64) but AGENT_GOOS/AGENT_GOARCH build linux/arm64: set them to match')
    expect(go.calls()).toEqual([])
    expect(existsSync(remote)).toBe(false)
    expect(r.logins).toBe(1)
  })

  // The login users print a banner on stdout and stderr (test/sshd.ts: ~/.bashrc for bash, ~/.ssh/rc
  // for both): the remote output is read after the frame only, whatever the login shell says first.
  it.each([USERS.bash, USERS.dash])('a chatty login (%s): the second run still finds the same sha256 and sends nothing; the platform check still holds', async (user) => {
    remote = `${newBase(user)}/data`
    expect((await run({}, [], { user })).code).toBe(0)
    const live = `${remote}/agent`
    const r = await run({}, [], { user })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`${live} on ${user}@127.0.0.1 is unchanged (same sha256): nothing sent`)
    expect(existsSync(`${live}.previous`)).toBe(false)
    const arm = await run({ AGENT_GOARCH: 'arm64' }, [], { user })
    expect(arm.code).toBe(2)
    expect(arm.stderr).toContain('but AGENT_GOOS/AGENT_GOARCH build linux/arm64: set them to match')
    expect(arm.output).not.toContain('last login: yesterday')
  })

  it('one run at a time installs: a lock held by another run refuses (exit 2, names it, nothing sent); a stale one is taken over; none is left behind', async () => {
    expect((await run()).code).toBe(0)
    const live = `${remote}/agent`
    expect(readdirSync(remote).filter((f) => f.endsWith('.lock'))).toEqual([])
    const lock = `${remote}/.agent.lock`
    execFileSync('su', ['-s', '/bin/sh', USERS.dash, '-c', `mkdir ${lock} && echo 'ops@laptop pid 42 since 2026-12-06T10:00:00Z' > ${lock}/owner`])
    let r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`another deploy_binary is installing into ${remote} on 127.0.0.1 (ops@laptop pid 42 since 2026-12-06T10:00:00Z)`)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(existsSync(`${live}.previous`)).toBe(false)
    const old = new Date(Date.now() - 60 * 60_000)
    utimesSync(lock, old, old)
    r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('warning: took over a lock left 15+ minutes ago by ops@laptop pid 42')
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(execFileSync(`${live}.previous`, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(existsSync(lock)).toBe(false)
  })

  it('refuses (exit 2) a directory where the rollback copy goes (<name>.previous), before building or sending anything', async () => {
    expect((await run()).code).toBe(0)
    const live = `${remote}/agent`
    execFileSync('su', ['-s', '/bin/sh', USERS.dash, '-c', `mkdir ${live}.previous`])
    const r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`${live}.previous exists on 127.0.0.1 but is not a regular file (the rollback copy goes there): move it away`)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-1\n')
  })

  it('a TMPDIR too long for a unix socket path: the control socket goes to /tmp, and the run works', async () => {
    const long = path.join(sb.dir, 'a'.repeat(60), 'b'.repeat(40))
    mkdirSync(long, { recursive: true })
    const r = await run({ TMPDIR: long })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/-S \/tmp\/deploy-ssh-/)
  })

  it('refuses (exit 2) when the live path is not a regular file, before changing anything', async () => {
    mkdirSync(`${remote}/agent`, { recursive: true })
    const r = await run()
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`${remote}/agent exists on 127.0.0.1 but is not a regular file: move it away or set AGENT_REMOTE_DIR / AGENT_BINARY_NAME`)
    expect(readdirSync(`${remote}/agent`)).toEqual([])
    expect(uploads(remote)).toEqual([])
  })

  it('exits 1 with go\'s own message when the build fails', async () => {
    const src = variant('fixture-2')
    writeFileSync(path.join(src, 'broken.go'), 'package main\n\nfunc broken() { undefinedThing() }\n')
    const r = await run({ AGENT_SOURCE_DIR: src })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/✗ Build agent for linux\/amd64 .* failed: go build in .* exited \d+:\n[\s\S]*undefined: undefinedThing/)
    expect(existsSync(remote)).toBe(false)
  })
})

describe('deploy_binary: remote quoting and refusals', () => {
  it.each(Object.entries(USERS))('an unusual but allowed directory and name work the same when the login shell is %s', async (_shell, user) => {
    base = newBase(user)
    remote = `${base}/-odd+dir@v1.2/bin_x`
    const name = 'agent+v2@x.bin-1'
    const r = await run({ AGENT_BINARY_NAME: name }, [], { user })
    expect(r.code).toBe(0)
    const live = `${remote}/${name}`
    expect(r.stdout).toContain(`  sha256  ${sha(live)}\n`)
    expect(execFileSync('find', [base, '-mindepth', '1'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort()).toEqual([`${base}/-odd+dir@v1.2`, remote, live])
    const again = await run({ AGENT_BINARY_NAME: name }, [], { user })
    expect(again.stdout).toContain('is unchanged (same sha256): nothing sent')
    expect(again.logins).toBe(1)
  })

  const dirs = ['/tmp/a b', '/tmp/a;touch /tmp/pwned-binary', "/tmp/it's", '/tmp/$(touch /tmp/pwned-binary)', '/tmp/`touch /tmp/pwned-binary`', '/tmp/a\nb', '/tmp/*', '~/data', '-rf', 'data']
  const names = ['a b', 'a;touch /tmp/pwned-binary', "it's", '$(touch /tmp/pwned-binary)', '`touch /tmp/pwned-binary`', 'a\nb', '*', '~', '-rf', '.hidden', 'a/b']
  it.each([...dirs.map((v) => ['AGENT_REMOTE_DIR', v]), ...names.map((v) => ['AGENT_BINARY_NAME', v])])('refuses %s=%j before any ssh call or build (exit 2)', async (name, value) => {
    const r = await run({ [name]: value })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(new RegExp(`${name}=${JSON.stringify(value).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} (must|may only)`))
    expect(r.connections).toBe(0)
    expect(ssh.argv()).toEqual([])
    expect(go.calls()).toEqual([])
    expect(existsSync('/tmp/pwned-binary')).toBe(false)
  })

  it.each([['DEPLOY_SSH_HOST', '-oProxyCommand=touch /tmp/pwned-binary'], ['DEPLOY_SSH_HOST', 'a b'], ['DEPLOY_SSH_USER', '-F/dev/null'], ['DEPLOY_SSH_USER', 'u;id']])(
    'refuses %s=%j before any ssh call (exit 2)', async (name, value) => {
      const r = await run({ [name]: value })
      expect(r.code).toBe(2)
      expect(r.stderr).toContain(`${name}=${JSON.stringify(value)} must be`)
      expect(r.connections).toBe(0)
      expect(ssh.argv()).toEqual([])
    })

  it('refuses a source directory that is not a Go module (exit 2), and reports every problem at once', async () => {
    const r = await run({ AGENT_SOURCE_DIR: sb.dir, AGENT_GOOS: 'linux;id', DEPLOY_SSH_HOST: undefined })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`AGENT_SOURCE_DIR=${sb.dir} is not a Go module (no go.mod)`)
    expect(r.stderr).toContain('AGENT_GOOS="linux;id" must be a Go platform name such as linux')
    expect(r.stderr).toContain('DEPLOY_SSH_HOST is not set')
    expect(ssh.argv()).toEqual([])
    expect(go.calls()).toEqual([])
  })

  it('resolves the default AGENT_SOURCE_DIR (backend) against the repository root', async () => {
    const r = await run({ AGENT_SOURCE_DIR: undefined }, [], {})
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`AGENT_SOURCE_DIR=${root}/backend is not a Go module (no go.mod): the directory does not exist`)
  })

  it('refuses without go on PATH (exit 2, says how to install it)', async () => {
    const r = await run({ PATH: sb.pathWithout('go') })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('go not found on PATH (install Go: https://go.dev/dl/ (Debian: apt-get install golang-go))')
    expect(r.connections).toBe(0)
    expect(ssh.argv()).toEqual([])
  })
})

describe('deploy_binary --json', () => {
  it('the result names the host, the binary path and its sha256: done, then unchanged', async () => {
    let r = await run({}, ['--json'])
    expect(r.code, r.stderr).toBe(0)
    const sum = sha(`${remote}/agent`)
    let result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ script: 'deploy_binary', outcome: 'done', exitCode: 0, host: '127.0.0.1', binary: { path: `${remote}/agent`, sha256: sum }, acted: true })
    expect(result.message).toMatch(/updated \(\d+ bytes sent\)$/)
    expect(result.next).toContain('nomad job restart agent-economique')
    expect(r.stderr).toContain(`sha256  ${sum}`)
    r = await run({}, ['--json'])
    result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'unchanged', binary: { sha256: sum } })
    expect(result.acted).toBeUndefined()
  })
})

describe('deploy_binary: --dry-run and --help', () => {
  it('--dry-run runs nothing and prints commands that, pasted into a shell, build and install the binary', async () => {
    const r = await run({}, ['--dry-run'])
    expect(r.code).toBe(0)
    expect(r.connections).toBe(0)
    expect(ssh.argv()).toEqual([])
    expect(go.calls()).toEqual([])
    expect(r.stdout).toContain(`(cd ${FIXTURE} && GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -trimpath -buildvcs=false '-ldflags=-s -w -buildid=' -o "$BUILD"/agent .)`)
    expect(r.stdout).toMatch(/^ssh_to "sh -c '\$INSTALL' sh \/tmp\/deploy-remote-\w+\/data agent manual \$SUM" < "\$BUILD"\/agent$/m)
    expect(r.stdout).toMatch(/^# LOOK: .*\n# LOCK: /ms)
    // Readable: the connection once, one statement a line, no nested quoting.
    expect(r.stdout.split('\n').filter((l) => l.length > 200 && !l.startsWith('ssh_to()'))).toEqual([])
    expect(r.stdout).not.toContain(`'\\''`)
    expect(r.stdout).toContain('if [ "${s%% *}" != "$4" ]; then\n  echo "sha256 mismatch on the server')
    writeFileSync(path.join(sb.dir, 'plan.sh'), r.stdout)
    // Pasted into dash (POSIX sh), then into bash after a change: each installs, keeping the previous binary.
    execFileSync('dash', ['-e', path.join(sb.dir, 'plan.sh')], { env: { PATH: process.env.PATH, HOME: sb.home, ...goEnv }, stdio: 'pipe' })
    expect(execFileSync(`${remote}/agent`, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(uploads(remote)).toEqual([])
    const again = await run({ AGENT_SOURCE_DIR: variant('fixture-2') }, ['--dry-run'])
    writeFileSync(path.join(sb.dir, 'plan2.sh'), again.stdout)
    execFileSync('bash', ['-e', path.join(sb.dir, 'plan2.sh')], { env: { PATH: process.env.PATH, HOME: sb.home, ...goEnv }, stdio: 'pipe' })
    expect(execFileSync(`${remote}/agent`, { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(execFileSync(`${remote}/agent.previous`, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(uploads(remote)).toEqual([])
  })

  it('--dry-run without go or the source still prints the plan, with warnings', async () => {
    const r = await run({ PATH: sb.pathWithout('go'), AGENT_SOURCE_DIR: 'backend' }, ['--dry-run'])
    expect(r.code).toBe(0)
    expect(r.stderr).toContain('warning: a real run would refuse: go not found on PATH')
    expect(r.stderr).toContain(`warning: a real run would refuse: AGENT_SOURCE_DIR=${root}/backend is not a Go module`)
    expect(r.stdout).toContain('go build -trimpath')
  })

  it('--help prints the header: purpose, usage, tools, variables, exit codes', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_binary: build the Agent Economique Go binary/)
    for (const s of ['Usage: npx tsx deploy/deploy_binary.mts', 'Needs: go, ssh', 'AGENT_SOURCE_DIR (default backend)', 'AGENT_REMOTE_DIR (default /root/data)', 'AGENT_GOARCH (default amd64)', 'DEPLOY_SSH_KNOWN_HOSTS', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
  })
})
