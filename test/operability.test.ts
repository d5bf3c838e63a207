// For reviewers and pipelines (the issue "Operable from a merge request, a CI job and cron", its first
// part): a --dry-run needs no production secret and contacts nothing; --plan asks the cluster what a
// deploy would do (the real `nomad job plan`; for promote, revert and the password, what they read) and
// changes nothing.
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { AGENT_SHA, NODE_ID, root, sandbox, stageBinary, storefrontCheckout, type Sandbox } from './helpers.ts'

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
  sb.stub('vault')
  sb.stub('docker')
})
const HTTPS = { NOMAD_ADDR: 'https://nomad.example.internal:4646', NOMAD_TOKEN: undefined }

describe('--dry-run needs no secret', () => {
  it.each(['deploy_nomad.mts', 'deploy_arangodb.mts', 'deploy_valkey.mts', 'promote_storefront.mts', 'revert_storefront.mts', 'put_arangodb_password.mts'])(
    '%s --dry-run without NOMAD_TOKEN: exit 0, the token as "$NOMAD_TOKEN", its absence a warning, nothing contacted', async (script) => {
      const r = await sb.run(script, ['--dry-run'], { env: HTTPS })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stderr).toContain('warning: a real run would refuse: NOMAD_TOKEN is not set')
      expect(r.stdout).toContain('NOMAD_TOKEN="$NOMAD_TOKEN"')
      expect(sb.calls()).toEqual([])
    })

  it('put_storefront_secrets --dry-run without VAULT_TOKEN: exit 0, a warning, vault never called', async () => {
    const r = await sb.run('put_storefront_secrets.mts', ['--dry-run'], { env: { VAULT_ADDR: 'https://vault.example.internal:8200', VAULT_TOKEN: undefined } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('warning: a real run would refuse: VAULT_TOKEN is not set')
    expect(r.stdout).toContain('VAULT_TOKEN="$VAULT_TOKEN"')
    expect(sb.calls()).toEqual([])
  })

  it('a real run without the token is still refused (exit 2), before any call', async () => {
    const r = await sb.run('deploy_nomad.mts', [], { env: HTTPS })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/refused \(nothing was changed\):\n(.*\n)*\s+- NOMAD_TOKEN is not set/)
    expect(sb.calls()).toEqual([])
  })
})

describe('--plan: what a deploy would do, changing nothing', () => {
  it('deploy_nomad --plan: the real plan, "would create", no job run, no lock; after a deploy, "would change nothing"', async () => {
    stageBinary(sb) // the agent build deploy_binary records: what deploy_nomad deploys
    let r = await sb.run('deploy_nomad.mts', ['--plan'])
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad')).toEqual(['job history -json agent-economique', 'var get -out json nomad/jobs/agent-economique/releases',
      `job plan -var=binary_path=/root/data/agent-${AGENT_SHA} -var=binary_sha256=${AGENT_SHA} -var=commit=0123456789ab -var=nodes=${NODE_ID} ${path.join(root, 'jobs/agent.nomad')}`])
    expect(r.stdout).toContain(`--plan: a deploy would create agent-economique with agent-${AGENT_SHA.slice(0, 12)} (staged by deploy_binary (test@laptop, `)
    expect(r.stderr).toContain('+ Job: "agent-economique"')
    expect(sb.readState().jobs).toEqual({})
    expect((await sb.run('deploy_nomad.mts')).code).toBe(0)
    r = await sb.run('deploy_nomad.mts', ['--plan'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('--plan: agent-economique already runs this specification: a deploy would change nothing')
  })

  it('deploy_storefront --plan: no docker call at all, and says which image a deploy would build', async () => {
    const { src, git } = storefrontCheckout(sb)
    const tag = git('rev-parse', '--short=12', 'HEAD')
    const r = await sb.run('deploy_storefront.mts', ['--plan'], { env: { STOREFRONT_SOURCE_DIR: src, STOREFRONT_IMAGE: 'registry.test/cedra/storefront' } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`--plan: a deploy would create cedra-storefront with registry.test/cedra/storefront:${tag}, after building and pushing that image`)
    expect(sb.calls('docker')).toEqual([])
    expect(sb.commands('nomad').filter((c) => !c.startsWith('job plan'))).toEqual(['job deployments -latest -json cedra-storefront'])
    // A plan builds nothing: a CI runner without docker can plan (a real run still refuses).
    const noDocker = { STOREFRONT_SOURCE_DIR: src, STOREFRONT_IMAGE: 'registry.test/cedra/storefront', PATH: sb.pathWithout('docker') }
    expect((await sb.run('deploy_storefront.mts', ['--plan'], { env: noDocker })).code).toBe(0)
    const real = await sb.run('deploy_storefront.mts', [], { env: noDocker })
    expect(real.code).toBe(2)
    expect(real.stderr).toContain('docker not found on PATH')
  })

  it('promote, revert and put_arangodb_password --plan: what they would do, read-only calls only', async () => {
    const nomad = (...a: string[]) => execFileSync(path.join(sb.bin, 'nomad'), a, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
    const job = path.join(root, 'jobs/cedra-storefront.nomad')
    for (const tag of ['aaaaaaaaaaaa', 'bbbbbbbbbbbb']) {
      nomad('job', 'run', '-detach', `-var=image_tag=${tag}`, job)
      for (let i = 0; i < 3; i++) nomad('job', 'deployments', '-latest', '-json', 'cedra-storefront')
    }
    let r = await sb.run('promote_storefront.mts', ['--plan'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/--plan: a promote would promote the canary of cedra-storefront version 1 \(deployment [0-9a-f]{8}\): storefront 1\/1 canary healthy/)
    r = await sb.run('revert_storefront.mts', ['--plan', '0'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^--plan: a revert would register the specification of version 0 of cedra-storefront again \(\S+:aaaaaaaaaaaa\), as a new version, replacing version 1$/m)
    r = await sb.run('put_arangodb_password.mts', ['--plan'], { env: { ARANGO_ROOT_PASSWORD: 'plan-canary-password-1' } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('--plan: a run would write root_password (new) to nomad/jobs/arangodb-agent-economique, keeping its other items')
    expect(r.output).not.toContain('plan-canary-password-1')
    const writes = sb.calls('nomad').filter((c) => /^(job (promote|revert|run)|var put)$/.test(c.argv.slice(0, 2).join(' ')))
    expect(writes.map((c) => c.argv.slice(0, 2).join(' '))).toEqual(['job run', 'job run']) // the two set up above
    expect(sb.readState().vars).toEqual({})
  })

  it('--plan with --dry-run is refused (one contacts nothing, the other asks the cluster)', async () => {
    const r = await sb.run('deploy_valkey.mts', ['--plan', '--dry-run'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('--dry-run and --plan go alone')
  })
})
