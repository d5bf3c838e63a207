// Values arrive exactly as written or are refused, secrets reach only the children that need them,
// and every limit holds (the issue "Stop means stop", its values and limits). Each case ran wrong on
// the kit before: a value cut at #, a TAB or U+FFFD stored, NODE_DEBUG printing tokens, a timer that
// overflowed to 1 ms, a poll longer than the whole wait.
import { writeFileSync } from 'node:fs'
import { beforeEach, describe, expect, it } from 'vitest'
import { makeCerts, sandbox, type Sandbox } from './helpers.ts'

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})
const writeEnv = (text: string) => writeFileSync(sb.envFile, text)

describe('values arrive exactly as written, or are refused', () => {
  it('an unquoted # in the env file (dotenv would cut it, the shell would not) is refused with the variable named, never its value', async () => {
    writeEnv('ARANGO_ROOT_PASSWORD=Sup3r#Secret-long-pass\nAGENT_REMOTE_DIR=/srv/a#b\nNOMAD_NAMESPACE=default # a comment after a blank is one\n')
    const r = await sb.run('put_arangodb_password.mts')
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/ARANGO_ROOT_PASSWORD in .*test\.env holds an unquoted # \(dotenv would cut the value there, the shell would not\): quote the value, ARANGO_ROOT_PASSWORD='\.\.\.'/)
    expect(r.stderr).toContain('AGENT_REMOTE_DIR in')
    expect(r.stderr).not.toContain('NOMAD_NAMESPACE in')
    expect(r.output).not.toContain('Secret-long-pass')
    expect(r.output).not.toContain('Sup3r')
    expect(sb.calls('nomad')).toEqual([])
  })

  it('a quoted # is taken whole', async () => {
    writeEnv("ARANGO_ROOT_PASSWORD='Sup3r#Secret-long-pass'\n")
    const r = await sb.run('put_arangodb_password.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(sb.readState().vars['nomad/jobs/arangodb-agent-economique'].Items.root_password).toBe('Sup3r#Secret-long-pass')
  })

  it.each([
    ['a carriage return', 'pass\rword-long-enough', 'a carriage return (\\r)'],
    ['a TAB', 'pass\tword-long-enough', 'a TAB'],
    ['bytes that are not UTF-8', 'pass\uFFFDword-long-enough', 'bytes that are not UTF-8'],
  ])('a secret holding %s is refused, named, never shown', async (_what, value, said) => {
    const r = await sb.run('put_storefront_secrets.mts', [], { env: { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'hvs.t0ken', REVALIDATE_SECRET: value, SESSION_SECRET: 'session-secret-ok' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`REVALIDATE_SECRET holds ${said}: remove it`)
    expect(r.output).not.toContain('word-long-enough')
  })

  it('DOTENV_CONFIG_QUIET=false changes nothing: no dotenv tip on stdout', async () => {
    writeEnv('NOMAD_NAMESPACE=default\n')
    const r = await sb.run('deploy_nomad.mts', ['--dry-run'], { env: { DOTENV_CONFIG_QUIET: 'false' } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).not.toMatch(/dotenv|injecting env/i)
  })
})

describe('secrets reach only the children that need them', () => {
  it('NODE_DEBUG (Node would print every child\'s environment and input) is refused before any child', async () => {
    const r = await sb.run('put_arangodb_password.mts', [], { env: { NODE_DEBUG: 'child_process', ARANGO_ROOT_PASSWORD: 'debug-canary-pass-77', NOMAD_TOKEN: 'debug-canary-token-77' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('NODE_DEBUG=child_process makes Node print every command\'s environment and input on stderr (tokens and secrets): unset it')
    expect(r.output).not.toContain('debug-canary')
    expect(sb.calls()).toEqual([])
  })

  it('nomad gets NOMAD_TOKEN and no other secret; vault gets VAULT_TOKEN and no other; docker gets none', async () => {
    const secrets = { REGISTRY_PASSWORD: 'reg-canary-1', ARANGO_ROOT_PASSWORD: 'arango-canary-1', VAULT_TOKEN: 'vault-canary-1', NOMAD_TOKEN: 'nomad-canary-1', CONSUL_HTTP_TOKEN: 'consul-canary-1' }
    sb.stub('vault')
    let r = await sb.run('put_storefront_secrets.mts', [], { env: { ...secrets, VAULT_ADDR: 'http://127.0.0.1:8200', REVALIDATE_SECRET: 'revalidate-canary-1', SESSION_SECRET: 'session-canary-1' } })
    expect(r.code, r.stderr).toBe(0)
    for (const c of sb.calls('vault')) expect(Object.keys(c.env).filter((k) => k in secrets)).toEqual(['VAULT_TOKEN'])
    r = await sb.run('put_arangodb_password.mts', [], { env: secrets })
    expect(r.code, r.stderr).toBe(0)
    for (const c of sb.calls('nomad')) expect(Object.keys(c.env).filter((k) => k in secrets)).toEqual(['NOMAD_TOKEN'])
  })
})

describe('limits that hold', () => {
  it('DEPLOY_COMMAND_TIMEOUT past what a timer holds (2147483 s) is refused, not turned into 1 ms', async () => {
    const r = await sb.run('deploy_nomad.mts', [], { env: { DEPLOY_COMMAND_TIMEOUT: '3000000' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('DEPLOY_COMMAND_TIMEOUT=3000000 is more than 2147483 seconds (24 days), the longest wait a timer can hold')
    expect(sb.calls()).toEqual([])
  })

  it('DEPLOY_POLL_SECONDS longer than --timeout is refused (it would report "still running" at its first look)', async () => {
    const r = await sb.run('deploy_nomad.mts', ['--timeout', '600'], { env: { DEPLOY_POLL_SECONDS: '900' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('DEPLOY_POLL_SECONDS=900 is longer than the --timeout of 600s: poll more often, or wait longer')
  })
})

describe('valid configurations are not refused', () => {
  const https = { NOMAD_ADDR: 'https://nomad.example.internal:4646', NOMAD_TOKEN: 'test-token-0001' }

  it('a client certificate sent with its intermediate is accepted; without it, it is not issued by the CA', async () => {
    const c = makeCerts(sb.dir)
    let r = await sb.run('deploy_nomad.mts', ['--dry-run'], { env: { ...https, NOMAD_CACERT: c.ca, NOMAD_CLIENT_CERT: c.leafChain, NOMAD_CLIENT_KEY: c.leafKey } })
    expect(r.code, r.stderr).toBe(0)
    r = await sb.run('deploy_nomad.mts', ['--dry-run'], { env: { ...https, NOMAD_CACERT: c.ca, NOMAD_CLIENT_CERT: c.leafAlone, NOMAD_CLIENT_KEY: c.leafKey } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/NOMAD_CLIENT_CERT \(.*leaf\.pem\) was not issued by NOMAD_CACERT/)
  })

  it('a CA bundle with one expired certificate beside a valid one (a rotation) is a warning, not a refusal', async () => {
    const c = makeCerts(sb.dir)
    const r = await sb.run('deploy_nomad.mts', ['--dry-run'], { env: { ...https, NOMAD_CACERT: c.rotatingBundle, NOMAD_CLIENT_CERT: c.cert, NOMAD_CLIENT_KEY: c.key } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/warning: NOMAD_CACERT \(.*bundle-rotating\.pem\) holds .*CN=client.*, which expired on .*, beside valid ones: remove it once the rotation is over/)
  })

  it('an encrypted client key is named as such, with how to decrypt it', async () => {
    const c = makeCerts(sb.dir)
    const r = await sb.run('deploy_nomad.mts', ['--dry-run'], { env: { ...https, NOMAD_CACERT: c.ca, NOMAD_CLIENT_CERT: c.cert, NOMAD_CLIENT_KEY: c.encryptedKey } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('is encrypted with a passphrase, which the nomad CLI cannot ask for: decrypt a copy')
  })

  it('DEPLOY_SSH_HOST=::1 (an IPv6 address) is accepted; -oProxyCommand=… still is not', async () => {
    let r = await sb.run('deploy_arango_volume.mts', ['--dry-run'], { env: { DEPLOY_SSH_HOST: '::1' } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(' -- ::1 ')
    r = await sb.run('deploy_arango_volume.mts', ['--dry-run'], { env: { DEPLOY_SSH_HOST: '-oProxyCommand=id' } })
    expect(r.code).toBe(2)
  })
})
