// deploy_binary.mts with a REAL go build (test/fixtures/agent) and a REAL OpenSSH server (test/sshd.ts).
// Faults are real too: a remote sha256sum that finds a corrupted upload, a slow remote reader to kill
// a transfer halfway (both put first on the remote PATH by sshd's SetEnv), a running old release.
// Each build is a release file of its own, AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256>, recorded in the
// nomad double's Variable nomad/jobs/agent-economique/releases (item binaries).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, NODE_ID, root, sandbox, type Sandbox } from './helpers.ts'
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
const RECORD = 'nomad/jobs/agent-economique/releases'
/** The release file of a build: AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256>. */
const release = (sum: string, dir = remote, name = 'agent') => `${dir}/${name}-${sum}`
/** The release files in a directory (name-<64 hex>), sorted by name. */
const releases = (dir = remote, name = 'agent') => (existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith(`${name}-`) && /^[0-9a-f]{64}$/.test(f.slice(name.length + 1))).sort() : [])
/** The sha256 a run printed ("  sha256  <hex>"). */
const sumOf = (r: { stdout: string }) => r.stdout.match(/^ {2}sha256 {2}([0-9a-f]{64})$/m)?.[1] ?? ''
/** The item binaries of the release record, parsed (newest first). */
function recorded(): { sha256: string; commit?: string; uploaded: string; by: string; hosts: string[] }[] {
  const v = sb.readState().vars?.[RECORD]
  return v ? JSON.parse(v.Items.binaries) : []
}
/** The nomad double run directly (setting up the cluster, not under test). */
function nomadCli(...args: string[]) {
  return execFileSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
}
/** Register a version of the agent's job that runs the release `sum` (as deploy_nomad does), and let its deployment end. */
function jobRuns(sum: string) {
  nomadCli('job', 'run', '-detach', `-var=binary_path=${release(sum)}`, `-var=binary_sha256=${sum}`, `-var=nodes=${NODE_ID}`, path.join(root, 'jobs/agent.nomad'))
  for (let i = 0; i < 3; i++) nomadCli('job', 'deployments', '-latest', '-json', 'agent-economique')
}
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
  it('builds for linux/amd64 (CGO off, reproducible flags) and installs an executable ELF as <name>-<its sha256>, over one login, and records it', async () => {
    const r = await run({ GOOS: 'darwin', GOARCH: 'arm64', CGO_ENABLED: '1' }) // the laptop's own settings do not leak in
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    const sum = sumOf(r)
    const live = release(sum)
    expect(sha(live)).toBe(sum) // named by its content
    const size = statSync(live).size
    expect(elf(live)).toEqual({ magic: '\x7fELF', class64: true, littleEndian: true, machine: 0x3e })
    expect(statSync(live).mode & 0o777).toBe(0o755)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(r.logins).toBe(1)
    // Nothing else in the directory: no fixed `agent` path, no `.previous`, no upload, no lock.
    expect(readdirSync(remote)).toEqual([`agent-${sum}`])

    const build = buildDirOf()
    expect(go.calls()).toEqual([{
      argv: ['build', '-trimpath', '-buildvcs=false', '-ldflags=-s -w -buildid=', '-o', `${build}/agent`, '.'],
      cwd: FIXTURE, env: { GOOS: 'linux', GOARCH: 'amd64', CGO_ENABLED: '0' },
    }])
    expect(existsSync(build)).toBe(false) // the local temporary directory is gone
    const calls = ssh.argv()
    const socket = socketOf(calls)
    const through = ['-S', socket, '-o', 'ControlMaster=no', '-o', 'ProxyCommand=false', '-o', 'BatchMode=yes']
    const me = "'[^']+ pid \\d+ since [^']+'"
    expect(calls).toEqual([
      [...calls[0].slice(0, calls[0].indexOf('-S')), '-S', socket, '-o', 'ControlMaster=yes', '-o', 'ControlPersist=no', '-n', '-N', '--', '127.0.0.1'],
      [...through, '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'command -v sha256sum .*' sh ${remote} agent$`))],
      [...through, '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'mkdir -p -- "\\$1" && l=.*' sh ${remote} agent ${me} 15$`))],
      [...through, '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'set -e; mkdir -p .*' sh ${remote} agent [0-9a-f]{12} ${sum}$`))],
      // PRUNE: keep 5, never the new one (the job runs nothing yet)
      [...through, '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'cd -- "\\$1" .*' sh ${remote} agent 5 ${sum}$`))],
      [...through, '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'l=.*' sh ${remote} agent ${me}$`))],
      ['-S', socket, '-O', 'exit', '--', '127.0.0.1'],
    ])
    expect(calls[0]).toEqual(expect.arrayContaining(['StrictHostKeyChecking=yes', `UserKnownHostsFile=${sshd.knownHosts}`, 'BatchMode=yes', 'ConnectTimeout=10']))
    expect(existsSync(path.dirname(socket))).toBe(false)
    // Nomad: what the job runs (read-only), then the record by check-and-set (read, then put at that index).
    expect(sb.commands('nomad')).toEqual(['job history -json agent-economique', `var get -out json ${RECORD}`, `var put -check-index 0 -in=json -out=none -`])
    const [entry] = recorded()
    expect(recorded()).toHaveLength(1)
    expect(entry).toEqual({ sha256: sum, commit: expect.stringMatching(/^[0-9a-f]{12}(-dirty)?$/), uploaded: expect.any(String), by: expect.any(String), hosts: ['127.0.0.1'] })
    expect(Date.now() - Date.parse(entry.uploaded)).toBeLessThan(60_000)
    const login = `ssh -p ${sshd.port} -i ${sshd.key} -o UserKnownHostsFile=${sshd.knownHosts} ${USERS.dash}@127.0.0.1`
    expect(r.stdout).toBe(`${live} on ${USERS.dash}@127.0.0.1 uploaded (${size} bytes sent)
  release agent-${sum.slice(0, 12)}  (commit ${entry.commit})
  sha256  ${sum}
  size    ${size} bytes
  path    ${live}  (linux/amd64)
  kept    127.0.0.1: 1 release (DEPLOY_KEEP_RELEASES=5, and what the job runs)
agent-economique runs no release yet: this build is staged in ${RECORD}.

Useful commands:
  npx tsx deploy/deploy_nomad.mts          (roll it out through Nomad: health gate, auto_revert)
  npx tsx deploy/revert_agent.mts --list   (the releases it can return to)
  nomad var get -item binaries ${RECORD}
  ${login} ls -lt ${remote}
`)
  })

  it('a second run sends nothing, changes nothing (no lock, no mark, no record write), and says "unchanged" (same sha256: reproducible build), over one login', async () => {
    const first = await run()
    expect(first.code).toBe(0)
    const live = release(sumOf(first))
    const before = statSync(live)
    const from = ssh.argv().length
    const puts = sb.commands('nomad').filter((c) => c.startsWith('var put')).length
    const r = await run({ AGENT_SOURCE_DIR: variant('fixture-1') }) // another checkout of the same source
    expect(r.code).toBe(0)
    expect(sumOf(r)).toBe(sumOf(first))
    expect(r.stdout).toMatch(new RegExp(`^${live} on ${USERS.dash}@127\\.0\\.0\\.1 is unchanged \\(already there, the newest release, sha256 checked\\): nothing sent\n  release agent-${sumOf(r).slice(0, 12)}\n  sha256  ${sha(live)}\n`))
    expect(r.stderr).not.toContain('==> Upload')
    const calls = ssh.argv().slice(from)
    // master, LOOK, exit: the release is there and the newest: nothing to lock, send, mark or prune
    expect(calls.map((a) => a.at(-1))).toEqual(['127.0.0.1', expect.stringContaining('command -v sha256sum'), '127.0.0.1'])
    expect(r.logins).toBe(1)
    const after = statSync(live)
    expect([after.ino, after.size, after.mtimeMs, sha(live)]).toEqual([before.ino, before.size, before.mtimeMs, sumOf(first)])
    expect(releases()).toEqual([`agent-${sumOf(first)}`])
    expect(sb.commands('nomad').filter((c) => c.startsWith('var put')).length).toBe(puts) // the record already says it
    expect(recorded().map((b) => [b.sha256, b.hosts])).toEqual([[sumOf(first), ['127.0.0.1']]])
  })

  it('v1, v2, v3: three release files side by side, each named by its sha256, each executable and runnable', async () => {
    const sums: string[] = []
    for (const v of ['v1', 'v2', 'v3']) {
      const r = await run({ AGENT_SOURCE_DIR: variant(v) })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/ uploaded \(\d+ bytes sent\)\n/)
      expect(r.logins).toBe(1)
      sums.push(sumOf(r))
    }
    expect(new Set(sums).size).toBe(3)
    expect(releases()).toEqual(sums.map((s) => `agent-${s}`).sort())
    expect(readdirSync(remote).sort()).toEqual(releases()) // nothing else: no live path, no .previous, no upload, no lock
    for (const [i, s] of sums.entries()) {
      expect(sha(release(s))).toBe(s)
      expect(statSync(release(s)).mode & 0o777).toBe(0o755)
      expect(execFileSync(release(s), { encoding: 'utf8' })).toBe(`agent v${i + 1}\n`)
    }
  })

  it('the RUNNING release is never touched: same inode and bytes, still running, while a new release lands beside it', async () => {
    const first = await run()
    expect(first.code).toBe(0)
    const live = release(sumOf(first))
    const before = { ino: statSync(live).ino, mtimeMs: statSync(live).mtimeMs, bytes: readFileSync(live) }
    const old: ChildProcess = spawn(live, ['sleep', '60'], { stdio: 'ignore' })
    cleanup.push(() => old.kill('SIGKILL'))
    expect(await until(() => existsSync(`/proc/${old.pid}/exe`) && statSync(`/proc/${old.pid}/exe`).ino === before.ino, 5000)).toBe(true)
    // Writing into it is what the kernel forbids while it runs (ETXTBSY): the script must not need to.
    expect(() => writeFileSync(live, 'x', { flag: 'r+' })).toThrow(/ETXTBSY/)
    jobRuns(sumOf(first))

    const r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code, r.stderr).toBe(0)
    const next = release(sumOf(r))
    expect(next).not.toBe(live)
    expect(old.exitCode).toBe(null)
    expect(() => process.kill(old.pid!, 0)).not.toThrow()
    expect(statSync(live).ino).toBe(before.ino)
    expect(statSync(live).mtimeMs).toBe(before.mtimeMs)
    expect(readFileSync(live).equals(before.bytes)).toBe(true)
    expect(statSync(`/proc/${old.pid}/exe`).ino).toBe(before.ino)
    expect(statSync(next).ino).not.toBe(before.ino)
    expect(execFileSync(next, { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(releases()).toEqual([`agent-${sumOf(first)}`, `agent-${sumOf(r)}`].sort())
    expect(r.stderr).toContain(`agent-economique runs agent-${sumOf(first).slice(0, 12)}`)
    expect(r.stdout).toContain(`agent-economique runs agent-${sumOf(first).slice(0, 12)}: this build is staged in ${RECORD}.`)
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
    expect(releases()).toEqual([`agent-${sumOf(r)}`])
  })
})

describe('deploy_binary: the releases kept (DEPLOY_KEEP_RELEASES) and the record', () => {
  /** n builds in a row (v1..vn), each a run of its own; their sha256s, oldest first. */
  async function builds(n: number, env: Record<string, string> = {}) {
    const sums: string[] = []
    for (let i = 1; i <= n; i++) {
      const r = await run({ AGENT_SOURCE_DIR: variant(`v${i}`), ...env })
      expect(r.code, r.stderr).toBe(0)
      sums.push(sumOf(r))
    }
    return sums
  }

  it('8 builds with the default: the newest 5 release files are kept, the older ones removed (and said so), and the record lists those 5', async () => {
    const sums = await builds(8)
    const newest = sums.slice(3)
    expect(releases()).toEqual(newest.map((s) => `agent-${s}`).sort())
    for (const s of newest) expect(sha(release(s))).toBe(s)
    expect(uploads(remote)).toEqual([])
    // The record: the kept builds only, newest first, each on this host.
    expect(recorded().map((b) => b.sha256)).toEqual([...newest].reverse())
    expect(recorded().every((b) => b.hosts.join() === '127.0.0.1')).toBe(true)
    // A build made again counts as the newest: v4 (the oldest kept) survives the next build, v5 goes.
    const again = await run({ AGENT_SOURCE_DIR: variant('v4') })
    expect(again.stdout).toContain('is unchanged (already there, sha256 checked): nothing sent')
    const v9 = await run({ AGENT_SOURCE_DIR: variant('v9') })
    expect(v9.code, v9.stderr).toBe(0)
    expect(v9.stderr).toContain(`removed agent-${sums[4].slice(0, 12)} (older than the last 5)`)
    expect(releases()).toEqual([sums[3], sums[5], sums[6], sums[7], sumOf(v9)].map((s) => `agent-${s}`).sort())
    expect(recorded().map((b) => b.sha256)).toEqual([sumOf(v9), sums[3], sums[7], sums[6], sums[5]])
  })

  it('the release the job runs is never removed: 8 builds while the job runs the first one keep the newest 5 and it', async () => {
    const [first] = await builds(1)
    // A version of the job that runs it, registered through the double's own CLI as deploy_nomad does:
    // `nomad job history -json agent-economique` names it by Meta.binary_sha256 and by its raw_exec command.
    jobRuns(first)
    // v1 again (unchanged: only touched), then v2..v8: the newest 5 are v4..v8, and v1 stays because the job runs it.
    const sums = await builds(8)
    expect(sums[0]).toBe(first)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job history')).length).toBe(9)
    expect(releases()).toEqual([first, ...sums.slice(3)].map((s) => `agent-${s}`).sort())
    expect(recorded().map((b) => b.sha256)).toEqual([...sums.slice(3)].reverse().concat(first))
  })

  it('DEPLOY_KEEP_RELEASES=2: the record lists what is on the hosts; an entry pruned from every host disappears, one on another host stays', async () => {
    // Another host's build, and another item of the record: both left as they were.
    const elsewhere = { sha256: 'e'.repeat(64), uploaded: '2026-01-01T00:00:00.000Z', by: 'ops@laptop', hosts: ['10.0.0.9'] }
    sb.setState({ vars: { [RECORD]: { Namespace: 'default', Path: RECORD, CreateIndex: 5, ModifyIndex: 5, CreateTime: 0, ModifyTime: 0, Items: { binaries: JSON.stringify([elsewhere]), history: '[]' } } } })
    const [v1, v2] = await builds(2, { DEPLOY_KEEP_RELEASES: '2' })
    let list = recorded()
    expect(list.map((b) => b.sha256)).toEqual([v2, v1, elsewhere.sha256]) // newest first
    expect(list.map((b) => b.hosts)).toEqual([['127.0.0.1'], ['127.0.0.1'], ['10.0.0.9']])
    expect(Date.parse(list[0].uploaded)).toBeGreaterThanOrEqual(Date.parse(list[1].uploaded))
    expect(sb.readState().vars[RECORD].Items.history).toBe('[]')
    // Each put was made at the index its read returned (check-and-set).
    const puts = sb.commands('nomad').filter((c) => c.startsWith('var put'))
    expect(puts).toEqual(['var put -check-index 5 -in=json -out=none -', expect.stringMatching(/^var put -check-index \d+ -in=json -out=none -$/)])

    const v3 = await run({ AGENT_SOURCE_DIR: variant('v3'), DEPLOY_KEEP_RELEASES: '2' })
    expect(v3.code, v3.stderr).toBe(0)
    expect(v3.stdout).toContain('kept    127.0.0.1: 2 releases (DEPLOY_KEEP_RELEASES=2, and what the job runs)')
    expect(releases()).toEqual([v2, sumOf(v3)].map((s) => `agent-${s}`).sort())
    list = recorded()
    expect(list.map((b) => b.sha256)).toEqual([sumOf(v3), v2, elsewhere.sha256])
    expect(list[2]).toEqual(elsewhere)
  })

  it.each(['1', 'x', '0', '51', '-3', '2.5'])('refuses DEPLOY_KEEP_RELEASES=%j before any ssh call or build (exit 2)', async (value) => {
    const r = await run({ DEPLOY_KEEP_RELEASES: value })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`DEPLOY_KEEP_RELEASES=${JSON.stringify(value)} must be a whole number from 2 to 50 (default 5)`)
    expect(r.connections).toBe(0)
    expect(ssh.argv()).toEqual([])
    expect(go.calls()).toEqual([])
    expect(sb.commands('nomad')).toEqual([])
  })
})

describe('deploy_binary: failures leave every release as it was', () => {
  it('a checksum mismatch on the server aborts without renaming (exit 1) and removes the upload', async () => {
    const first = await run()
    expect(first.code).toBe(0)
    const live = release(sumOf(first))
    const before = { bytes: readFileSync(live), ino: statSync(live).ino }
    // The server's sha256sum reads a corrupted upload: one byte is appended to the file it verifies.
    const corrupting = await faultyServer({ sha256sum: `#!/bin/sh\nfor f in "$@"; do case "$f" in *.upload.*) printf x >> "$f";; esac; done\nexec /usr/bin/sha256sum "$@"\n` })
    const v2 = variant('fixture-2')
    const recordBefore = sb.readState().vars[RECORD]
    const r = await run({ AGENT_SOURCE_DIR: v2 }, [], { server: corrupting })
    expect(r.code).toBe(1)
    const m = r.stderr.match(/✗ Upload .* failed: sha256 mismatch on the server: got ([0-9a-f]{64}), expected ([0-9a-f]{64}): the upload was removed and no release was touched/)
    expect(m).not.toBe(null)
    expect(m![1]).not.toBe(m![2])
    expect(readFileSync(live).equals(before.bytes)).toBe(true)
    expect(statSync(live).ino).toBe(before.ino)
    expect(releases()).toEqual([`agent-${sumOf(first)}`]) // no release of the corrupted upload, under any name
    expect(uploads(remote)).toEqual([])
    expect(readdirSync(remote).filter((f) => f.endsWith('.lock'))).toEqual([])
    expect(r.logins).toBe(1)
    expect(sb.readState().vars[RECORD]).toEqual(recordBefore) // nothing recorded
    // The expected sum was the build's: an honest server accepts the same binary, under that name.
    const honest = await run({ AGENT_SOURCE_DIR: v2 })
    expect(honest.code).toBe(0)
    expect(sumOf(honest)).toBe(m![2])
    expect(sha(release(m![2]))).toBe(m![2])
    expect(recorded().map((b) => b.sha256)).toEqual([m![2], sumOf(first)])
  })

  it.each([['SIGTERM', 143], ['SIGINT', 130]] as const)('a transfer killed by %s halfway leaves the releases byte-identical, no release of the partial upload, no process behind, and the next run succeeds', async (signal, code) => {
    const first = await run()
    expect(first.code).toBe(0)
    const live = release(sumOf(first))
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
    expect(releases()).toEqual([`agent-${sumOf(first)}`])
    expect(recorded().map((b) => b.sha256)).toEqual([sumOf(first)])

    const next = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(next.code).toBe(0)
    expect(execFileSync(release(sumOf(next)), { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(readFileSync(live).equals(before.bytes)).toBe(true)
    expect(releases()).toEqual([`agent-${sumOf(first)}`, `agent-${sumOf(next)}`].sort())
  })

  it('a changed host key fails before any remote command and before the build (exit 1)', async () => {
    const r = await run({ DEPLOY_SSH_KNOWN_HOSTS: sshd.changedKnownHosts })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('host key has CHANGED')
    expect(r.logins).toBe(0)
    expect(ssh.argv()).toHaveLength(1)
    expect(go.calls()).toEqual([])
    expect(existsSync(remote)).toBe(false)
    expect(sb.readState().vars?.[RECORD]).toBeUndefined()
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
    expect(sb.readState().vars?.[RECORD]).toBeUndefined()
  })

  // The login users print a banner on stdout and stderr (test/sshd.ts: ~/.bashrc for bash, ~/.ssh/rc
  // for both): the remote output is read after the frame only, whatever the login shell says first.
  it.each([USERS.bash, USERS.dash])('a chatty login (%s): the second run still finds the release and sends nothing; the platform check still holds', async (user) => {
    remote = `${newBase(user)}/data`
    const first = await run({}, [], { user })
    expect(first.code).toBe(0)
    const live = release(sumOf(first))
    const r = await run({}, [], { user })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`${live} on ${user}@127.0.0.1 is unchanged (already there, the newest release, sha256 checked): nothing sent`)
    expect(r.stderr).not.toContain('warning:')
    expect(readdirSync(remote)).toEqual([`agent-${sumOf(first)}`])
    const arm = await run({ AGENT_GOARCH: 'arm64' }, [], { user })
    expect(arm.code).toBe(2)
    expect(arm.stderr).toContain('but AGENT_GOOS/AGENT_GOARCH build linux/arm64: set them to match')
    expect(arm.output).not.toContain('last login: yesterday')
  })

  it('one run at a time installs: a lock held by another run refuses (exit 2, names it, nothing sent); a stale one is taken over; none is left behind', async () => {
    const first = await run()
    expect(first.code).toBe(0)
    const live = release(sumOf(first))
    expect(readdirSync(remote).filter((f) => f.endsWith('.lock'))).toEqual([])
    const lock = `${remote}/.agent.lock`
    execFileSync('su', ['-s', '/bin/sh', USERS.dash, '-c', `mkdir ${lock} && echo 'ops@laptop pid 42 since 2026-12-06T10:00:00Z' > ${lock}/owner`])
    let r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`another deploy_binary is installing into ${remote} on 127.0.0.1 (ops@laptop pid 42 since 2026-12-06T10:00:00Z)`)
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(releases()).toEqual([`agent-${sumOf(first)}`])
    expect(uploads(remote)).toEqual([])
    expect(recorded().map((b) => b.sha256)).toEqual([sumOf(first)])
    const old = new Date(Date.now() - 60 * 60_000)
    utimesSync(lock, old, old)
    r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('warning: took over a lock left 15+ minutes ago by ops@laptop pid 42')
    expect(execFileSync(release(sumOf(r)), { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(execFileSync(live, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(existsSync(lock)).toBe(false)
  })

  it('a file named as this build whose content is not (a corrupted copy) is warned about and uploaded again; one named as another build is only warned about', async () => {
    // This build's sha256, learnt from a run into another directory.
    const elsewhere = remote
    remote = `${base}/elsewhere`
    const probe = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(probe.code).toBe(0)
    const sum = sumOf(probe)
    remote = elsewhere
    const other = 'b'.repeat(64)
    execFileSync('su', ['-s', '/bin/sh', USERS.dash, '-c', `mkdir ${remote} && printf truncated > ${remote}/agent-${sum} && printf junk > ${remote}/agent-${other}`])
    const r = await run({ AGENT_SOURCE_DIR: variant('fixture-2') })
    expect(r.code, r.stderr).toBe(0)
    const content = (text: string) => createHash('sha256').update(text).digest('hex')
    expect(r.stderr).toContain(`warning: ${remote}/agent-${sum} on 127.0.0.1 does not hold what its name says (sha256 ${content('truncated')}): it will be uploaded again if this build is it`)
    expect(r.stderr).toContain(`warning: ${remote}/agent-${other} on 127.0.0.1 does not hold what its name says (sha256 ${content('junk')})`)
    expect(r.stdout).toContain(`${release(sum)} on ${USERS.dash}@127.0.0.1 uploaded (`)
    expect(sha(release(sum))).toBe(sum)
    expect(statSync(release(sum)).mode & 0o777).toBe(0o755)
    expect(execFileSync(release(sum), { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(readFileSync(`${remote}/agent-${other}`, 'utf8')).toBe('junk')
    expect(recorded().map((b) => [b.sha256, b.hosts])).toEqual([[sum, ['127.0.0.1']]]) // the corrupted one is no release
  })

  it('a TMPDIR too long for a unix socket path: the control socket goes to /tmp, and the run works', async () => {
    const long = path.join(sb.dir, 'a'.repeat(60), 'b'.repeat(40))
    mkdirSync(long, { recursive: true })
    const r = await run({ TMPDIR: long })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/-S \/tmp\/deploy-ssh-/)
  })

  it('a directory (or a link) where this release goes: exit 1 before anything is received, left as it was, no upload left, nothing recorded', async () => {
    const elsewhere = remote
    remote = `${base}/elsewhere`
    const probe = await run()
    expect(probe.code).toBe(0)
    const sum = sumOf(probe)
    remote = elsewhere
    const asUser = (command: string) => execFileSync('su', ['-s', '/bin/sh', USERS.dash, '-c', command])
    asUser(`mkdir -p ${release(sum)}`)
    const r = await run()
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${release(sum)} exists on the server but is not a regular file: move it away`)
    expect(r.stderr).not.toContain('bytes sent')
    expect(readdirSync(release(sum))).toEqual([])
    expect(uploads(remote)).toEqual([])
    expect(readdirSync(remote)).toEqual([`agent-${sum}`]) // no lock left either
    expect(sb.readState().vars[RECORD].Items.binaries).toBe(JSON.stringify(recorded())) // written by the probe run only
    expect(sb.commands('nomad').filter((c) => c.startsWith('var put'))).toHaveLength(1)
    // A symbolic link to a directory: the same.
    asUser(`rmdir ${release(sum)} && mkdir ${remote}/target && ln -s target ${release(sum)}`)
    const link = await run()
    expect(link.code).toBe(1)
    expect(link.stderr).toContain(`${release(sum)} exists on the server but is not a regular file: move it away`)
    expect(readdirSync(`${remote}/target`)).toEqual([])
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
    expect(r.code, r.stderr).toBe(0)
    const live = release(sumOf(r), remote, name)
    expect(sha(live)).toBe(sumOf(r))
    expect(r.stdout).toContain(`  path    ${live}  (linux/amd64)\n`)
    expect(execFileSync('find', [base, '-mindepth', '1'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort()).toEqual([`${base}/-odd+dir@v1.2`, remote, live])
    const again = await run({ AGENT_BINARY_NAME: name }, [], { user })
    expect(again.stdout).toContain('is unchanged (already there, the newest release, sha256 checked): nothing sent')
    expect(again.logins).toBe(1)
    // A second build beside it, then with DEPLOY_KEEP_RELEASES=2 a third: the oldest goes, found by the same quoted name.
    const v2 = await run({ AGENT_BINARY_NAME: name, AGENT_SOURCE_DIR: variant('v2') }, [], { user })
    const v3 = await run({ AGENT_BINARY_NAME: name, AGENT_SOURCE_DIR: variant('v3'), DEPLOY_KEEP_RELEASES: '2' }, [], { user })
    expect(v3.code, v3.stderr).toBe(0)
    expect(releases(remote, name)).toEqual([sumOf(v2), sumOf(v3)].map((s) => `${name}-${s}`).sort())
    expect(existsSync(live)).toBe(false)
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
    const r = await run({ AGENT_SOURCE_DIR: sb.dir, AGENT_GOOS: 'linux;id', DEPLOY_SSH_HOST: undefined, DEPLOY_KEEP_RELEASES: 'x' })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`AGENT_SOURCE_DIR=${sb.dir} is not a Go module (no go.mod)`)
    expect(r.stderr).toContain('AGENT_GOOS="linux;id" must be a Go platform name such as linux')
    expect(r.stderr).toContain('DEPLOY_SSH_HOST is not set')
    expect(r.stderr).toContain('DEPLOY_KEEP_RELEASES="x" must be a whole number from 2 to 50')
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
  it('the result names the host, the release path and its sha256: done, then unchanged', async () => {
    let r = await run({}, ['--json'])
    expect(r.code, r.stderr).toBe(0)
    const sum = sha(release(sumOf({ stdout: r.stderr })))
    let result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ script: 'deploy_binary', outcome: 'done', exitCode: 0, host: '127.0.0.1', binary: { path: release(sum), sha256: sum }, acted: true })
    expect(result.message).toMatch(/ uploaded \(\d+ bytes sent\)$/)
    expect(result.hosts).toEqual([{ host: '127.0.0.1', outcome: 'done', message: result.message }])
    expect(result.next).toEqual(['npx tsx deploy/deploy_nomad.mts'])
    expect(r.stderr).toContain(`sha256  ${sum}`)
    r = await run({}, ['--json'])
    result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'unchanged', binary: { path: release(sum), sha256: sum } })
    expect(result.message).toMatch(/ is unchanged \(already there, the newest release, sha256 checked\): nothing sent$/)
  })
})

describe('deploy_binary: --dry-run and --help', () => {
  it('--dry-run runs nothing and prints commands that, pasted into a shell, build and install the release', async () => {
    const r = await run({}, ['--dry-run'])
    expect(r.code).toBe(0)
    expect(r.connections).toBe(0)
    expect(ssh.argv()).toEqual([])
    expect(go.calls()).toEqual([])
    expect(sb.calls('nomad')).toEqual([])
    expect(r.stdout).toContain(`(cd ${FIXTURE} && GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -trimpath -buildvcs=false '-ldflags=-s -w -buildid=' -o "$BUILD"/agent .)`)
    expect(r.stdout).toMatch(/^ssh_to "sh -c '\$INSTALL' sh \/tmp\/deploy-remote-\w+\/data agent manual \$SUM" < "\$BUILD"\/agent$/m)
    expect(r.stdout).toMatch(/^ssh_to "sh -c '\$PRUNE' sh \/tmp\/deploy-remote-\w+\/data agent 5 \$SUM \$RUNNING_SHA256"$/m)
    expect(r.stdout).toMatch(/^# LOOK: .*\n[\s\S]*^# LOCK: [\s\S]*^# INSTALL: [\s\S]*^# PRUNE: [\s\S]*^# UNLOCK: /m)
    expect(r.stdout).toContain(`#   nomad var put -check-index "$MODIFY_INDEX_FROM_GET" -in=json -out=none -`)
    // Readable: the connection once, one statement a line, no nested quoting.
    expect(r.stdout.split('\n').filter((l) => l.length > 200 && !l.startsWith('ssh_to()'))).toEqual([])
    expect(r.stdout).not.toContain(`'\\''`)
    expect(r.stdout).toContain('if [ "${s%% *}" != "$4" ]; then\n  echo "sha256 mismatch on the server')
    writeFileSync(path.join(sb.dir, 'plan.sh'), r.stdout)
    // Pasted into dash (POSIX sh), then into bash after a change: each installs its own release; then
    // a third with RUNNING_SHA256 set and DEPLOY_KEEP_RELEASES=2 keeps the running one beyond the 2.
    const paste = (shell: string, plan: string, env: Record<string, string> = {}) =>
      execFileSync(shell, ['-e', path.join(sb.dir, plan)], { env: { PATH: process.env.PATH, HOME: sb.home, ...goEnv, ...env }, stdio: 'pipe' })
    paste('dash', 'plan.sh')
    const [v1] = releases()
    expect(v1).toMatch(/^agent-[0-9a-f]{64}$/)
    expect(sha(`${remote}/${v1}`)).toBe(v1.slice(6))
    expect(execFileSync(`${remote}/${v1}`, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(uploads(remote)).toEqual([])
    expect(readdirSync(remote)).toEqual([v1]) // the lock released
    const again = await run({ AGENT_SOURCE_DIR: variant('fixture-2') }, ['--dry-run'])
    writeFileSync(path.join(sb.dir, 'plan2.sh'), again.stdout)
    paste('bash', 'plan2.sh')
    expect(releases()).toHaveLength(2)
    const v2 = releases().find((f) => f !== v1)!
    expect(execFileSync(`${remote}/${v2}`, { encoding: 'utf8' })).toBe('agent fixture-2\n')
    expect(execFileSync(`${remote}/${v1}`, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    const third = await run({ AGENT_SOURCE_DIR: variant('fixture-3'), DEPLOY_KEEP_RELEASES: '2' }, ['--dry-run'])
    writeFileSync(path.join(sb.dir, 'plan3.sh'), third.stdout)
    paste('dash', 'plan3.sh', { RUNNING_SHA256: v1.slice(6) })
    // fixture-1's release is beyond the newest 2, but the job runs it (RUNNING_SHA256): kept.
    expect(releases()).toHaveLength(3)
    expect(releases()).toEqual(expect.arrayContaining([v1, v2]))
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
    for (const s of ['Usage: npx tsx deploy/deploy_binary.mts', 'Needs: go, ssh', 'AGENT_SOURCE_DIR (default backend)', 'AGENT_REMOTE_DIR (default /root/data)', 'AGENT_GOARCH (default amd64)', 'DEPLOY_SSH_KNOWN_HOSTS',
      'AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256>', 'DEPLOY_KEEP_RELEASES (default 5', 'nomad/jobs/agent-economique/releases', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
    expect(r.stdout).not.toContain('.previous')
  })
})
