// Property 5 of SECURITY.md (concurrency): two runs of the same script at the same time, both reading
// the same state (the doubles' barrier knob holds each read until both have arrived; the doubles apply
// writes one at a time, as the servers do): exactly one changes the job / variable / secret, the other
// stops with exit 1 and a clear message, and nothing is overwritten. Two layers: on Nomad 1.7+ the job's
// lock (nomad var lock) refuses the second run before its plan (exit 2, naming the holder); the
// -check-index guard below it is proved on Nomad 1.6.10, which has no variable locks.
import { execFileSync, spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, it, type ExpectStatic } from 'vitest'
import { sandbox, stageBinary, type Result, type Sandbox } from './helpers.ts'
import { storefrontSource } from './security-scenarios.ts'

/** Exactly one of the two runs succeeded; the other stopped with exit 1 and `message`. Returns [winner, loser]. */
function oneWins(expect: ExpectStatic, runs: Result[], message: RegExp): [number, number] {
  const codes = runs.map((r) => r.code)
  expect(codes.sort(), runs.map((r) => r.stderr).join('\n-----\n')).toEqual([0, 1])
  const winner = runs.findIndex((r) => r.code === 0)
  const loser = 1 - winner
  expect(runs[loser].stderr).toMatch(message)
  expect(runs[loser].stderr).not.toMatch(/\n\s+at /)
  return [winner, loser]
}

const versionsOf = (sb: Sandbox, job: string): { key: string; vars: Record<string, string> }[] => sb.readState().jobs?.[job]?.versions ?? []
const CHANGED = /changed on the cluster since the plan \(.*(conflicting job modify index|job already exists).*\): nothing was overwritten; run again/

describe.concurrent('5. concurrency: two deploys of the same job at the same time, Nomad 1.6 (no lock: -check-index is the guard)', () => {
  it('deploy_nomad, two different binaries: both plan against the same index, one runs, the other stops (exit 1), nothing overwritten', async ({ expect }) => {
    const sb = sandbox()
    sb.setState({ version: '1.6.10' })
    stageBinary(sb)
    expect((await sb.run('deploy_nomad.mts')).code).toBe(0)
    const before = versionsOf(sb, 'agent-economique')
    const index = String(sb.readState().jobs['agent-economique'].modifyIndex)
    sb.setState({ barrier: { 'job plan': 2 } })
    const runs = await Promise.all(['agent-a', 'agent-b'].map((name) => sb.run('deploy_nomad.mts', [], { env: { AGENT_BINARY_NAME: name } })))
    const [winner] = oneWins(expect, runs, CHANGED)
    // Both planned against the same modify index; exactly one new version, the winner's.
    const runCalls = sb.commands('nomad').filter((c) => c.startsWith('job run'))
    expect(runCalls.slice(1).map((c) => c.match(/-check-index (\d+)/)![1])).toEqual([index, index])
    const after = versionsOf(sb, 'agent-economique')
    expect(after).toHaveLength(before.length + 1)
    expect(after.at(-1)!.vars.binary_path).toBe(`/root/data/agent-${'ab'[winner]}-${after.at(-1)!.vars.binary_sha256}`)
  })

  it.for(['deploy_valkey.mts', 'deploy_arangodb.mts'])('%s, the first deploy twice at once: one creates the job, the other stops (exit 1)', async (script, { expect }) => {
    const sb = sandbox()
    sb.setState({ version: '1.6.10' })
    const job = script === 'deploy_valkey.mts' ? 'valkey' : 'arangodb-agent-economique'
    if (script === 'deploy_arangodb.mts') {
      const p = 'nomad/jobs/arangodb-agent-economique'
      sb.setState({ vars: { [p]: { Namespace: 'default', Path: p, CreateIndex: 5, ModifyIndex: 5, CreateTime: 1, ModifyTime: 1, Items: { root_password: 'x-stored-pw-0001' } } } })
    }
    sb.setState({ barrier: { 'job plan': 2 } })
    const runs = await Promise.all([sb.run(script), sb.run(script)])
    oneWins(expect, runs, CHANGED)
    expect(versionsOf(sb, job)).toHaveLength(1)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job run -check-index 0 '))).toHaveLength(2)
  })

  it('deploy_storefront, two commits from two checkouts: both build and push, one runs, the other stops (exit 1) without overwriting', async ({ expect }) => {
    const sb = sandbox()
    sb.setState({ version: '1.6.10' })
    sb.stub('docker')
    const image = 'registry.test:5000/cedra/storefront'
    const a = storefrontSource(path.join(sb.dir, 'a'), 'v0')
    expect((await sb.run('deploy_storefront.mts', [], { env: { STOREFRONT_SOURCE_DIR: a, STOREFRONT_IMAGE: image } })).code).toBe(0)
    execFileSync('git', ['clone', '-q', a, path.join(sb.dir, 'b')])
    const b = storefrontSource(path.join(sb.dir, 'b'), 'v-b')
    storefrontSource(a, 'v-a')
    const tags = [a, b].map((d) => execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: d, encoding: 'utf8' }).trim())
    expect(tags[0]).not.toBe(tags[1])
    sb.setState({ barrier: { 'job plan': 2 } })
    const runs = await Promise.all([a, b].map((src) => sb.run('deploy_storefront.mts', [], { env: { STOREFRONT_SOURCE_DIR: src, STOREFRONT_IMAGE: image } })))
    const [winner] = oneWins(expect, runs, CHANGED)
    const versions = versionsOf(sb, 'cedra-storefront')
    expect(versions).toHaveLength(2)
    expect(versions[1].vars.image_tag).toBe(tags[winner])
    expect(sb.readState('docker').pushed.sort()).toEqual([`${image}:${tags[0]}`, `${image}:${tags[1]}`, `${image}:${versions[0].vars.image_tag}`].sort())
  })
})

