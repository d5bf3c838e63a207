// revert_storefront.mts, run as a user runs it, against the nomad test double. The job's versions are
// registered with the double itself, as deploy_storefront and promote_storefront would leave them.
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

const SCRIPT = 'revert_storefront.mts'
const JOBFILE = path.join(root, 'jobs/cedra-storefront.nomad')
const IMAGE = 'registry.example.internal/cedra/storefront'
let sb: Sandbox
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
  it('without a version: prints the history (versions, stable, dates, images) and exits 2, changing nothing', async () => {
    const before = twoVersions()
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    const lines = r.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^VERSION +STABLE +SUBMITTED +IMAGE$/)
    expect(lines[1]).toMatch(new RegExp(`^1 +yes +\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ +${IMAGE}:bbbbbbbbbbbb +\\(current\\)$`))
    expect(lines[2]).toMatch(new RegExp(`^0 +yes +\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ +${IMAGE}:aaaaaaaaaaaa$`))
    expect(r.stderr).toContain('give the version to go back to: npx tsx deploy/revert_storefront.mts <version> (the current one is 1)')
    expect(sb.commands('nomad').slice(before)).toEqual(['job history -json cedra-storefront'])
  })

  it.each([['not a number', 'abc'], ['negative', '-1'], ['a decimal', '1.5'], ['with spaces', '1 2']])('refuses a version that is %s (exit 2, no nomad call)', async (_what, version) => {
    const r = await sb.run(SCRIPT, version.startsWith('-') ? ['--', version] : [version])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`version ${JSON.stringify(version)} must be a whole number`)
    expect(sb.calls()).toEqual([])
  })

  it('refuses the current version (exit 2), with the history', async () => {
    const before = twoVersions()
    const r = await sb.run(SCRIPT, ['1'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('version 1 is the current version of cedra-storefront: nothing to revert')
    expect(r.stdout).toMatch(/^1 .*\(current\)$/m)
    expect(sb.commands('nomad').slice(before)).toEqual(['job history -json cedra-storefront'])
  })

  it('refuses a version the job never had (exit 2)', async () => {
    const before = twoVersions()
    const r = await sb.run(SCRIPT, ['7'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('cedra-storefront has no version 7')
    expect(sb.commands('nomad').slice(before)).toEqual(['job history -json cedra-storefront'])
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
    const r = await sb.run(SCRIPT, ['0'])
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad').slice(before)).toEqual([
      'job history -json cedra-storefront',
      'job revert -detach cedra-storefront 0',
      'job history -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
    ])
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
    const h = await sb.run(SCRIPT, ['--help'])
    expect(h.stdout).toMatch(/^revert_storefront: roll the CEDRA storefront back/)
    for (const s of ['Usage: npx tsx deploy/revert_storefront.mts', '<version>', 'Needs: nomad CLI', 'NOMAD_TOKEN', 'DEPLOY_POLL_SECONDS', 'Exit: 0'])
      expect(h.stdout).toContain(s)
    expect(sb.calls()).toEqual([])
  })
})
