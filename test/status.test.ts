// deploy/status.mts (the issue "Operable from a merge request, a CI job and cron"): what runs now for
// both systems, read-only, as a table or --json; exit 0 all as the repository says, 1 something needs
// a look, 2 refused.
import { beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, sandbox, stageBinary, storefrontCheckout, type Sandbox } from './helpers.ts'

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
  sb.stub('vault')
  sb.stub('docker')
})
const WRITES = /^job (run|revert|promote|stop|dispatch)|^var (put|purge)|^deployment (promote|fail|pause)/
const VAULT = { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'hvs.status-test', REVALIDATE_SECRET: 'revalidate-secret-value', SESSION_SECRET: 'session-secret-value' }

/** Deploy the four jobs as the runbook does; returns the storefront checkout and its env. */
async function deployAll() {
  const app = storefrontCheckout(sb)
  stageBinary(sb) // the agent build deploy_binary records
  const env = { STOREFRONT_SOURCE_DIR: app.src, STOREFRONT_IMAGE: 'registry.example.com/cedra/storefront' }
  for (const [script, more] of [['deploy_nomad.mts', {}], ['put_arangodb_password.mts', { ARANGO_ROOT_PASSWORD: 'arango-password-value' }], ['deploy_arangodb.mts', {}],
    ['put_storefront_secrets.mts', VAULT], ['deploy_valkey.mts', {}], ['deploy_storefront.mts', env]] as const) {
    const r = await sb.run(script, [], { env: more })
    expect(r.code, `${script}: ${r.stderr}`).toBe(0)
  }
  return { app, env }
}

