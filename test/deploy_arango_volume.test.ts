// deploy_arango_volume.mts against a REAL OpenSSH server (test/sshd.ts): the directory made for real,
// one authentication per run (counted in sshd's log), remote quoting under dash and bash login shells,
// host trust, and the refusals that must happen before any connection.
import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, parseHcl, sandbox, write, type Sandbox } from './helpers.ts'
import { ensureUsers, escape, FRAME, freePort, requireTools, spy, startSshd, userDir, USERS, type Sshd } from './sshd.ts'

const SCRIPT = 'deploy_arango_volume.mts'
let sshd: Sshd
let sb: Sandbox
let ssh: ReturnType<typeof spy>
let base: string
const bases: string[] = []

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
  // A Nomad before 1.10 (no dynamic host volumes): the static block, printed for a person, as always.
  // Nomad 1.10+ (the volume registered through the API) and several clients: test/multi_client.test.ts.
  sb.setState({ version: '1.9.7' })
  ssh = spy(sb, 'ssh')
  base = newBase(USERS.dash)
})
afterEach(() => {
  for (const b of bases.splice(0)) rmSync(b, { recursive: true, force: true })
})

function newBase(user: string) {
  const b = userDir(user)
  bases.push(b)
  return b
}
/** Run the script as `user` against the test sshd; returns the result and the logins it made. */
async function run(env: Record<string, string | undefined> = {}, args: string[] = [], user: string = USERS.dash) {
  const before = { accepted: sshd.accepted(), connections: sshd.connections() }
  const r = await sb.run(SCRIPT, args, { env: { ...sshd.env(user), ARANGO_DATA_DIR: `${base}/arangodb_data`, ...env } })
  return { ...r, logins: sshd.accepted() - before.accepted, connections: sshd.connections() - before.connections }
}
const mode = (p: string) => (statSync(p).mode & 0o7777).toString(8)
const block = (dir: string) => `  client {
    host_volume "arangodb_data" {
      path      = "${dir}"
      read_only = false
    }
  }
`

