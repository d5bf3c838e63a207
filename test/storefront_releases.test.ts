// The storefront's releases, end to end through the nomad double: every good deploy tagged
// storefront-<image tag>, the release record (nomad/jobs/cedra-storefront/releases), revert by tag and by
// commit after more versions than Nomad keeps (6 untagged), the listing, the refusals, the job's lock.
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, root, sandbox, type Sandbox } from './helpers.ts'

const JOB = 'cedra-storefront'
const JOBFILE = path.join(root, 'jobs/cedra-storefront.nomad')
const IMAGE = 'registry.example.internal/cedra/storefront'
const RECORD = `nomad/jobs/${JOB}/releases`
let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})

function nomad(...args: string[]): string {
  return execFileSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646', NOMAD_CLI_SHOW_HINTS: 'false' }, encoding: 'utf8' })
}
/** A deploy as deploy_storefront leaves it (image tag `tag`, promoted, successful), tagged as the kit tags it. */
function deployed(tag: string, { kitTag = true, vars = [] as string[] } = {}) {
  nomad('job', 'run', '-detach', `-var=image_tag=${tag}`, ...vars, JOBFILE)
  for (let i = 0; i < 3; i++) nomad('job', 'deployments', '-latest', '-json', JOB)
  const d = JSON.parse(nomad('job', 'deployments', '-latest', '-json', JOB))
  if (d.Status === 'running') {
    nomad('job', 'promote', '-detach', JOB)
    for (let i = 0; i < 3; i++) nomad('job', 'deployments', '-latest', '-json', JOB)
  }
  if (kitTag) nomad('job', 'tag', 'apply', '-name', `storefront-${tag}`, '-description', 'test', '-version', String(d.JobVersion), JOB)
}
const history = () => JSON.parse(nomad('job', 'history', '-json', JOB)) as { Version: number; VersionTag?: { Name: string } | null; TaskGroups: { Tasks: { Config: { image: string } }[] }[] }[]
const tagOf = (version: number) => history().find((v) => v.Version === version)?.VersionTag?.Name
const record = () => JSON.parse(sb.readState().vars[RECORD].Items.history) as Record<string, unknown>[]
const tag = (i: number) => `${String(i).repeat(4)}aaaaaaaa`.slice(0, 12) // 12 hex digits, one per release

describe('revert_storefront: by tag and by commit, beyond the 6 versions Nomad keeps', () => {
  it('10 releases: the untagged old versions are pruned, the tagged ones stay and are reached by tag and by commit', async () => {
    deployed(tag(1), { kitTag: true }) // version 0, tagged: kept
    // Versions 1-8 untagged (their tags unset as DEPLOY_KEEP_RELEASES would): beyond 6, the oldest are pruned.
    for (let i = 2; i <= 10; i++) deployed(tag(i), { kitTag: i === 10 })
    const kept = history().map((v) => v.Version)
    expect(kept).toContain(0)
    expect(kept).not.toContain(1)
    expect(kept).not.toContain(2)
    // By tag: version 0.
    const r = await sb.run('revert_storefront.mts', [`storefront-${tag(1)}`])
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad')).toContain(`job revert -detach ${JOB} 0`)
    const now = history()[0]
    expect(now.TaskGroups[0].Tasks[0].Config.image).toBe(`${IMAGE}:${tag(1)}`)
    expect(record()[0]).toMatchObject({ job: JOB, version: now.Version, action: 'revert', commit: tag(1), image: `${IMAGE}:${tag(1)}` })
  })

  it('by commit prefix (7 hex digits): the newest version whose image tag starts with it', async () => {
    deployed('abcdef012345')
    for (let i = 2; i <= 8; i++) deployed(tag(i))
    const r = await sb.run('revert_storefront.mts', ['abcdef0', '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad')).toContain(`job revert -detach ${JOB} 0`)
    const res = await jsonResult(r.stdout)
    expect(res.commit).toBe('abcdef012345')
  })

  it('a successful revert moves the release\'s tag to the new version (auto-promoted: Nomad updates in place)', async () => {
    deployed(tag(1))
    deployed(tag(2))
    // A revert to the stable version's spec... here to version 0, whose spec is not the stable one: a canary.
    const r = await sb.run('revert_storefront.mts', [`storefront-${tag(1)}`])
    expect(r.code, r.stderr).toBe(0)
    // A canary waits: recorded, not tagged yet; the promote tags it, and the tag moves.
    expect(record()[0]).toMatchObject({ action: 'revert', outcome: 'canary-waiting' })
    expect(tagOf(0)).toBe(`storefront-${tag(1)}`)
    const p = await sb.run('promote_storefront.mts')
    expect(p.code, p.stderr).toBe(0)
    expect(tagOf(2)).toBe(`storefront-${tag(1)}`)
    expect(tagOf(0)).toBeUndefined()
    expect(record()[0]).toMatchObject({ version: 2, action: 'revert', outcome: 'deployed', tag: `storefront-${tag(1)}` })
    expect(p.stdout).toContain(`Release: storefront-${tag(1)} = ${JOB} version 2 (deployed)`)
  })
})