describe('status', () => {
  it('an empty cluster: every job missing, exit 1, and nothing written', async () => {
    const r = await sb.run('status.mts', ['--json'])
    expect(r.code, r.stderr).toBe(1)
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ script: 'status', outcome: 'drift', exitCode: 1 })
    expect(result.jobs.map((j: any) => [j.job, j.system, j.state])).toEqual([
      ['agent-economique', 'agent-economique', 'missing'], ['arangodb-agent-economique', 'agent-economique', 'missing'],
      ['cedra-storefront', 'cedra-storefront', 'missing'], ['valkey', 'cedra-storefront', 'missing']])
    expect(result.message).toMatch(/^4 of 4 jobs need a look: agent-economique missing/)
    expect(sb.commands('nomad').filter((c) => WRITES.test(c))).toEqual([])
  })

  it('all deployed as the repository says: exit 0, a table with versions, deployments, healthy counts, the image and its commit', async () => {
    const { app } = await deployAll()
    const before = sb.commands('nomad').length
    let r = await sb.run('status.mts')
    expect(r.code, r.stderr).toBe(0)
    const commit = app.git('rev-parse', '--short=12', 'HEAD')
    expect(r.stdout).toMatch(/^JOB +VERSION +STATE +DEPLOYMENT +HEALTHY +PLAN +RUNS$/m)
    expect(r.stdout).toMatch(new RegExp(`^cedra-storefront +0 +ok +[0-9a-f]{8} successful +2/2 +no change +registry.example.com/cedra/storefront:${commit}$`, 'm'))
    expect(r.stdout).toMatch(/^valkey +0 +ok +[0-9a-f]{8} successful +1\/1 +no change/m)
    expect(r.stdout).toContain('All 4 jobs run as the repository says.')
    // read-only: histories, deployments and plans, never a write
    const calls = sb.commands('nomad').slice(before)
    expect(calls.filter((c) => WRITES.test(c))).toEqual([])
    expect(calls.filter((c) => c.startsWith('job plan')).length).toBe(4)
    r = await sb.run('status.mts', ['--json'])
    const result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'in-sync', exitCode: 0, message: 'all 4 jobs run as the repository says' })
    expect(result.jobs.find((j: any) => j.job === 'cedra-storefront')).toMatchObject({ state: 'ok', version: 0, stable: true, commit, healthy: 2, desired: 2, canariesWaiting: 0, wouldChange: false })
  })

  it('a canary waiting for promotion, a setting that would change a job: exit 1, each named', async () => {
    const { app, env } = await deployAll()
    app.commit('second')
    expect((await sb.run('deploy_storefront.mts', [], { env })).code).toBe(0)
    stageBinary(sb, 'c'.repeat(64)) // a new agent build, uploaded and not deployed yet
    const r = await sb.run('status.mts', ['--json'])
    expect(r.code, r.stderr).toBe(1)
    const result = await jsonResult(r.stdout)
    const byJob = Object.fromEntries(result.jobs.map((j: any) => [j.job, j]))
    expect(byJob['cedra-storefront']).toMatchObject({ state: 'canary-waiting', version: 1, canariesWaiting: 1, detail: 'version 1 waits for promotion' })
    expect(byJob['agent-economique']).toMatchObject({ state: 'would-change', wouldChange: true })
    expect(byJob['agent-economique'].detail).toMatch(/^build cccccccccccc staged by deploy_binary \(.*\), not deployed yet; a deploy would change it \(npx tsx deploy\/deploy_nomad.mts --plan shows the diff\)$/)
    expect(byJob.valkey.state).toBe('ok')
    expect(result.message).toMatch(/^2 of 4 jobs need a look: /)
    expect(r.stderr).toMatch(/^cedra-storefront +1 \(unstable\) +canary-waiting/m)
  })

  it('a first deployment that failed: the job is unhealthy, exit 1', async () => {
    sb.setState({ outcome: 'failed' })
    stageBinary(sb)
    expect((await sb.run('deploy_nomad.mts')).code).toBe(1)
    const r = await sb.run('status.mts', ['--json'])
    expect(r.code).toBe(1)
    const agent = (await jsonResult(r.stdout)).jobs[0]
    expect(agent).toMatchObject({ job: 'agent-economique', state: 'unhealthy', version: 0, stable: false })
    expect(agent.detail).toMatch(/^deployment [0-9a-f]{8} failed: Failed due to unhealthy allocations - no stable job version to auto revert to$/)
  })

  it('a deploy that failed and was rolled back by Nomad: the rollback is named; the failed build is not offered again', async () => {
    await deployAll()
    sb.setState({ outcome: 'failed' })
    stageBinary(sb, 'd'.repeat(64))
    expect((await sb.run('deploy_nomad.mts')).code).toBe(1)
    const r = await sb.run('status.mts', ['--json'])
    expect(r.code, r.stderr).toBe(0)
    const agent = (await jsonResult(r.stdout)).jobs[0]
    expect(agent).toMatchObject({ job: 'agent-economique', state: 'ok', version: 2, wouldChange: false })
    expect(agent.detail).toMatch(/^version 1 failed \(deployment [0-9a-f]{8}: Failed due to unhealthy allocations - rolling back to job version 0\); version 2 runs the specification of version 0 again$/)
  })

  it('the agent\'s host is no client of the cluster, or unset: the agent is not planned, and says why', async () => {
    await deployAll()
    let r = await sb.run('status.mts', ['--json'], { env: { DEPLOY_SSH_HOST: '127.0.0.9' } })
    expect(r.code).toBe(1)
    let agent = (await jsonResult(r.stdout)).jobs[0]
    expect(agent).toMatchObject({ job: 'agent-economique', state: 'unhealthy', wouldChange: null })
    expect(agent.detail).toMatch(/^127\.0\.0\.9 is not a client of the Nomad cluster at http:\/\/127\.0\.0\.1:4646/)
    r = await sb.run('status.mts', ['--json'], { env: { DEPLOY_SSH_HOST: undefined } })
    expect(r.code).toBe(1)
    agent = (await jsonResult(r.stdout)).jobs[0]
    expect(agent).toMatchObject({ state: 'unknown', detail: 'DEPLOY_SSH_HOST (or DEPLOY_SSH_HOSTS) is not set: the agent job is constrained to its hosts, so it cannot be planned' })
  })

  it('a token the cluster refuses: exit 2, refused', async () => {
    sb.setState({ mode: 'forbidden' })
    const r = await sb.run('status.mts', ['--json'])
    expect(r.code).toBe(2)
    expect(await jsonResult(r.stdout)).toMatchObject({ outcome: 'refused', exitCode: 2 })
  })
})
