// --json (the issue "Operable from a merge request, a CI job and cron"): every script ends with ONE
// JSON object on stdout, whatever the way out, in the documented shape (deploy/lib/result.schema.json,
// checked by Ajv); the human lines go to stderr; "canary waiting" is told apart from "deployed".
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, root, sandbox, stageBinary, storefrontCheckout, type Sandbox } from './helpers.ts'

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
  stageBinary(sb) // the agent build deploy_binary records: what deploy_nomad deploys
  sb.stub('vault')
  sb.stub('docker')
})
const SCRIPTS = readdirSync(path.join(root, 'deploy')).filter((f) => f.endsWith('.mts')).sort()
const storefrontEnv = (src: string) => ({ STOREFRONT_SOURCE_DIR: src, STOREFRONT_IMAGE: 'registry.example.com/cedra/storefront' })

describe('one JSON object on stdout, for every script', () => {
  it('covers every script of deploy/ (a new script gets --json too)', () => {
    expect(SCRIPTS).toContain('status.mts')
    expect(SCRIPTS.length).toBe(13)
  })

  it.each(SCRIPTS)('%s --dry-run --json: outcome dry-run, exit 0, the commands on stderr', async (script) => {
    const r = await sb.run(script, ['--dry-run', '--json'], { env: { DEPLOY_SSH_HOST: 'node1.example.internal', VAULT_ADDR: 'http://127.0.0.1:8200', STOREFRONT_IMAGE: 'registry.example.com/cedra/storefront' } })
    expect(r.code, r.stderr).toBe(0)
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ schema: 'nomad-deploy-kit/result/v1', script: script.replace('.mts', ''), outcome: 'dry-run', exitCode: 0 })
    expect(r.stderr).toMatch(/^(export |ssh |# |BUILD=)/m)
  })

  it.each(SCRIPTS)('%s --json with an unknown flag: outcome refused, exit 2, every problem listed', async (script) => {
    const r = await sb.run(script, ['--json', '--no-such-flag'])
    expect(r.code).toBe(2)
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'refused', exitCode: 2 })
    expect(result.problems[0]).toContain("Unknown option '--no-such-flag'")
    expect(result.message).toMatch(/^refused \(nothing was changed\): usage: Unknown option/)
    expect(r.stderr).toContain('refused (nothing was changed)')
  })

  it('without --json stdout holds the human report, and no JSON', async () => {
    const r = await sb.run('deploy_nomad.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('agent-economique version 0: deployment')
    expect(r.stdout).not.toContain('"schema"')
  })

  it('--help --json prints the help alone (a help is not a run)', async () => {
    const r = await sb.run('deploy_nomad.mts', ['--help', '--json'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_nomad:/)
    expect(r.stdout).not.toContain('"schema"')
  })
})