describe.concurrent('5. concurrency: two runs of the same job at the same time, Nomad 2.0 (the job lock)', () => {
  const HELD = /another run holds the lock of \S+ \(\S+@\S+, running (deploy|revert)_\w+\.mts, since \d{4}-\d\d-\d\dT[^)]*\): nothing was changed/
  it.for(['deploy_nomad.mts', 'deploy_valkey.mts', 'deploy_arangodb.mts', 'revert_agent.mts'])('%s twice at once: one runs, the other is refused (exit 2) naming the holder, before its plan; nothing half-done', async (script, { expect }) => {
    const sb = sandbox()
    const job = { 'deploy_nomad.mts': 'agent-economique', 'revert_agent.mts': 'agent-economique', 'deploy_valkey.mts': 'valkey', 'deploy_arangodb.mts': 'arangodb-agent-economique' }[script]!
    if (script === 'deploy_arangodb.mts') {
      const p = 'nomad/jobs/arangodb-agent-economique'
      sb.setState({ vars: { [p]: { Namespace: 'default', Path: p, CreateIndex: 5, ModifyIndex: 5, CreateTime: 1, ModifyTime: 1, Items: { root_password: 'x-stored-pw-0001' } } } })
    }
    let args: string[] = []
    if (script === 'revert_agent.mts') {
      // Two releases (versions 0 and 1): both runs go back to version 0.
      for (const sha of ['a'.repeat(64), 'b'.repeat(64)]) {
        stageBinary(sb, sha)
        expect((await sb.run('deploy_nomad.mts')).code).toBe(0)
      }
      args = ['0']
    } else stageBinary(sb)
    const before = versionsOf(sb, job).length
    sb.setState({ polls: 20 }) // each deployment lasts a moment: the runs overlap
    const runs = await Promise.all([sb.run(script, args), sb.run(script, args)])
    expect(runs.map((r) => r.code).sort(), runs.map((r) => r.stderr).join('\n-----\n')).toEqual([0, 2])
    const refused = runs.find((r) => r.code === 2)!
    expect(refused.stderr).toMatch(HELD)
    expect(refused.stderr).not.toMatch(/==> Plan|\$ nomad job (plan|run|revert)/)
    expect(versionsOf(sb, job)).toHaveLength(before + 1)
    // The lock went with the run that held it.
    expect(sb.readState().vars[`nomad/jobs/${job}/lock`]?.Lock ?? null).toBeNull()
  })
})

