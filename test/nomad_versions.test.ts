// The Nomad versions teams run today (issue: "The Nomad and Vault that teams run today"): every Nomad
// script's main flow on a simulated 2.0.5 cluster with workload identity and on a 1.6 token cluster
// (and 1.10 / 1.9 where they differ), each mismatch refused before anything changes, and the
// fidelity cases the doubles now model (each names its source in test/stubs/nomad.mjs).
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, stageBinary, storefrontCheckout, type Sandbox } from './helpers.ts'

const VALKEY = path.join(root, 'jobs/valkey.nomad')
const IMAGE = 'registry.test:5000/cedra/storefront'
const TOKEN_VARS = '-var=vault_secret=secret/data/cedra/prod -var=vault_auth=token'
const IDENTITY_VARS = '-var=vault_secret=secret/data/cedra/prod -var=vault_auth=identity -var=vault_role=cedra-storefront'
let sb: Sandbox
let src: string
let commit: (message: string) => string

beforeEach(() => {
  sb = sandbox()
  stageBinary(sb) // the agent build deploy_binary records: what deploy_nomad deploys
  sb.stub('docker')
  ;({ src, commit } = storefrontCheckout(sb))
})

const storefrontEnv = (extra: Record<string, string | undefined> = {}) => ({ env: { STOREFRONT_SOURCE_DIR: src, STOREFRONT_IMAGE: IMAGE, ...extra } })
/** The nomad double, called as a test would by hand (to inspect what a script left). */
function nomad(...args: string[]) {
  return spawnSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
}
const jobText = (job: string) => sb.readState().jobs[job].versions.at(-1).text as string
const vaultOf = (job: string) => sb.readState().jobs[job].versions.at(-1).vault

