// revert_storefront.mts, run as a user runs it, against the nomad test double. The job's versions are
// registered with the double itself, as deploy_storefront and promote_storefront would leave them.
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

const SCRIPT = 'revert_storefront.mts'
const JOBFILE = path.join(root, 'jobs/cedra-storefront.nomad')
const IMAGE = 'registry.example.internal/cedra/storefront'
// The job's lock, taken before the history is read when there is a target (its holder file's random path normalised).
const LOCK = 'var lock -early-return -shell=false nomad/jobs/cedra-storefront/lock @HOLDER sh -c echo locked; exec cat >/dev/null'
let sb: Sandbox
/** The nomad calls, the lock's holder file normalised to @HOLDER. */
const nomadCalls = () => sb.commands('nomad').map((c) => c.replace(/@\S+\/holder\.json/, '@HOLDER'))
/** The release record's modify index in the double (0: not written yet). */
const recordIndex = () => Number(sb.readState().vars?.['nomad/jobs/cedra-storefront/releases']?.ModifyIndex ?? 0)
beforeEach(() => {
  sb = sandbox()
})

function nomad(...args: string[]): string {
  return execFileSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
}
/** Register a version with this tag; `promote`: promote its canary and let it finish (a stable version). */
function deployed(tag: string, promote = true) {
  nomad('job', 'run', '-detach', `-var=image_tag=${tag}`, JOBFILE)
  for (let i = 0; i < 3; i++) nomad('job', 'deployments', '-latest', '-json', 'cedra-storefront')
  const d = JSON.parse(nomad('job', 'deployments', '-latest', '-json', 'cedra-storefront'))
  if (promote && d.Status === 'running') {
    nomad('job', 'promote', '-detach', 'cedra-storefront')
    for (let i = 0; i < 3; i++) nomad('job', 'deployments', '-latest', '-json', 'cedra-storefront')
  }
}
/** Versions 0 and 1, both promoted and stable; version 1 is current. */
function twoVersions() {
  deployed('aaaaaaaaaaaa')
  deployed('bbbbbbbbbbbb')
  return sb.commands('nomad').length
}