describe.concurrent('5. concurrency: two writers of the same secret at the same time (check-and-set)', () => {
  it('put_arangodb_password, two passwords: both read index N, one writes, the other stops (exit 1), the other items kept', async ({ expect }) => {
    const sb = sandbox()
    const p = 'nomad/jobs/arangodb-agent-economique'
    sb.setState({ index: 42, vars: { [p]: { Namespace: 'default', Path: p, CreateIndex: 42, ModifyIndex: 42, CreateTime: 1, ModifyTime: 1, Items: { other: 'kept-item-value-01' } } } })
    sb.setState({ barrier: { 'var get': 2 } })
    const passwords = ['first-password-0001', 'second-password-0002']
    const runs = await Promise.all(passwords.map((pw) => sb.run('put_arangodb_password.mts', [], { env: { ARANGO_ROOT_PASSWORD: pw } })))
    const [winner] = oneWins(expect, runs, /was changed by someone else since it was read \(modify index 42\): nothing was written; run again/)
    expect(sb.commands('nomad').filter((c) => c.startsWith('var put'))).toEqual(['var put -check-index 42 -in=json -out=none -', 'var put -check-index 42 -in=json -out=none -'])
    expect(sb.readState().vars[p].Items).toEqual({ other: 'kept-item-value-01', root_password: passwords[winner] })
    expect(sb.readState().vars[p].ModifyIndex).toBe(43)
  })

  it('put_storefront_secrets, two revalidate secrets: both read version N, one writes N+1, the other stops (exit 1)', async ({ expect }) => {
    const sb = sandbox()
    sb.stub('vault')
    const api = 'secret/data/cedra/prod'
    sb.setState({ secrets: { [api]: { versions: [{ data: { db_url: 'postgres://kept', session_secret: 'stored-session-0001', valkey_password: 'stored-valkey-password-01' }, created_time: '2024-01-01T00:00:00Z' }] } } }, 'vault')
    sb.setState({ barrier: { 'kv get': 2 } }, 'vault')
    const secrets = ['revalidate-first-0001', 'revalidate-second-0002']
    const runs = await Promise.all(secrets.map((s) => sb.run('put_storefront_secrets.mts', [], { env: { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 'vault-token-0001', REVALIDATE_SECRET: s } })))
    const [winner] = oneWins(expect, runs, /changed in Vault since it was read \(version 1\): nothing was overwritten; run again/)
    const versions = sb.readState('vault').secrets[api].versions
    expect(versions).toHaveLength(2)
    expect(versions[1].data).toEqual({ db_url: 'postgres://kept', session_secret: 'stored-session-0001', valkey_password: 'stored-valkey-password-01', revalidate_secret: secrets[winner] })
  })
})

describe('the doubles under concurrency', () => {
  it('apply concurrent writes one at a time: 8 parallel var puts with -force all land, none lost', async ({ expect }) => {
    const sb = sandbox()
    writeFileSync(path.join(sb.state, 'nomad.json'), '{}')
    const put = (i: number) => new Promise<number | null>((resolve) => {
      const child = spawn(path.join(sb.bin, 'nomad'), ['var', 'put', '-force', '-out=none', `nomad/jobs/x${i}`, `k=v${i}`],
        { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, stdio: 'ignore' })
      child.on('close', resolve)
    })
    expect(await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(put))).toEqual([0, 0, 0, 0, 0, 0, 0, 0])
    expect(Object.keys(sb.readState().vars).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => `nomad/jobs/x${i}`))
    expect(sb.readState().index).toBe(18)
  })
})

