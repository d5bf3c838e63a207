// deploy_valkey_volume.mts against a REAL OpenSSH server (test/sshd.ts). It shares its shape with
// deploy_arango_volume (whose test covers host trust and ssh configuration in depth): here, its own
// variable, default, volume name and block, one login per run, idempotence, refusals, dry-run.
import { execFileSync } from 'node:child_process'
import { existsSync, rmSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { parseHcl, sandbox, write, type Sandbox } from './helpers.ts'
import { ensureUsers, requireTools, spy, startSshd, userDir, USERS, type Sshd } from './sshd.ts'

const SCRIPT = 'deploy_valkey_volume.mts'
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
})
afterEach(() => {
  for (const b of bases.splice(0)) rmSync(b, { recursive: true, force: true })
})

async function run(env: Record<string, string | undefined> = {}, args: string[] = [], user: string = USERS.dash) {
  base = userDir(user)
  bases.push(base)
  const before = { accepted: sshd.accepted(), connections: sshd.connections() }
  const r = await sb.run(SCRIPT, args, { env: { ...sshd.env(user), VALKEY_DATA_DIR: `${base}/valkey_data`, ...env } })
  return { ...r, logins: sshd.accepted() - before.accepted, connections: sshd.connections() - before.connections }
}
const block = (dir: string) => `  client {
    host_volume "valkey_data" {
      path      = "${dir}"
      read_only = false
    }
  }
`

describe('deploy_valkey_volume', () => {
  it.each(Object.entries(USERS))('creates VALKEY_DATA_DIR with mode 755 over one login, prints the valkey_data block; a second run changes nothing (login shell %s)', async (_shell, user) => {
    const r = await run({}, [], user)
    const dir = `${base}/valkey_data`
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    expect((statSync(dir).mode & 0o7777).toString(8)).toBe('755')
    expect(r.logins).toBe(1)
    expect(r.stdout).toBe(`${dir} created on ${user}@127.0.0.1 with mode 755

Nomad 1.9.7 has no dynamic host volumes (1.10+): declare it by hand, once per client.
Add by hand to /etc/nomad.d/nomad.hcl on 127.0.0.1, inside its client block (no script does this):
${block(dir)}then restart Nomad on that server: sudo systemctl restart nomad

Useful commands:
  ssh -p ${sshd.port} -i ${sshd.key} -o UserKnownHostsFile=${sshd.knownHosts} ${user}@127.0.0.1 ls -ld ${dir}
  nomad node status -verbose <node-id>   ("Host Volumes" lists valkey_data once Nomad has restarted)
  npx tsx deploy/deploy_valkey.mts
`)
    const hcl = await parseHcl(write(sb.dir, 'client.hcl', block(dir)))
    expect(hcl.client[0].host_volume.valkey_data[0]).toEqual({ path: dir, read_only: false })

    const ctime = statSync(dir).ctimeMs
    const logins = sshd.accepted()
    const again = await sb.run(SCRIPT, [], { env: { ...sshd.env(user), VALKEY_DATA_DIR: dir } })
    expect(again.code).toBe(0)
    expect(again.stdout).toMatch(new RegExp(`^${dir} already exists on ${user}@127\\.0\\.0\\.1 with mode 755: nothing changed\n`))
    expect(statSync(dir).ctimeMs).toBe(ctime)
    expect(sshd.accepted() - logins).toBe(1)
    expect(ssh.argv().filter((a) => a.at(-1)!.includes('mkdir'))).toHaveLength(1) // the first run's only
  })

  it.each(['/opt/valkey data', '/opt/$(touch /tmp/pwned-valkey)', '/opt/`id`', "/opt/it's", '/opt/a;b', '/opt/*', '~/valkey', '-x', 'valkey_data'])(
    'refuses VALKEY_DATA_DIR=%j before any ssh call (exit 2)', async (value) => {
      const r = await run({ VALKEY_DATA_DIR: value })
      expect(r.code).toBe(2)
      expect(r.stderr).toContain(`VALKEY_DATA_DIR=${JSON.stringify(value)} m`)
      expect(r.connections).toBe(0)
      expect(ssh.argv()).toEqual([])
      expect(existsSync('/tmp/pwned-valkey')).toBe(false)
    })

  it('defaults to /opt/valkey_data; --dry-run connects to nothing and prints commands that work when pasted', async () => {
    const shown = await run({ VALKEY_DATA_DIR: undefined }, ['--dry-run'])
    expect(shown.code).toBe(0)
    expect(shown.stdout).toContain(`\nmkdir -p -- "$1" && chmod 755 -- "$1"\nREMOTE\n)\nssh_to "sh -c '$MAKE' sh /opt/valkey_data"\n`)
    expect(shown.connections).toBe(0)
    expect(ssh.argv()).toEqual([])

    const r = await run({}, ['--dry-run'])
    writeFileSync(path.join(sb.dir, 'plan.sh'), r.stdout)
    execFileSync('bash', ['-e', path.join(sb.dir, 'plan.sh')], { env: { PATH: process.env.PATH }, stdio: 'pipe' })
    expect(statSync(`${base}/valkey_data`).isDirectory()).toBe(true)
  })

  it('a changed host key fails before any remote command (exit 1)', async () => {
    const r = await run({ DEPLOY_SSH_KNOWN_HOSTS: sshd.changedKnownHosts })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('host key has CHANGED')
    expect(r.logins).toBe(0)
    expect(existsSync(`${base}/valkey_data`)).toBe(false)
  })

  it('--help names its variable and default', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_valkey_volume: create the Valkey data directory/)
    expect(r.stdout).toContain('VALKEY_DATA_DIR (default /opt/valkey_data)')
  })
})