describe('deploy_arango_volume: the main path against a real sshd', () => {
  it('creates the directory with mode 755 over one authenticated connection and prints the block to add by hand', async () => {
    const dir = `${base}/opt/arangodb_data` // parents too
    const r = await run({ ARANGO_DATA_DIR: dir })
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    expect(statSync(dir).isDirectory()).toBe(true)
    expect(mode(dir)).toBe('755')
    expect(statSync(dir).uid).toBe(Number(execFileSync('id', ['-u', USERS.dash], { encoding: 'utf8' })))
    expect(r.logins).toBe(1)
    expect(r.stdout).toBe(`${dir} created on ${USERS.dash}@127.0.0.1 with mode 755

Nomad 1.9.7 has no dynamic host volumes (1.10+): declare it by hand, once per client.
Add by hand to /etc/nomad.d/nomad.hcl on 127.0.0.1, inside its client block (no script does this):
${block(dir)}then restart Nomad on that server: sudo systemctl restart nomad

Useful commands:
  ssh -p ${sshd.port} -i ${sshd.key} -o UserKnownHostsFile=${sshd.knownHosts} ${USERS.dash}@127.0.0.1 ls -ld ${dir}
  nomad node status -verbose <node-id>   ("Host Volumes" lists arangodb_data once Nomad has restarted)
  npx tsx deploy/deploy_arangodb.mts
`)
    // The block is HCL that Nomad's own parser reads as intended.
    const hcl = await parseHcl(write(sb.dir, 'client.hcl', block(dir)))
    expect(hcl.client[0].host_volume.arangodb_data[0]).toEqual({ path: dir, read_only: false })
    // The exact ssh calls: one master (options end before the destination), two commands through it, exit.
    const calls = ssh.argv()
    const socket = calls[0][calls[0].indexOf('-S') + 1]
    expect(calls).toEqual([
      ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'StrictHostKeyChecking=yes', '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=2',
        '-p', String(sshd.port), '-l', USERS.dash, '-i', sshd.key, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${sshd.knownHosts}`,
        '-S', socket, '-o', 'ControlMaster=yes', '-o', 'ControlPersist=no', '-n', '-N', '--', '127.0.0.1'],
      // Each remote command is framed: a fresh marker on stdout and stderr, then the fixed script.
      [...through(socket), '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}sh -c 'if \\[ -d "\\$1" \\].*' sh /tmp/deploy-remote-\\w+/opt/arangodb_data$`))],
      [...through(socket), '-n', '--', '127.0.0.1', expect.stringMatching(new RegExp(`^${FRAME}${escape(`sh -c 'mkdir -p -- "$1" && chmod 755 -- "$1"' sh ${dir}`)}$`))],
      ['-S', socket, '-O', 'exit', '--', '127.0.0.1'],
    ])
    expect(calls.flat().join(' ')).not.toMatch(/StrictHostKeyChecking=no|UserKnownHostsFile=\/dev\/null/)
  })

  it('a second run finds the directory, changes nothing and says so (one login again)', async () => {
    const dir = `${base}/arangodb_data`
    expect((await run()).code).toBe(0)
    const before = statSync(dir)
    const calls = ssh.argv().length
    const r = await run()
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`^${dir} already exists on ${USERS.dash}@127\\.0\\.0\\.1 with mode 755: nothing changed\n`))
    expect(r.stdout).toContain(block(dir))
    expect(r.logins).toBe(1)
    expect(ssh.argv().slice(calls).map((a) => a.at(-1))).not.toContainEqual(expect.stringContaining('mkdir'))
    expect(statSync(dir).ctimeMs).toBe(before.ctimeMs)
  })

  it('sets mode 755 on an existing directory that has another mode', async () => {
    const dir = `${base}/arangodb_data`
    mkdirSync(dir)
    chmodSync(dir, 0o700)
    execFileSync('chown', [USERS.dash, dir])
    const r = await run()
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/arangodb_data on deploytest-dash@127\.0\.0\.1: mode 700 changed to 755/)
    expect(mode(dir)).toBe('755')
  })

  it('refuses (exit 2) a path that exists and is not a directory, and leaves it alone', async () => {
    const file = write(base, 'arangodb_data', 'not a directory\n')
    const r = await run()
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`${file} exists on ${USERS.dash}@127.0.0.1 but is not a directory: move it away or set ARANGO_DATA_DIR`)
    expect(statSync(file).isFile()).toBe(true)
    expect(ssh.argv().map((a) => a.at(-1))).not.toContainEqual(expect.stringContaining('mkdir'))
  })

  it('exits 1 with the server\'s reason when the directory cannot be created', async () => {
    const locked = path.join(base, 'locked')
    mkdirSync(locked, { mode: 0o755 }) // owned by root: the login user cannot write in it
    const r = await run({ ARANGO_DATA_DIR: `${locked}/arangodb_data` })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/✗ Create .*locked\/arangodb_data on 127\.0\.0\.1 \(mode 755\) failed: creating .*locked\/arangodb_data on deploytest-dash@127\.0\.0\.1: exited 1: mkdir: cannot create directory .*Permission denied/)
  })
})

