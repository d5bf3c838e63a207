// put_storefront_secrets.mts, run as a user runs it, against the stateful vault test double; the
// hidden prompt is driven through a real pseudo-terminal (util-linux `script`). Also the double's
// own fidelity to the vault CLI on the points the script relies on.
import { spawn, spawnSync } from 'node:child_process'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { makeCerts, root, sandbox, write, type Result, type Sandbox } from './helpers.ts'

const SCRIPT = 'put_storefront_secrets.mts'
const API = 'secret/data/cedra/prod'
const TOKEN = 'canary-vault-token-7001'
const NOMAD_TOKEN = 'canary-nomad-token-7002'
const REVALIDATE = 'canary-revalidate-7003'
const SESSION = 'canary-session-7004'
const env = (extra: Record<string, string | undefined> = {}) => ({
  VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: TOKEN, NOMAD_TOKEN, REVALIDATE_SECRET: REVALIDATE, SESSION_SECRET: SESSION, ...extra,
})
const GET = 'kv get -format=json -mount=secret cedra/prod'
const put = (cas: number) => `kv put -format=json -cas=${cas} -mount=secret cedra/prod -`

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
  sb.stub('vault')
})

type Version = { data: Record<string, unknown>; by?: string }
const versions = (p = API): Version[] => sb.readState('vault').secrets?.[p]?.versions ?? []
const latest = (p = API) => versions(p).at(-1)?.data ?? {}
function seed(...datas: Record<string, unknown>[]) {
  sb.setState({ secrets: { [API]: { versions: datas.map((data) => ({ data, created_time: '2024-01-01T00:00:00Z' })) } } }, 'vault')
}

/** No secret in any child's argv, nor in the output; nothing was even about to be printed (no [REDACTED]). */
function expectNoLeak(r: Result, secrets: string[]) {
  expect(secrets.every((s) => s.length >= 8)).toBe(true)
  for (const call of sb.calls()) for (const s of secrets) expect(call.argv.join(' ')).not.toContain(s)
  for (const s of secrets) expect(r.output).not.toContain(s)
  expect(r.output).not.toContain('REDACTED')
}