describe('revert_storefront: the version', () => {
  it('without a version: prints the history (tags, versions, commits, images, dates, stable) and exits 2, changing nothing (no lock either)', async () => {
    const before = twoVersions()
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    const lines = r.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^TAG +VERSION +COMMIT +IMAGE +SUBMITTED +STABLE$/)
    expect(lines[1]).toMatch(new RegExp(`^- +1 +bbbbbbbbbbbb +${IMAGE}:bbbbbbbbbbbb +\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\dZ +yes +\\(current\\) \\(last good\\)$`))
    expect(lines[2]).toMatch(new RegExp(`^- +0 +aaaaaaaaaaaa +${IMAGE}:aaaaaaaaaaaa +\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\dZ +yes$`))
    expect(lines).toHaveLength(3)
    expect(r.stderr).toContain('give the version, tag or commit to go back to: npx tsx deploy/revert_storefront.mts <version|tag|commit> (the current version is 1)')
    expect(sb.commands('nomad').slice(before)).toEqual(['job history -json cedra-storefront'])
  })

  // 'abc' is no longer among them: it may be a tag's name (refused once the history has no such tag: test/storefront_releases.test.ts).
  it.each([['not a name', 'abc!'], ['negative', '-1'], ['a decimal', '1.5'], ['with spaces', '1 2']])('refuses a target that is %s (exit 2, no nomad call)', async (_what, version) => {
    // After `--` everything is a positional argument: the env file goes before it.
    const r = await sb.run(SCRIPT, version.startsWith('-') ? ['--env-file', sb.envFile, '--', version] : [version])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`${JSON.stringify(version)} must be a version (a whole number), a tag (such as storefront-<commit>) or a commit (7 to 40 hex digits): run without it to list the releases of cedra-storefront`)
    expect(r.stderr.match(/^ {2}- /gm)).toHaveLength(1) // that problem only
    expect(sb.calls()).toEqual([])
  })

  it('refuses the current version (exit 2), with the history', async () => {
    const before = twoVersions()
    const r = await sb.run(SCRIPT, ['1'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('version 1 is the current version of cedra-storefront: nothing to revert; give an earlier one (list above)')
    expect(r.stdout).toMatch(/^- +1 .*\(current\)/m)
    expect(nomadCalls().slice(before)).toEqual([LOCK, 'job history -json cedra-storefront'])
  })

  it('refuses a version the job never had (exit 2)', async () => {
    const before = twoVersions()
    const r = await sb.run(SCRIPT, ['7'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('cedra-storefront has no version 7')
    expect(nomadCalls().slice(before)).toEqual([LOCK, 'job history -json cedra-storefront'])
  })

  it('refuses a name no version is tagged with (exit 2), with the history, nothing reverted', async () => {
    const before = twoVersions()
    const r = await sb.run(SCRIPT, ['abc'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('cedra-storefront has no version tagged abc')
    expect(r.stdout).toMatch(/^TAG +VERSION/)
    expect(nomadCalls().slice(before)).toEqual([LOCK, 'job history -json cedra-storefront'])
    expect(sb.readState().jobs['cedra-storefront'].versions).toHaveLength(2)
  })

  it('refuses when the job is not deployed (exit 2)', async () => {
    const r = await sb.run(SCRIPT, ['0'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('cedra-storefront is not deployed on http://127.0.0.1:4646: there is nothing to revert')
  })
})

describe('revert_storefront: the revert and its deployment', () => {
  it('reverts to the version, follows the deployment: its canary waits for promotion (exit 0), with the commands', async () => {
    const before = twoVersions()
    const recorded = recordIndex()
    const r = await sb.run(SCRIPT, ['0'])
    expect(r.code, r.stderr).toBe(0)
    expect(nomadCalls().slice(before)).toEqual([
      LOCK,
      'job history -json cedra-storefront',
      'job revert -detach cedra-storefront 0',
      'job history -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      // a canary waiting: recorded, not tagged (promote_storefront tags it)
      'var get -out json nomad/jobs/cedra-storefront/releases',
      `var put -check-index ${recorded} -in=json -out=none -`,
    ])
    const record = JSON.parse(sb.readState().vars['nomad/jobs/cedra-storefront/releases'].Items.history)
    expect(record).toEqual([expect.objectContaining({ job: 'cedra-storefront', version: 2, action: 'revert', outcome: 'canary-waiting', commit: 'aaaaaaaaaaaa', image: `${IMAGE}:aaaaaaaaaaaa` })])
    expect(record[0].tag).toBeUndefined()
    expect(r.stdout).toContain('Release: cedra-storefront version 2 (canary-waiting)')
    expect(r.stdout).toMatch(/^cedra-storefront version 2: canary healthy, deployment [0-9a-f]{8} waiting for promotion$/m)
    expect(r.stdout).toContain('npx tsx deploy/promote_storefront.mts')
    expect(r.stdout).toMatch(/or go back to version 1: +npx tsx deploy\/revert_storefront\.mts 1/)
    const versions = sb.readState().jobs['cedra-storefront'].versions
    expect(versions[2].image).toBe(`${IMAGE}:aaaaaaaaaaaa`)
    expect(versions[2].revertedFrom).toBe(0)
  })

  it('a revert whose deployment fails: exit 1 with Nomad\'s reason', async () => {
    twoVersions()
    sb.setState({ outcome: 'failed' })
    const r = await sb.run(SCRIPT, ['0'])
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^cedra-storefront version 2: deployment [0-9a-f]{8} failed: Failed due to unhealthy allocations - rolling back to job version 1; Nomad's rollback is done: version 3 \(the specification of version 1\), deployment [0-9a-f]{8} successful$/m)
  })

  it('--timeout bounds the wait: exit 1, it goes on in Nomad', async () => {
    twoVersions()
    sb.setState({ polls: 100_000 })
    const r = await sb.run(SCRIPT, ['--timeout', '1', '0'])
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/cedra-storefront version 2: deployment [0-9a-f]{8} still running after 1s \(--timeout\); it goes on in Nomad/)
  })

  it('a version with the current specification: Nomad registers nothing new, and it says so (exit 0)', async () => {
    deployed('aaaaaaaaaaaa') // 0
    deployed('bbbbbbbbbbbb') // 1
    nomad('job', 'revert', '-detach', 'cedra-storefront', '0') // 2 = 0 again
    const r = await sb.run(SCRIPT, ['0'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('cedra-storefront version 2 already has the specification of version 0: Nomad registered nothing new')
    expect(sb.readState().jobs['cedra-storefront'].versions).toHaveLength(3)
  })

  it('a refused token: exit 2 before anything changes', async () => {
    twoVersions()
    sb.setState({ mode: 'forbidden' })
    const r = await sb.run(SCRIPT, ['0'])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/refused the token \(403\): check NOMAD_TOKEN/)
    expect(sb.readState().jobs['cedra-storefront'].versions).toHaveLength(2)
  })

  it('--dry-run prints the commands and runs nothing; --help prints the header', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run', '3'])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('nomad job revert -detach cedra-storefront 3')
    expect(r.stdout).toContain('# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/cedra-storefront/lock')
    expect(r.stdout).toMatch(/^nomad job tag apply -name "\$TAG_OF_THAT_RELEASE" -description 'revert to version VERSION, by .*' -version "\$NEW_VERSION" cedra-storefront$/m)
    expect(r.stdout).toContain('nomad var get -item history nomad/jobs/cedra-storefront/releases')
    const h = await sb.run(SCRIPT, ['--help'])
    expect(h.stdout).toMatch(/^revert_storefront: roll the CEDRA storefront back/)
    for (const s of ['Usage: npx tsx deploy/revert_storefront.mts', '<version|tag|commit>', 'Needs: nomad CLI', 'NOMAD_TOKEN', 'DEPLOY_POLL_SECONDS', 'Exit: 0'])
      expect(h.stdout).toContain(s)
    expect(sb.calls()).toEqual([])
  })
})