describe('revert_storefront: the listing and the refusals', () => {
  it('without a target: TAG, VERSION, COMMIT, IMAGE, SUBMITTED, STABLE, the current and the last good marked; exit 2; --json releases', async () => {
    deployed(tag(1))
    deployed(tag(2))
    nomad('job', 'run', '-detach', `-var=image_tag=${tag(3)}`, JOBFILE) // version 2: a canary, not stable
    const r = await sb.run('revert_storefront.mts', ['--json'])
    expect(r.code).toBe(2)
    const res = await jsonResult(r.stdout)
    expect(res.releases.map((x: { version: number; tag: string | null; current: boolean; stable: boolean }) => [x.version, x.tag, x.current, x.stable]))
      .toEqual([[2, null, true, false], [1, `storefront-${tag(2)}`, false, true], [0, `storefront-${tag(1)}`, false, true]])
    const t = await sb.run('revert_storefront.mts')
    const lines = t.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^TAG +VERSION +COMMIT +IMAGE +SUBMITTED +STABLE$/)
    expect(lines[1]).toMatch(new RegExp(`^- +2 +${tag(3)} +${IMAGE}:${tag(3)} +\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\dZ +no +\\(current\\)$`))
    expect(lines[2]).toMatch(new RegExp(`^storefront-${tag(2)} +1 +${tag(2)} .* yes +\\(last good\\)$`))
    expect(t.stderr).toContain('the last good one 1')
  })

  it.each([['an unknown tag', 'storefront-000000000000', 'no version tagged storefront-000000000000'], ['an unknown commit', 'deadbee', 'no version of commit deadbee'],
    ['a pruned or unknown version', '42', 'no version 42'], ['the current version by tag', 'CURRENT', 'is the current version']])('refuses %s (exit 2, with the list, nothing reverted)', async (_w, target, says) => {
    deployed(tag(1))
    deployed(tag(2))
    const r = await sb.run('revert_storefront.mts', [target === 'CURRENT' ? `storefront-${tag(2)}` : target])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(says)
    expect(r.stdout).toMatch(/^TAG +VERSION/)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job revert'))).toEqual([])
  })
})

describe('deploy_storefront and promote_storefront: tags and the record', () => {
  it('promote tags the canary it promoted and records it; the tag of a redeployed image moves; tags beyond DEPLOY_KEEP_RELEASES are unset', async () => {
    for (let i = 1; i <= 3; i++) deployed(tag(i))
    // A canary of tag(1) again (version 3), then its promote: storefront-<tag(1)> moves from version 0 to 3.
    nomad('job', 'run', '-detach', `-var=image_tag=${tag(1)}`, JOBFILE)
    for (let i = 0; i < 3; i++) nomad('job', 'deployments', '-latest', '-json', JOB)
    const r = await sb.run('promote_storefront.mts', [], { env: { DEPLOY_KEEP_RELEASES: '2' } })
    expect(r.code, r.stderr).toBe(0)
    expect(tagOf(3)).toBe(`storefront-${tag(1)}`)
    expect(tagOf(0)).toBeUndefined()
    // Keep 2: the new one and the newest other (version 2); version 1's tag is unset.
    expect(tagOf(2)).toBe(`storefront-${tag(3)}`)
    expect(tagOf(1)).toBeUndefined()
    expect(record()).toEqual([expect.objectContaining({ job: JOB, version: 3, action: 'deploy', outcome: 'deployed', commit: tag(1), image: `${IMAGE}:${tag(1)}`, tag: `storefront-${tag(1)}`,
      deployment: expect.stringMatching(/^[0-9a-f-]{36}$/), when: expect.any(String), by: expect.any(String) })])
  })

  it('on Nomad 1.6.10 no tag command is called, no lock taken, and the promote still succeeds and is recorded', async () => {
    sb.setState({ version: '1.6.10' })
    deployed(tag(1), { kitTag: false, vars: ['-var=vault_auth=token'] })
    nomad('job', 'run', '-detach', `-var=image_tag=${tag(2)}`, '-var=vault_auth=token', JOBFILE)
    for (let i = 0; i < 3; i++) nomad('job', 'deployments', '-latest', '-json', JOB)
    const r = await sb.run('promote_storefront.mts')
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad').filter((c) => /^job tag|^var lock/.test(c))).toEqual([])
    expect(r.stderr).toContain('has no version tags (1.9+)')
    expect(r.stderr).toContain('has no variable locks (1.7+)')
    expect(record()[0]).toMatchObject({ version: 1, outcome: 'deployed' })
    expect(record()[0].tag).toBeUndefined()
  })
})

describe('the job\'s lock', () => {
  it('two runs of one job at once: one goes on, the other is refused (exit 2) naming the holder, and changes nothing', async () => {
    deployed(tag(1))
    deployed(tag(2))
    sb.setState({ polls: 40 })
    const first = sb.run('revert_storefront.mts', [`storefront-${tag(1)}`])
    // The second starts once the first holds the lock.
    for (let i = 0; i < 200 && !sb.readState().vars?.[`nomad/jobs/${JOB}/lock`]?.Lock; i++) await new Promise((r) => setTimeout(r, 50))
    const second = await sb.run('revert_storefront.mts', [`storefront-${tag(1)}`])
    expect(second.code).toBe(2)
    expect(second.stderr).toMatch(/another run holds the lock of cedra-storefront \(.*running revert_storefront\.mts, since /)
    const r1 = await first
    expect(r1.code, r1.stderr).toBe(0)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job revert'))).toHaveLength(1)
  })
})