describe('put_storefront_secrets: the main path', () => {
  it('writes the three keys to a new path: read, then put -cas=0 with the values as JSON on stdin only', async () => {
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    expect(sb.commands('vault')).toEqual([GET, put(0)])
    const stored = latest()
    expect(stored).toEqual({ revalidate_secret: REVALIDATE, session_secret: SESSION, valkey_password: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) })
    expect(JSON.parse(sb.calls('vault')[1].stdin!)).toEqual(stored)
    expect(r.stdout).toContain('secret/cedra/prod: version 1 written: revalidate_secret (new, from REVALIDATE_SECRET), session_secret (new, from SESSION_SECRET), valkey_password (new, generated)')
    expectNoLeak(r, [TOKEN, NOMAD_TOKEN, REVALIDATE, SESSION, stored.valkey_password as string])
  })

  it('hands vault VAULT_* only: never NOMAD_TOKEN, nor the secrets\' own variables', async () => {
    const r = await sb.run(SCRIPT, [], { env: env({ CONSUL_HTTP_TOKEN: 'canary-consul-7005' }) })
    expect(r.code).toBe(0)
    for (const call of sb.calls('vault')) {
      expect(call.env).toEqual({ VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: TOKEN })
    }
  })

  it('keeps every other key stored there, and checks-and-sets against the version it read', async () => {
    seed({ db_url: 'postgres://old' }, { db_url: 'postgres://x', feature_flags: { a: true }, revalidate_secret: 'old-revalidate-0001', valkey_password: 'stored-valkey-password-0002' })
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.code).toBe(0)
    expect(sb.commands('vault')).toEqual([GET, put(2)])
    expect(versions()).toHaveLength(3)
    expect(latest()).toEqual({ db_url: 'postgres://x', feature_flags: { a: true }, revalidate_secret: REVALIDATE, session_secret: SESSION, valkey_password: 'stored-valkey-password-0002' })
    expect(r.stdout).toContain('version 3 written: revalidate_secret (changed, from REVALIDATE_SECRET), session_secret (new, from SESSION_SECRET); other keys kept: db_url, feature_flags')
    expectNoLeak(r, [REVALIDATE, SESSION, 'old-revalidate-0001', 'stored-valkey-password-0002'])
  })

  it('a second run with the same inputs writes nothing and says so (no new version)', async () => {
    expect((await sb.run(SCRIPT, [], { env: env() })).code).toBe(0)
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('secret/cedra/prod is unchanged: version 1 already holds these values; nothing was written')
    expect(sb.commands('vault')).toEqual([GET, put(0), GET])
    expect(versions()).toHaveLength(1)
  })

  it('keeps the stored values when no variable is set, even without a terminal', async () => {
    seed({ revalidate_secret: 'stored-revalidate-01', session_secret: 'stored-session-0002', valkey_password: 'stored-valkey-password-03' })
    const r = await sb.run(SCRIPT, [], { env: env({ REVALIDATE_SECRET: undefined, SESSION_SECRET: undefined }) })
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('is unchanged')
    expect(sb.commands('vault')).toEqual([GET])
  })

  it('a new VALKEY_PASSWORD writes a new version and says that Valkey and the storefront restart', async () => {
    seed({ revalidate_secret: REVALIDATE, session_secret: SESSION, valkey_password: 'stored-valkey-password-03' })
    const r = await sb.run(SCRIPT, [], { env: env({ VALKEY_PASSWORD: 'canary-new-valkey-pw-7006' }) })
    expect(r.code).toBe(0)
    expect(sb.commands('vault')).toEqual([GET, put(1)])
    expect(latest().valkey_password).toBe('canary-new-valkey-pw-7006')
    expect(r.stdout).toContain('version 2 written: valkey_password (changed, from VALKEY_PASSWORD)')
    expect(r.stdout).toContain('valkey_password changed: Nomad re-renders the Valkey and storefront templates and restarts those tasks')
    expect(r.stdout).toContain('vault kv rollback -version=1 -mount=secret cedra/prod')
    expectNoLeak(r, ['canary-new-valkey-pw-7006', 'stored-valkey-password-03'])
  })

  it('stops with exit 1 when someone wrote between its read and its write: nothing overwritten', async () => {
    seed({ db_url: 'postgres://x' })
    sb.setState({ raceAfterGet: { rotated_elsewhere: 'by-another-writer' } }, 'vault')
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.code).toBe(1)
    expect(sb.commands('vault')).toEqual([GET, put(1)])
    expect(r.stderr).toContain('secret/cedra/prod changed in Vault since it was read (version 1): nothing was overwritten; run again to merge into the new version')
    expect(versions()).toHaveLength(2)
    expect(versions()[1]).toMatchObject({ by: 'someone-else', data: { db_url: 'postgres://x', rotated_elsewhere: 'by-another-writer' } })
    expectNoLeak(r, [REVALIDATE, SESSION])
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })

  it('writes to STOREFRONT_VAULT_PATH in another mount', async () => {
    sb.setState({ mounts: { 'secret/': 2, 'kv/': 2 } }, 'vault')
    const r = await sb.run(SCRIPT, [], { env: env({ STOREFRONT_VAULT_PATH: 'kv/cedra/staging' }) })
    expect(r.code).toBe(0)
    expect(sb.commands('vault')).toEqual(['kv get -format=json -mount=kv cedra/staging', 'kv put -format=json -cas=0 -mount=kv cedra/staging -'])
    expect(Object.keys(latest('kv/data/cedra/staging'))).toEqual(['revalidate_secret', 'session_secret', 'valkey_password'])
  })

  it.each([
    ['nothing stored', undefined],
    ['a secret stored', { revalidate_secret: 'x' }],
  ])('refuses a KV version 1 mount (%s): exit 2, nothing written', async (_name, stored) => {
    sb.setState({ mounts: { 'secret/': 1 }, ...(stored ? { secrets: { 'secret/cedra/prod': { versions: [{ data: stored }] } } } : {}) }, 'vault')
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/secret\/cedra\/prod is not in a KV version 2 mount .*: this script needs KV v2/)
    expect(sb.commands('vault')).toEqual([GET])
  })
})