describe('deploys: job, version, deployment, image and commit, and the outcome told apart', () => {
  it('deploy_nomad --json: deployed, with the job, version, deployment and the Nomad versions; then unchanged', async () => {
    let r = await sb.run('deploy_nomad.mts', ['--json'])
    expect(r.code, r.stderr).toBe(0)
    let result = await jsonResult(r.stdout)
    const deployment = sb.readState().jobs['agent-economique'].deployments[0].ID
    expect(result).toMatchObject({ outcome: 'deployed', exitCode: 0, job: 'agent-economique', version: 0, deployment, acted: true, nomad: { address: 'http://127.0.0.1:4646', server: '2.0.5', cli: '2.0.5' } })
    expect(result.message).toMatch(/^agent-economique version 0: deployment [0-9a-f]{8} successful/)
    expect(r.stderr).toContain('Useful commands:')
    r = await sb.run('deploy_nomad.mts', ['--json'])
    result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'unchanged', exitCode: 0, job: 'agent-economique' })
    expect(result.acted).toBeUndefined()
  })

  it('deploy_storefront --json: deployed, then canary-waiting (both exit 0) with the promote and revert commands next', async () => {
    const app = storefrontCheckout(sb)
    const env = storefrontEnv(app.src)
    let r = await sb.run('deploy_storefront.mts', ['--json'], { env })
    expect(r.code, r.stderr).toBe(0)
    const first = app.git('rev-parse', '--short=12', 'HEAD')
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'deployed', job: 'cedra-storefront', version: 0, image: `registry.example.com/cedra/storefront:${first}`, commit: first })
    const second = app.commit('second')
    r = await sb.run('deploy_storefront.mts', ['--json'], { env })
    expect(r.code, r.stderr).toBe(0)
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'canary-waiting', exitCode: 0, version: 1, commit: second, next: ['npx tsx deploy/promote_storefront.mts', 'npx tsx deploy/revert_storefront.mts 0'] })
    expect(result.message).toContain('canary healthy, deployment')
    // and the promote that follows
    r = await sb.run('promote_storefront.mts', ['--json'])
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'deployed', exitCode: 0, job: 'cedra-storefront', version: 1, acted: true })
  })

  // api.AllocationListStub (DeploymentStatus, TaskStates) is the same at every supported version (api/allocations.go@v1.6.10, @v2.0.5).
  it.each(['1.6.10', '2.0.5'])('Nomad %s: a failed deployment: outcome failed, exit 1, the reason in the message, the allocation that failed it', async (version) => {
    sb.setState({ version })
    expect((await sb.run('deploy_nomad.mts')).code).toBe(0)
    sb.setState({ outcome: 'failed' })
    const r = await sb.run('deploy_nomad.mts', ['--json'], { env: { AGENT_BINARY_NAME: 'agent2' } })
    expect(r.code).toBe(1)
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'failed', exitCode: 1, job: 'agent-economique', version: 1, acted: true })
    expect(result.message).toContain('Failed due to unhealthy allocations')
    // The allocation that failed it, by its deployment health (not any allocation of the job), and its logs.
    const alloc = sb.readState().jobs['agent-economique'].allocs.find((a: any) => a.JobVersion === 1 && a.DeploymentStatus?.Healthy === false)
    expect(result.allocation).toEqual({ id: alloc.ID, task: 'agent', event: 'Exit Code: 1', logs: `nomad alloc logs -stderr ${alloc.ID.slice(0, 8)} agent` })
    expect(result.next).toEqual([`nomad alloc logs -stderr ${alloc.ID.slice(0, 8)} agent`, `nomad alloc status ${alloc.ID.slice(0, 8)}`])
    expect(r.stderr).toContain(`The allocation that failed it: ${alloc.ID.slice(0, 8)} (task agent, last event: Exit Code: 1)`)
  })

  it('--timeout reached: outcome timeout, exit 1', async () => {
    sb.setState({ polls: 1000 })
    const r = await sb.run('deploy_nomad.mts', ['--json', '--timeout', '1'])
    expect(r.code).toBe(1)
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'timeout', exitCode: 1 })
  })

  it('a failed command: outcome failed with the step and the command', async () => {
    sb.setState({ fail: ['job plan'] })
    const r = await sb.run('deploy_nomad.mts', ['--json'])
    expect(r.code).toBe(1)
    const result = await jsonResult(r.stdout)
    expect(result.outcome).toBe('failed')
    expect(result.message).toMatch(/^Plan agent-economique .* failed: .*No cluster leader/)
  })

  it('--plan --json: outcome planned, and whether a deploy would change something', async () => {
    let r = await sb.run('deploy_valkey.mts', ['--plan', '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'planned', changes: true, job: 'valkey' })
    expect(r.stderr).toContain('+ Job: "valkey"')
    expect((await sb.run('deploy_valkey.mts')).code).toBe(0)
    r = await sb.run('deploy_valkey.mts', ['--plan', '--json'])
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'planned', changes: false })
  })

  it('a signal: outcome interrupted with its exit code, and still one valid object', async () => {
    sb.setState({ slow: { 'job plan': 5 } })
    const r = await sb.run('deploy_nomad.mts', ['--json'], {
      onStart: (pid) => setTimeout(() => process.kill(pid, 'SIGTERM'), 1500),
    })
    expect(r.code).toBe(143)
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'interrupted', exitCode: 143 })
    expect(result.message).toContain('interrupted by SIGTERM')
  })
})

describe('secrets, Vault and Nomad Variables', () => {
  it('put_storefront_secrets --json: done with the KV version, then unchanged; no secret value anywhere in the result', async () => {
    const env = { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'hvs.test-token-value', REVALIDATE_SECRET: 'revalidate-secret-value', SESSION_SECRET: 'session-secret-value-1234' }
    let r = await sb.run('put_storefront_secrets.mts', ['--json'], { env })
    expect(r.code, r.stderr).toBe(0)
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'done', version: 1, vaultPath: 'secret/cedra/prod', acted: true, next: ['npx tsx deploy/deploy_valkey.mts'] })
    for (const v of Object.values(env).slice(1)) expect(r.stdout).not.toContain(v)
    r = await sb.run('put_storefront_secrets.mts', ['--json'], { env })
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'unchanged', version: 1 })
  })

  it('a message that holds a secret: the result redacts it as the terminal does', async () => {
    // A token that also appears in the address: every message naming the address holds it.
    const token = 'leaky-token-value-42'
    const env = { NOMAD_ADDR: `http://${token}.invalid:4646`, NOMAD_TOKEN: token }
    let r = await sb.run('deploy_nomad.mts', ['--json'], { env })
    expect(r.code, r.stderr).toBe(0)
    expect((await jsonResult(r.stdout)).nomad.address).toBe('http://[REDACTED].invalid:4646')
    expect(r.output).not.toContain(token)
    sb.setState({ mode: 'unreachable' })
    r = await sb.run('deploy_nomad.mts', ['--json'], { env })
    expect(r.code).toBe(1)
    expect((await jsonResult(r.stdout)).message).toContain('cannot reach Nomad at http://[REDACTED].invalid:4646')
    expect(r.output).not.toContain(token)
  })

  it('put_arangodb_password --json: done, then unchanged; the password never in the result', async () => {
    const env = { ARANGO_ROOT_PASSWORD: 'arango-root-password-value' }
    let r = await sb.run('put_arangodb_password.mts', ['--json'], { env })
    expect(r.code, r.stderr).toBe(0)
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'done', variable: 'nomad/jobs/arangodb-agent-economique', acted: true })
    r = await sb.run('put_arangodb_password.mts', ['--json'], { env })
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'unchanged' })
    expect(r.stdout).not.toContain(env.ARANGO_ROOT_PASSWORD)
  })
})