describe('deploy_arango_volume: remote quoting under dash and bash login shells', () => {
  it.each(Object.entries(USERS))('an unusual but allowed path works the same when the login shell is %s', async (_shell, user) => {
    base = newBase(user)
    const dir = `${base}/-odd+dir@v1.2/data_x-y`
    const r = await run({ ARANGO_DATA_DIR: dir }, [], user)
    expect(r.code).toBe(0)
    expect(mode(dir)).toBe('755')
    expect(execFileSync('find', [base, '-mindepth', '1'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort()).toEqual([`${base}/-odd+dir@v1.2`, dir])
    expect(r.logins).toBe(1)
  })

  it.each([
    ['a space', '/tmp/a b'], ['a ;', '/tmp/a;touch /tmp/pwned-arango'], ['a quote', "/tmp/a'b"], ['$(…)', '/tmp/$(touch /tmp/pwned-arango)'],
    ['a backtick', '/tmp/`touch /tmp/pwned-arango`'], ['a newline', '/tmp/a\nb'], ['a *', '/tmp/*'], ['a ~', '~/data'], ['a leading -', '-rf'],
    ['a relative path', 'opt/data'], ['a .. segment', '/opt/../etc'],
  ])('refuses ARANGO_DATA_DIR with %s before any ssh call (exit 2)', async (_what, value) => {
    const r = await run({ ARANGO_DATA_DIR: value })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(new RegExp(`ARANGO_DATA_DIR=${escapeRe(JSON.stringify(value))} (must|may only hold letters)`))
    expect(ssh.argv()).toEqual([])
    expect(r.connections).toBe(0)
    expect(existsSync('/tmp/pwned-arango')).toBe(false)
  })
})

describe('deploy_arango_volume: configuration and host trust', () => {
  it.each([
    ['DEPLOY_SSH_HOST', '-oProxyCommand=touch /tmp/pwned-arango'], ['DEPLOY_SSH_HOST', 'host name'], ['DEPLOY_SSH_HOST', 'h;id'],
    ['DEPLOY_SSH_HOST', '$(id)'], ['DEPLOY_SSH_USER', '-oProxyCommand=id'], ['DEPLOY_SSH_USER', 'root;id'], ['DEPLOY_SSH_USER', 'a b'],
    ['DEPLOY_SSH_USER', '`id`'],
  ])('refuses %s=%j before any ssh call (exit 2)', async (name, value) => {
    const r = await run({ [name]: value })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`${name}=${JSON.stringify(value)} must be`)
    expect(ssh.argv()).toEqual([])
    expect(r.connections).toBe(0)
    expect(existsSync('/tmp/pwned-arango')).toBe(false)
  })

  it('reports every missing or invalid variable in one message', async () => {
    const r = await run({ DEPLOY_SSH_HOST: undefined, DEPLOY_SSH_PORT: '70000', DEPLOY_SSH_KEY: `${sb.dir}/no-such-key`, ARANGO_DATA_DIR: '' })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/^refused \(nothing was changed\):/m)
    for (const s of ['DEPLOY_SSH_HOST is not set', 'DEPLOY_SSH_PORT="70000" must be a port number', `DEPLOY_SSH_KEY: ${sb.dir}/no-such-key does not exist`, 'ARANGO_DATA_DIR is empty'])
      expect(r.stderr).toContain(s)
    expect(r.connections).toBe(0)
  })

  it('refuses without ssh on PATH (exit 2)', async () => {
    const r = await run({ PATH: sb.pathWithout('ssh') })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('ssh not found on PATH (install an OpenSSH client)')
    expect(r.connections).toBe(0)
  })

  it('a changed host key fails before any remote command (exit 1, says the key CHANGED)', async () => {
    const r = await run({ DEPLOY_SSH_KNOWN_HOSTS: sshd.changedKnownHosts })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("host key has CHANGED (possible man-in-the-middle): nothing was run on it")
    expect(r.logins).toBe(0)
    expect(ssh.argv().map((a) => a.at(-1))).toEqual(['127.0.0.1']) // the master only
    expect(() => statSync(`${base}/arangodb_data`)).toThrow()
  })

  it('an unknown host key fails (exit 1) and says how to add it after checking it', async () => {
    const r = await run({ DEPLOY_SSH_KNOWN_HOSTS: sshd.emptyKnownHosts })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("host key is not in known_hosts: verify its fingerprint, then add it (ssh-keyscan")
    expect(r.logins).toBe(0)
  })

  it('a key the server refuses fails (exit 1, authentication refused)', async () => {
    const r = await run({ DEPLOY_SSH_KEY: sshd.strangerKey })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/authentication refused: check DEPLOY_SSH_USER and DEPLOY_SSH_KEY \(.*Permission denied/)
    expect(r.logins).toBe(0)
  })

  it('an unreachable server fails with exit 1 and says it is a connection problem', async () => {
    const r = await run({ DEPLOY_SSH_PORT: String(await freePort()) })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/✗ Connect to .* failed: ssh to deploytest-dash@127\.0\.0\.1 port \d+ failed: a connection problem: .*Connection refused/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })
})