describe('put_storefront_secrets: values without a terminal, and the hidden prompt at one', () => {
  it('without a terminal, refuses the values neither set nor stored, naming each variable (exit 2, nothing written)', async () => {
    const r = await sb.run(SCRIPT, [], { env: env({ REVALIDATE_SECRET: undefined, SESSION_SECRET: undefined }) })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('refused (nothing was changed):')
    expect(r.stderr).toContain('REVALIDATE_SECRET is not set and secret/cedra/prod holds no revalidate_secret: set it (from your secret store), or run at a terminal to be prompted')
    expect(r.stderr).toContain('SESSION_SECRET is not set and secret/cedra/prod holds no session_secret')
    expect(r.stderr).not.toContain('VALKEY_PASSWORD') // generated, never refused
    expect(sb.commands('vault')).toEqual([GET])
    expect(versions()).toHaveLength(0)
  })

  it('at a terminal, asks with a hidden prompt: nothing typed is echoed, the typed values are stored', async () => {
    const typed = { revalidate: 'typed-canary-revalidate-7007', session: 'typed-canary-session-7008' }
    const t = await runInTerminal(sb, [
      ['revalidate_secret for secret/cedra/prod: ', `${typed.revalidate}\r`],
      ['session_secret for secret/cedra/prod: ', `${typed.session.slice(0, 16)}X\x7f${typed.session.slice(16)}\r`], // a typo, erased
      ['valkey_password for secret/cedra/prod (empty: generate one): ', '\r'],
    ], env({ REVALIDATE_SECRET: undefined, SESSION_SECRET: undefined }))
    expect(t.code).toBe(0)
    expect(t.asked).toBe(3)
    expect(latest()).toEqual({ revalidate_secret: typed.revalidate, session_secret: typed.session, valkey_password: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) })
    for (const s of [typed.revalidate, typed.session, typed.session.slice(0, 16), latest().valkey_password as string]) expect(t.transcript).not.toContain(s)
    expect(t.transcript).toContain('version 1 written: revalidate_secret (new, typed), session_secret (new, typed), valkey_password (new, generated)')
    expect(sb.commands('vault')).toEqual([GET, put(0)])
  })

  it('Ctrl-C at the prompt stops with 130 and writes nothing', async () => {
    const t = await runInTerminal(sb, [['revalidate_secret for secret/cedra/prod: ', 'half-typed\x03']], env({ REVALIDATE_SECRET: undefined }))
    expect(t.code).toBe(130)
    expect(t.transcript).toContain('interrupted by SIGINT')
    expect(t.transcript).not.toContain('half-typed')
    expect(sb.commands('vault')).toEqual([GET])
  })
})