describe.each([
  { version: '2.0.5', flow: 'identity', vars: IDENTITY_VARS },
  { version: '1.10.5', flow: 'identity', vars: IDENTITY_VARS },
  { version: '1.6.10', flow: 'token', vars: TOKEN_VARS },
])('Nomad $version: first installs and routine releases of both systems', ({ version, flow, vars }) => {
  beforeEach(() => sb.setState({ version }))

  it('every Nomad script says which Nomad it talks to; 1.6 is out of support, with a warning', async () => {
    const r = await sb.run('deploy_nomad.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain(`Nomad ${version} at http://127.0.0.1:4646, CLI ${version}`)
    expect(sb.commands('nomad', { probes: true }).slice(0, 2)).toEqual(['version', 'server members -json'])
    if (version.startsWith('1.6')) expect(r.stderr).toMatch(/warning: Nomad 1\.6\.10 is out of support \(versions before 1\.10\.0 are; 1\.10 is the last LTS, to 2027-04-30/)
    else expect(r.stderr).not.toContain('out of support')
  })

  it(`Valkey: the ${flow} flow reaches Vault (exactly one vault block in what Nomad got), the deployment succeeds`, async () => {
    const r = await sb.run('deploy_valkey.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad').find((c) => c.startsWith('job plan'))).toBe(`job plan ${vars} ${VALKEY}`)
    expect(r.stderr).toContain(flow === 'identity' ? '    Vault: workload identity, Vault role cedra-storefront' : '    Vault: legacy token flow, policy cedra-storefront')
    expect(vaultOf('valkey')).toEqual([flow === 'identity' ? { role: true, policies: false } : { role: false, policies: true }])
    expect(r.stdout).toMatch(/^valkey version 0: deployment [0-9a-f]{8} successful/m)
    if (flow === 'identity') expect(r.stdout).toContain('One-time Vault setup for workload identity')
    // Nothing of the operator's Vault or Consul tokens reached nomad.
    for (const c of sb.calls('nomad')) expect(c.env.VAULT_TOKEN).toBeUndefined()
  })

  it('storefront: first install, a new commit waits as a canary, promote, revert to the earlier release', async () => {
    let r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^cedra-storefront version 0: deployment [0-9a-f]{8} successful/m)
    commit('second')
    r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/canary healthy, deployment [0-9a-f]{8} waiting for promotion/)
    r = await sb.run('promote_storefront.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^cedra-storefront version 1: deployment [0-9a-f]{8} successful/m)
    // Back to version 0: not what the other instances run, so a canary again.
    r = await sb.run('revert_storefront.mts', ['0'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/cedra-storefront version 2: canary healthy/)
    expect(vaultOf('cedra-storefront')).toEqual([flow === 'identity' ? { role: true, policies: false } : { role: false, policies: true }])
    expect(jobText('cedra-storefront')).toMatch(/^\s+consul {}/m)
  })

  it('the Agent Economique: put_arangodb_password, deploy_arangodb and deploy_nomad', async () => {
    let r = await sb.run('put_arangodb_password.mts', [], { env: { ARANGO_ROOT_PASSWORD: 'a-long-enough-password-1234' } })
    expect(r.code, r.stderr).toBe(0)
    r = await sb.run('deploy_arangodb.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^arangodb-agent-economique version 0: deployment [0-9a-f]{8} successful/m)
    r = await sb.run('deploy_nomad.mts')
    expect(r.code, r.stderr).toBe(0)
    // Tags from 1.9 (command/job_tag_apply.go appears at v1.9.0), locks from 1.7 (command/var_lock.go
    // at v1.7.0): on 1.6.10 neither is called, each is said once, and the deploy still succeeds.
    const calls = sb.commands('nomad')
    const has16 = version === '1.6.10'
    expect(calls.filter((c) => c.startsWith('job tag apply')).length).toBe(has16 ? 0 : 2) // arangodb, agent
    expect(calls.filter((c) => c.startsWith('var lock')).length).toBe(has16 ? 0 : 2)
    if (has16) {
      expect(r.stderr).toContain('Nomad 1.6.10 has no version tags (1.9+)')
      expect(r.stderr).toContain('Nomad 1.6.10 has no variable locks (1.7+)')
    }
    const record = JSON.parse(sb.readState().vars['nomad/jobs/agent-economique/releases'].Items.history)
    expect(record[0]).toMatchObject({ version: 0, outcome: 'deployed', ...(has16 ? {} : { tag: expect.stringMatching(/^agent-[0-9a-f]{12}$/) }) })
    if (has16) expect(record[0].tag).toBeUndefined()
    r = await sb.run('deploy_nomad.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('agent-economique is already up to date')
  })
})

describe('Vault and Consul: every mismatch is a refusal before any build or run, naming the fix', () => {
  it('2.0 with DEPLOY_VAULT_AUTH=token (policies would be silently dropped): refused, no plan, no build', async () => {
    sb.setState({ version: '2.0.5' })
    const r = await sb.run('deploy_storefront.mts', [], storefrontEnv({ DEPLOY_VAULT_AUTH: 'token' }))
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/DEPLOY_VAULT_AUTH=token, but Nomad 2\.0\.5 has no token flow \(removed in 1\.10\.0/)
    expect(sb.commands('nomad')).toEqual([])
    expect(sb.calls('docker')).toEqual([])
  })

  it('2.0: a job that names no role gets no secret (the double fails its deployment): the kit always names one', async () => {
    sb.setState({ version: '2.0.5' })
    // What the kit sends: a role. By hand, the same job with the legacy block fails on 2.0.
    expect(nomad('job', 'run', '-detach', '-var=vault_auth=token', VALKEY).status).toBe(0)
    nomad('job', 'deployments', '-latest', '-json', 'valkey')
    const d = JSON.parse(nomad('job', 'deployments', '-latest', '-json', 'valkey').stdout)
    expect(d.Status).toBe('failed')
    const r = await sb.run('deploy_valkey.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^valkey version 1: deployment [0-9a-f]{8} successful/m)
  })

  it('2.0 with Consul ACLs: the storefront template reads Consul through the group\'s consul block', async () => {
    sb.setState({ version: '2.0.5', consulACL: true })
    const r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/deployment [0-9a-f]{8} successful/)
    // The double's rule, checked on a job without the block: it fails (#25298).
    const bare = path.join(sb.dir, 'bare.nomad')
    writeFileSync(bare, jobText('cedra-storefront').replace(/^\s+consul {}\n/m, '').replace('job "cedra-storefront"', 'job "bare"'))
    expect(nomad('job', 'run', '-detach', '-var=image_tag=abc', bare).status).toBe(0)
    nomad('job', 'deployments', '-latest', '-json', 'bare')
    expect(JSON.parse(nomad('job', 'deployments', '-latest', '-json', 'bare').stdout).Status).toBe('failed')
  })

  it('1.6 with DEPLOY_VAULT_AUTH=identity: refused (no workload identity before 1.7), nothing planned', async () => {
    sb.setState({ version: '1.6.10' })
    const r = await sb.run('deploy_valkey.mts', [], { env: { DEPLOY_VAULT_AUTH: 'identity' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/DEPLOY_VAULT_AUTH=identity, but Nomad 1\.6\.10 has no workload identity for Vault \(1\.7\+\)/)
    expect(sb.commands('nomad')).toEqual([])
  })

  it('a 1.6 CLI cannot parse vault { role } (the double refuses it as HCL2 does); against 1.10 servers the kit refuses first', async () => {
    sb.setState({ version: '1.6.10' })
    const parsed = nomad('job', 'validate', '-var=vault_auth=identity', VALKEY)
    expect(parsed.status).toBe(1)
    expect(parsed.stderr).toMatch(/Unsupported argument; An argument named "role" is not expected here\./)
    expect(nomad('job', 'validate', '-var=vault_auth=token', VALKEY).status).toBe(0)
    sb.setState({ version: '1.10.5', cliVersion: '1.6.10' })
    const r = await sb.run('deploy_valkey.mts')
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/the local nomad CLI is 1\.6\.10: it cannot parse vault \{ role \} \(1\.7\+\), and the servers run 1\.10\.5/)
    expect(r.stderr).toMatch(/warning: the local nomad CLI is 1\.6\.10 and the servers run 1\.10\.5/)
  })

  it('1.9 whose servers set vault.default_identity: the legacy policies would be ignored, refused with DEPLOY_VAULT_AUTH=identity as the fix', async () => {
    sb.setState({ version: '1.9.7', vaultDefaultIdentity: true })
    let r = await sb.run('deploy_valkey.mts')
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/uses workload identity for Vault .* would ignore the job's policies: set DEPLOY_VAULT_AUTH=identity/)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job run'))).toEqual([])
    r = await sb.run('deploy_valkey.mts', [], { env: { DEPLOY_VAULT_AUTH: 'identity' } })
    expect(r.code, r.stderr).toBe(0)
  })

  it('1.9 without workload identity and DEPLOY_VAULT_AUTH=identity: the plan\'s "empty list of policies" is refused with the fix', async () => {
    sb.setState({ version: '1.9.7' })
    const r = await sb.run('deploy_storefront.mts', [], storefrontEnv({ DEPLOY_VAULT_AUTH: 'identity' }))
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/has no Vault workload identity configured \(the servers' vault\.default_identity is not set\)/)
    expect(sb.calls('docker')).toEqual([])
  })

  it('1.6 with vault.allow_unauthenticated = false: refused at the plan, before the build; DEPLOY_VAULT_SUBMIT_TOKEN reaches nomad\'s environment only', async () => {
    sb.setState({ version: '1.6.10', vaultAllowUnauthenticated: false })
    let r = await sb.run('deploy_storefront.mts', [], storefrontEnv({ VAULT_TOKEN: 'operators-own-vault-token' }))
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/demands a Vault token from whoever submits the job \(vault\.allow_unauthenticated = false\): set DEPLOY_VAULT_SUBMIT_TOKEN/)
    expect(sb.calls('docker')).toEqual([])
    const submit = 'hvs.submitter-token-canary-77'
    const before = sb.calls('nomad').length
    r = await sb.run('deploy_storefront.mts', [], storefrontEnv({ DEPLOY_VAULT_SUBMIT_TOKEN: submit }))
    expect(r.code, r.stderr).toBe(0)
    const jobCalls = sb.calls('nomad').slice(before).filter((c) => c.argv[0] === 'job' && ['plan', 'run'].includes(c.argv[1]))
    expect(jobCalls.every((c) => c.env.VAULT_TOKEN === submit)).toBe(true)
    for (const c of sb.calls()) expect(c.argv.join(' ')).not.toContain(submit)
    expect(r.output).not.toContain(submit)
  })

  it('1.9 with consul.allow_unauthenticated = false: job run is refused after the -check-index check; explained, and DEPLOY_CONSUL_SUBMIT_TOKEN fixes it', async () => {
    sb.setState({ version: '1.9.7', consulAllowUnauthenticated: false })
    let r = await sb.run('deploy_valkey.mts')
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/demands a Consul token from whoever submits the job \(consul\.allow_unauthenticated = false\): set DEPLOY_CONSUL_SUBMIT_TOKEN.*Nomad registered nothing/)
    expect(sb.readState().jobs.valkey).toBeUndefined()
    r = await sb.run('deploy_valkey.mts', [], { env: { DEPLOY_CONSUL_SUBMIT_TOKEN: '11111111-2222-3333-4444-555555555555' } })
    expect(r.code, r.stderr).toBe(0)
    // The storefront warns BEFORE its build that nothing can reveal it earlier.
    r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    expect(r.stderr).toMatch(/note: Nomad 1\.9\.7 checks a submitter Consul token only at job run, after the build and push/)
    expect(r.code).toBe(1)
  })

  it('a token without node:read: the CLI\'s version stands in for the servers\', with a warning', async () => {
    sb.setState({ version: '2.0.5', nodeRead: false })
    const r = await sb.run('deploy_valkey.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/warning: could not read the servers' version \(nomad server members needs node:read\): assuming the CLI's, 2\.0\.5/)
    // The scripts that check their hosts' Nomad nodes need node:read: refused, naming it.
    const agent = await sb.run('deploy_nomad.mts')
    expect(agent.code).toBe(2)
    expect(agent.stderr).toMatch(/nomad node status: Nomad at .* refused the token \(403\).*the token needs node:read/)
  })
})

describe('fidelity: what the real CLI prints, and an operator environment that must not bend it', () => {
  it('STOREFRONT_AUTO_PROMOTE=true: the window between "canary healthy" and Nomad\'s own promotion is followed to "successful"', async () => {
    let r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    expect(r.code, r.stderr).toBe(0)
    commit('second')
    r = await sb.run('deploy_storefront.mts', [], storefrontEnv({ STOREFRONT_AUTO_PROMOTE: 'true' }))
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('Deployment is running pending automatic promotion')
    expect(r.stdout).toMatch(/^cedra-storefront version 1: deployment [0-9a-f]{8} successful/m)
    expect(r.output).not.toContain('waiting for promotion')
    // The CLI's JSON has no AutoPromote (api/deployments.go): the double prints none.
    const d = JSON.parse(nomad('job', 'deployments', '-latest', '-json', 'cedra-storefront').stdout)
    expect(Object.values(d.TaskGroups).some((g: any) => 'AutoPromote' in g)).toBe(false)
  })

  it('revert_storefront on a job that is not deployed: its own refusal (exit 2), from "No job(s) with prefix or ID"', async () => {
    const r = await sb.run('revert_storefront.mts', ['1'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('cedra-storefront is not deployed on http://127.0.0.1:4646: there is nothing to revert')
  })

  it('a revert to what the other instances run is in place: no canary, straight to successful', async () => {
    let r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    commit('second')
    r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    expect(r.stdout).toMatch(/waiting for promotion/)
    // Version 1 is a canary beside version 0's instances: going back to 0 updates in place.
    r = await sb.run('revert_storefront.mts', ['0'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^cedra-storefront version 2: deployment [0-9a-f]{8} successful/m)
  })

  it('a nested KV mount (team/kv): secrets written with -mount, and the jobs read team/kv/data/...', async () => {
    sb.stub('vault')
    sb.setState({ mounts: { 'team/kv/': 2 } }, 'vault')
    const env = { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'hvs.test-token', STOREFRONT_VAULT_PATH: 'team/kv/cedra/prod', REVALIDATE_SECRET: 'r'.repeat(20), SESSION_SECRET: 's'.repeat(20) }
    let r = await sb.run('put_storefront_secrets.mts', [], { env: { ...env, STOREFRONT_VAULT_MOUNT: 'team/kv' } })
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('vault')).toEqual(['kv get -format=json -mount=team/kv cedra/prod', 'kv put -format=json -cas=0 -mount=team/kv cedra/prod -'])
    expect(Object.keys(sb.readState('vault').secrets)).toEqual(['team/kv/data/cedra/prod'])
    r = await sb.run('deploy_valkey.mts', [], { env: { STOREFRONT_VAULT_PATH: 'team/kv/cedra/prod', STOREFRONT_VAULT_MOUNT: 'team/kv' } })
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job run')).at(-1)).toContain('-var=vault_secret=team/kv/data/cedra/prod ')
    // Without the mount named, the first segment is taken: Vault refuses it, and the message names STOREFRONT_VAULT_MOUNT.
    r = await sb.run('put_storefront_secrets.mts', [], { env })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('STOREFRONT_VAULT_MOUNT')
  })

  it('a non-default buildx builder (docker-container): --load puts the image where the push finds it', async () => {
    sb.setState({ builder: 'docker-container' }, 'docker')
    const r = await sb.run('deploy_storefront.mts', [], storefrontEnv())
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('docker').find((c) => c.startsWith('build '))).toContain('--load')
  })

  it('NOMAD_CLI_FORCE_COLOR, NOMAD_VAR_*, NOMAD_CLI_SHOW_HINTS: the plan is read as without them, and said', async () => {
    const env = { NOMAD_CLI_FORCE_COLOR: '1', NOMAD_VAR_binary_path: '/tmp/evil', NOMAD_CLI_SHOW_HINTS: 'true' }
    let r = await sb.run('deploy_nomad.mts', [], { env })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('warning: ignored: NOMAD_VAR_binary_path (the job parser would read it; the scripts pass every job variable themselves)')
    expect(r.output).not.toContain('\x1b[')
    expect(r.output).not.toContain('View this job in the Web UI')
    for (const c of sb.calls('nomad')) {
      expect(c.env.NOMAD_CLI_FORCE_COLOR).toBeUndefined()
      expect(c.env.NOMAD_VAR_binary_path).toBeUndefined()
    }
    r = await sb.run('deploy_nomad.mts', [], { env })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('agent-economique is already up to date')
  })

  it('NOMAD_SKIP_VERIFY and NOMAD_CAPATH are refused (they would undo the TLS checks)', async () => {
    const r = await sb.run('deploy_nomad.mts', [], { env: { NOMAD_SKIP_VERIFY: 'true', NOMAD_CAPATH: '/etc/ssl/certs' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/NOMAD_SKIP_VERIFY=true would turn off TLS verification/)
    expect(r.stderr).toMatch(/NOMAD_CAPATH is set: the kit trusts only the CA it checks, NOMAD_CACERT/)
    expect(sb.calls('nomad')).toEqual([])
  })
})