describe('deploy_arango_volume --json', () => {
  it('done with the host, then unchanged', async () => {
    let r = await run({}, ['--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(await jsonResult(r.stdout)).toMatchObject({ script: 'deploy_arango_volume', outcome: 'done', host: '127.0.0.1', acted: true })
    r = await run({}, ['--json'])
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'unchanged', host: '127.0.0.1' })
    expect(result.message).toContain('already exists')
  })
})

describe('deploy_arango_volume: --dry-run and --help', () => {
  it('--dry-run connects to nothing and prints commands that, pasted into a shell, do the job', async () => {
    const dir = `${base}/arangodb_data`
    const r = await run({}, ['--dry-run'])
    expect(r.code).toBe(0)
    expect(r.connections).toBe(0)
    expect(ssh.argv()).toEqual([])
    // The connection once, each remote script on its own lines, then its call; the host_volume block
    // as comments (the script stays pasteable). No line a person has to unpick: none over 200 characters
    // but the connection's, and no nested quoting.
    const lines = r.stdout.trim().split('\n').filter((l) => !l.startsWith('#') && !l.startsWith('export '))
    expect(lines[0]).toBe(`ssh_to() { ssh -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=2 -p ${sshd.port} -l ${USERS.dash} -i ${sshd.key} -o IdentitiesOnly=yes -o UserKnownHostsFile=${sshd.knownHosts} -- 127.0.0.1 "$@"; }`)
    expect(r.stdout).toContain(`MAKE=$(cat <<'REMOTE'\nmkdir -p -- "$1" && chmod 755 -- "$1"\nREMOTE\n)\nssh_to "sh -c '$MAKE' sh ${dir}"\n`)
    expect(lines.slice(1).filter((l) => l.length > 200)).toEqual([])
    expect(r.stdout).not.toContain(`'\\''`)
    expect(r.stdout).toMatch(/^#\s+host_volume "arangodb_data" \{$/m)
    // Pasted into dash (POSIX sh) and into bash, it does the job; the same remote command as a real run.
    writeFileSync(path.join(sb.dir, 'plan.sh'), r.stdout)
    execFileSync('dash', ['-e', path.join(sb.dir, 'plan.sh')], { env: { PATH: process.env.PATH }, stdio: 'pipe' })
    expect(mode(dir)).toBe('755')
    rmSync(dir, { recursive: true })
    execFileSync('bash', ['-e', path.join(sb.dir, 'plan.sh')], { env: { PATH: process.env.PATH }, stdio: 'pipe' })
    expect(mode(dir)).toBe('755')
  })

  it('--help prints the header: purpose, usage, tools, variables, exit codes', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_arango_volume: create the ArangoDB data directory/)
    for (const s of ['Usage: npx tsx deploy/deploy_arango_volume.mts', 'Needs: ssh', 'DEPLOY_SSH_HOST (one host) or DEPLOY_SSH_HOSTS', 'DEPLOY_SSH_KNOWN_HOSTS', 'ARANGO_DATA_DIR (default /opt/arangodb_data)', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
  })
})

function through(socket: string) {
  return ['-S', socket, '-o', 'ControlMaster=no', '-o', 'ProxyCommand=false', '-o', 'BatchMode=yes']
}

function escapeRe(s: string) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