describe('put_storefront_secrets: flags and configuration', () => {
  it('--help prints the header: purpose, usage, tools, variables, exit codes', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^put_storefront_secrets: store the CEDRA storefront's secrets in Vault KV v2/)
    for (const s of ['Usage: npx tsx deploy/put_storefront_secrets.mts', 'Needs: vault CLI', 'VAULT_ADDR', 'VAULT_TOKEN', 'VAULT_CACERT',
      'STOREFRONT_VAULT_PATH (default secret/cedra/prod', 'REVALIDATE_SECRET', 'SESSION_SECRET', 'VALKEY_PASSWORD', '--dry-run', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
    expect(sb.calls()).toEqual([])
  })

  it('--dry-run runs nothing at all and prints the commands with $NAME references, even without vault', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run'], { env: env({ PATH: sb.pathWithout('vault'), VALKEY_PASSWORD: 'canary-valkey-pw-70090' }) })
    expect(r.code).toBe(0)
    expect(sb.calls()).toEqual([])
    expect(r.stderr).toContain('warning: a real run would refuse: vault not found on PATH')
    expect(r.stdout).toContain('export VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN="$VAULT_TOKEN"')
    expect(r.stdout).toContain('\nvault kv get -format=json -mount=secret cedra/prod\n')
    expect(r.stdout).toContain('vault kv put -format=json -cas="$VERSION_READ" -mount=secret cedra/prod - <<<"$DATA_READ_WITH_NEW_VALUES_AS_JSON"')
    expectNoLeak(r, [TOKEN, NOMAD_TOKEN, REVALIDATE, SESSION, 'canary-valkey-pw-70090'])
  })

  it('refuses without vault on PATH (exit 2, says how to install it)', async () => {
    const r = await sb.run(SCRIPT, [], { env: env({ PATH: sb.pathWithout('vault') }) })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/vault not found on PATH \(install the Vault CLI/)
    expect(sb.calls()).toEqual([])
  })

  it('reports ALL missing and invalid variables in one message, before any vault call', async () => {
    const r = await sb.run(SCRIPT, [], {
      env: env({ VAULT_ADDR: undefined, VAULT_TOKEN: undefined, STOREFRONT_VAULT_PATH: 'secret/data/cedra/prod', VALKEY_PASSWORD: 'short;pw', SESSION_SECRET: '' }),
    })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('refused (nothing was changed):')
    expect(r.stderr).toContain('VAULT_ADDR is not set')
    expect(r.stderr).toContain('VAULT_TOKEN is not set')
    expect(r.stderr).toContain('STOREFRONT_VAULT_PATH="secret/data/cedra/prod": give the path as the vault CLI takes it, without /data/')
    expect(r.stderr).toContain("VALKEY_PASSWORD must be at least 16 characters of A-Z a-z 0-9 . _ ~ - (it goes into Valkey's config file and a redis:// URL)")
    expect(r.stderr).toContain('SESSION_SECRET is empty')
    expect(r.stderr).not.toContain('short;pw')
    expect(sb.calls()).toEqual([])
  })

  it.each([
    ['a path with shell characters', 'secret/cedra;prod', /STOREFRONT_VAULT_PATH="secret\/cedra;prod" must be <mount>\/<path>/],
    ['a path that starts with -', '-mount=x/y', /must be <mount>\/<path>/],
    ['a path with ..', 'secret/../prod', /must not contain \. or \.\. segments/],
    ['a VAULT_ADDR that is no URL', undefined, /VAULT_ADDR=vault:8200 must start with https:\/\/ or http:\/\//],
  ])('refuses %s (exit 2, no vault call)', async (_name, p, message) => {
    const r = await sb.run(SCRIPT, [], { env: env(p ? { STOREFRONT_VAULT_PATH: p } : { VAULT_ADDR: 'vault:8200' }) })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(sb.calls()).toEqual([])
  })

  it('hands vault VAULT_CACERT resolved against the repository root, after checking it parses as PEM', async () => {
    const certs = makeCerts(sb.dir)
    sb.setState({ requireCa: true }, 'vault')
    const r = await sb.run(SCRIPT, [], { env: env({ VAULT_ADDR: 'https://vault.test:8200', VAULT_CACERT: path.relative(root, certs.ca) }) })
    expect(r.code).toBe(0)
    for (const call of sb.calls('vault')) expect(call.env.VAULT_CACERT).toBe(certs.ca)
  })

  it.each([
    ['a CA that is not PEM', (c: ReturnType<typeof makeCerts>) => ({ VAULT_CACERT: c.notPem }), /VAULT_CACERT \(.*not-pem\.pem\) is not a PEM certificate/],
    ['an expired CA', (c: ReturnType<typeof makeCerts>) => ({ VAULT_CACERT: c.expired }), /VAULT_CACERT \(.*expired\.pem\) expired on Jan {2}1 00:00:00 2021 GMT/],
    ['a CA that does not exist', () => ({ VAULT_CACERT: 'certs/nope-vault-ca.pem' }), /VAULT_CACERT: .*\/certs\/nope-vault-ca\.pem does not exist/],
    ['a CA with an http:// address', (c: ReturnType<typeof makeCerts>) => ({ VAULT_CACERT: c.ca, VAULT_ADDR: 'http://vault.test:8200' }), /VAULT_ADDR is http:\/\/ but VAULT_CACERT is set/],
  ])('refuses %s (exit 2, vault never called)', async (_name, files, message) => {
    const certs = makeCerts(sb.dir)
    const r = await sb.run(SCRIPT, [], { env: env({ VAULT_ADDR: 'https://vault.test:8200', ...files(certs) }) })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(sb.calls()).toEqual([])
  })
})

describe('put_storefront_secrets: a Vault that refuses or cannot be reached', () => {
  // The read comes before the point of no return and changes nothing, so a refused token is a
  // refusal (exit 2), like deploy_nomad's refused plan. A refused WRITE comes after it: a step failed (1).
  it('a refused token stops at the read with exit 2 and says which variable to fix', async () => {
    sb.setState({ token: 'the-only-accepted-token' }, 'vault')
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('Vault at http://127.0.0.1:8200 refused the token (403): check VAULT_TOKEN and that its policy allows read, create and update on secret/data/cedra/prod, and that secret is the KV mount (STOREFRONT_VAULT_MOUNT; a nested mount such as team/kv must be named) (permission denied)')
    expect(sb.commands('vault')).toEqual([GET])
    expectNoLeak(r, [TOKEN, REVALIDATE, SESSION])
  })

  it('a token that may read but not write fails at the write with exit 1, nothing changed', async () => {
    seed({ db_url: 'postgres://x' })
    sb.setState({ mode: 'readonly' }, 'vault')
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.code).toBe(1)
    expect(sb.commands('vault')).toEqual([GET, put(1)])
    expect(r.stderr).toMatch(/✗ Write version 2 of secret\/cedra\/prod .* failed: vault kv put secret\/cedra\/prod: Vault at .* refused the token \(403\)/)
    expect(versions()).toHaveLength(1)
  })

  it('an unreachable Vault stops at the read with exit 1, a connection problem, no stack trace', async () => {
    sb.setState({ mode: 'unreachable' }, 'vault')
    const r = await sb.run(SCRIPT, [], { env: env() })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cannot reach Vault at http:\/\/127\.0\.0\.1:8200: a connection problem \(Get ".*": dial tcp .* connection refused\)/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    expect(sb.commands('vault')).toEqual([GET])
  })
})

// ---------------------------------------------------------------------------------------------
// The double itself: the vault CLI behaviours the script depends on.

describe('the vault test double behaves like the vault CLI', () => {
  const STUB = path.join(root, 'test/stubs/vault.mjs')
  const vault = (args: string[], opts: { input?: string; token?: string | null } = {}) => {
    const e: Record<string, string> = { STUB_STATE: sb.state, HOME: sb.home, PATH: process.env.PATH! }
    if (opts.token !== null) e.VAULT_TOKEN = opts.token ?? 't0k3n'
    const r = spawnSync(process.execPath, [STUB, ...args], { env: e, input: opts.input ?? '', encoding: 'utf8' })
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }

  it('kv get: exit 2 and "No value found at" the API path when nothing is stored; the KV v2 JSON shape when it is', () => {
    expect(vault(['kv', 'get', 'secret/cedra/prod'])).toMatchObject({ code: 2, stderr: 'No value found at secret/data/cedra/prod\n' })
    expect(vault(['kv', 'put', 'secret/cedra/prod', 'a=1']).code).toBe(0)
    const got = JSON.parse(vault(['kv', 'get', '-format=json', 'secret/cedra/prod']).stdout)
    expect(got).toMatchObject({ lease_id: '', lease_duration: 0, renewable: false, warnings: null,
      data: { data: { a: '1' }, metadata: { custom_metadata: null, deletion_time: '', destroyed: false, version: 1 } } })
    expect(vault(['kv', 'get', '-field=a', '-mount=secret', 'cedra/prod'])).toMatchObject({ code: 0, stdout: '1' })
    expect(vault(['kv', 'get', '-field=b', 'secret/cedra/prod'])).toMatchObject({ code: 1, stderr: 'Field "b" not present in secret\n' })
  })

  it('flags go before the path: after it, a flag is data (or not key=value); an unknown flag exits 1', () => {
    expect(vault(['kv', 'put', 'secret/x', '-cas=5']).code).toBe(0)
    expect(JSON.parse(vault(['kv', 'get', '-format=json', 'secret/x']).stdout).data.data).toEqual({ '-cas': '5' })
    expect(vault(['kv', 'put', 'secret/x', 'a=1', '-format'])).toMatchObject({ code: 1, stderr: 'Failed to parse K=V data: invalid key/value pair "-format": format must be key=value\n' })
    expect(vault(['kv', 'put', '-nope', 'secret/x', 'a=1'])).toMatchObject({ code: 1, stderr: 'flag provided but not defined: -nope\n' })
    expect(vault(['kv', 'put', 'secret/x'])).toMatchObject({ code: 1, stderr: 'Must supply data\n' })
  })

  it('put replaces the whole secret; patch merges; -cas must name the current version (exit 2)', () => {
    expect(vault(['kv', 'put', 'secret/x', 'a=1', 'b=2']).code).toBe(0)
    expect(vault(['kv', 'patch', 'secret/x', '-'], { input: '{"b":"3","c":"4"}' }).code).toBe(0)
    expect(JSON.parse(vault(['kv', 'get', '-format=json', 'secret/x']).stdout).data.data).toEqual({ a: '1', b: '3', c: '4' })
    expect(vault(['kv', 'put', '-cas=2', 'secret/x', 'd=-'], { input: 'line\n' }).code).toBe(0)
    expect(JSON.parse(vault(['kv', 'get', '-format=json', 'secret/x']).stdout).data).toMatchObject({ data: { d: 'line\n' }, metadata: { version: 3 } })
    const stale = vault(['kv', 'put', '-cas=2', 'secret/x', 'e=5'])
    expect(stale.code).toBe(2)
    expect(stale.stderr).toBe('Error writing data to secret/data/x: Error making API request.\n\nURL: PUT https://127.0.0.1:8200/v1/secret/data/x\nCode: 400. Errors:\n\n* check-and-set parameter did not match the current version\n')
    expect(vault(['kv', 'put', '-cas=0', 'secret/x', 'e=5']).code).toBe(2) // cas=0 only creates
    expect(vault(['kv', 'patch', '-cas=1', 'secret/x', 'e=5']).code).toBe(2)
  })

  it('patch on a missing path fails with the API\'s 404 (exit 2)', () => {
    const r = vault(['kv', 'patch', 'secret/none', 'a=1'])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/^Error writing data to secret\/data\/none: Error making API request\.\n\nURL: PATCH .*\nCode: 404\. Errors:/)
  })

  it('no VAULT_TOKEN and no ~/.vault-token: permission denied (exit 2); ~/.vault-token is used when present', () => {
    const r = vault(['kv', 'get', 'secret/x'], { token: null })
    expect(r.code).toBe(2)
    expect(r.stderr).toBe('Error making API request.\n\nURL: GET https://127.0.0.1:8200/v1/sys/internal/ui/mounts/secret/x\nCode: 403. Errors:\n\n* permission denied\n')
    write(sb.home, '.vault-token', 'from-file\n')
    sb.setState({ token: 'from-file' }, 'vault')
    expect(vault(['kv', 'get', 'secret/x'], { token: null }).stderr).toBe('No value found at secret/data/x\n')
    expect(vault(['kv', 'get', 'secret/x'], { token: 'other' }).code).toBe(2)
  })
})

// ---------------------------------------------------------------------------------------------

/**
 * Run the script in a real pseudo-terminal (util-linux `script`), answering each prompt only once it
 * is shown (raw mode is on by then, so the terminal itself would echo anything typed too early).
 */
function runInTerminal(sb: Sandbox, answers: [string, string][], extra: Record<string, string | undefined>) {
  const tsx = path.join(root, 'node_modules/tsx/dist/esm/index.mjs')
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
  const command = [process.execPath, '--import', tsx, path.join(root, 'deploy', SCRIPT), '--env-file', sb.envFile].map(q).join(' ')
  const e: Record<string, string> = { PATH: `${sb.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin`, HOME: sb.home, LANG: 'C.UTF-8', STUB_STATE: sb.state, SHELL: '/bin/sh', TERM: 'dumb' }
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) e[k] = v
  return new Promise<{ code: number | null; transcript: string; asked: number }>((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { cwd: sb.dir, env: e, stdio: ['pipe', 'pipe', 'pipe'] })
    let transcript = ''
    let asked = 0
    let seen = 0
    child.stdout.on('data', (d) => {
      transcript += d
      const next = answers[asked]
      const at = next ? transcript.indexOf(next[0], seen) : -1
      if (next && at >= 0) {
        seen = at + next[0].length
        asked++
        child.stdin.write(next[1])
      }
    })
    child.stderr.on('data', (d) => (transcript += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, transcript, asked })
    })
  })
}
