// promote_storefront.mts, run as a user runs it, against the nomad test double. The cluster's state
// (job versions, a canary waiting for promotion) is prepared with the double itself, as
// deploy_storefront would leave it.
import { execFileSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

const SCRIPT = 'promote_storefront.mts'
const JOBFILE = path.join(root, 'jobs/cedra-storefront.nomad')
const IMAGE = 'registry.example.internal/cedra/storefront'
// The job's lock, taken before anything is read (its holder file's random temporary path normalised).
const LOCK = 'var lock -early-return -shell=false nomad/jobs/cedra-storefront/lock @HOLDER sh -c echo locked; exec cat >/dev/null'
const RECORD = 'nomad/jobs/cedra-storefront/releases'
// Who the tag's description names: the OS user and host (the sandbox's env has no CI variables).
const BY = `${os.userInfo().username}@${os.hostname()}`
let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})

/** Run the nomad double directly (setting up the cluster, not under test). */
function nomad(...args: string[]): string {
  return execFileSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
}
/** Register a version of the storefront with this tag, and let its deployment reach where it stops by itself. */
function deployed(tag: string, reads = 3) {
  nomad('job', 'run', '-detach', `-var=image_tag=${tag}`, JOBFILE)
  for (let i = 0; i < reads; i++) nomad('job', 'deployments', '-latest', '-json', 'cedra-storefront')
  return JSON.parse(nomad('job', 'deployments', '-latest', '-json', 'cedra-storefront'))
}
/** The nomad calls the script made (after the set-up calls). */
function scriptCalls(before: number) {
  return sb.commands('nomad').slice(before).map((c) => c.replace(/@\S+\/holder\.json/, '@HOLDER'))
}
/** The release record's modify index in the double (0: not written yet). */
const recordIndex = () => Number(sb.readState().vars?.[RECORD]?.ModifyIndex ?? 0)
const record = () => JSON.parse(sb.readState().vars[RECORD].Items.history)

describe('promote_storefront', () => {
  it('promotes the healthy canary, then follows the deployment to success (exit 0)', async () => {
    deployed('aaaaaaaaaaaa')
    const d = deployed('bbbbbbbbbbbb')
    expect(d.StatusDescription).toBe('Deployment is running but requires manual promotion')
    const before = sb.commands('nomad').length
    const recorded = recordIndex()
    const r = await sb.run(SCRIPT)
    expect(r.code, r.stderr).toBe(0)
    expect(scriptCalls(before)).toEqual([
      LOCK,
      'job deployments -latest -json cedra-storefront',
      'job promote -detach cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      // what the promoted version runs, and how it came (the record's entry of its canary)
      'job history -json cedra-storefront',
      `var get -out json ${RECORD}`,
      // successful: tagged, then recorded (check-and-set)
      'job history -json cedra-storefront',
      `job tag apply -name storefront-bbbbbbbbbbbb -description deploy of commit bbbbbbbbbbbb, image ${IMAGE}:bbbbbbbbbbbb, promoted by ${BY} -version 1 cedra-storefront`,
      `var get -out json ${RECORD}`,
      `var put -check-index ${recorded} -in=json -out=none -`,
    ])
    expect(sb.readState().jobs['cedra-storefront'].versions[1].versionTag).toMatchObject({ Name: 'storefront-bbbbbbbbbbbb' })
    expect(record()).toEqual([expect.objectContaining({ job: 'cedra-storefront', version: 1, action: 'deploy', outcome: 'deployed', commit: 'bbbbbbbbbbbb', image: `${IMAGE}:bbbbbbbbbbbb`, tag: 'storefront-bbbbbbbbbbbb', deployment: d.ID })])
    expect(r.stdout).toContain('Release: storefront-bbbbbbbbbbbb = cedra-storefront version 1 (deployed)')
    expect(r.stdout).toMatch(new RegExp(`^cedra-storefront version 1: deployment ${d.ID.slice(0, 8)} successful \\(Deployment completed successfully\\)$`, 'm'))
    expect(sb.readState().jobs['cedra-storefront'].versions[1].stable).toBe(true)
  })

  it('a promoted rollout that fails: exit 1 with Nomad\'s reason (rolled back)', async () => {
    deployed('aaaaaaaaaaaa')
    deployed('bbbbbbbbbbbb')
    sb.setState({ outcome: 'failed' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^cedra-storefront version 1: deployment [0-9a-f]{8} failed: Failed due to unhealthy allocations - rolling back to job version 0; Nomad's rollback is done: version 2 \(the specification of version 0\), deployment [0-9a-f]{8} successful$/m)
    // A failed release is recorded, never tagged.
    expect(sb.commands('nomad').filter((c) => c.startsWith('job tag'))).toEqual([])
    expect(record()[0]).toMatchObject({ version: 1, outcome: 'failed' })
    expect(record()[0].tag).toBeUndefined()
  })

  it('nothing to promote (the latest deployment is over): a clear message, exit 1, no promote call', async () => {
    deployed('aaaaaaaaaaaa')
    const before = sb.commands('nomad').length
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/✗ nothing to promote: its latest deployment [0-9a-f]{8} \(version 0\) is successful: Deployment completed successfully\./)
    expect(r.stderr).toContain('npx tsx deploy/deploy_storefront.mts')
    expect(scriptCalls(before)).toEqual([LOCK, 'job deployments -latest -json cedra-storefront'])
  })

  it('nothing to promote (the job is not deployed): a clear message, exit 1', async () => {
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('✗ nothing to promote: cedra-storefront is not deployed on http://127.0.0.1:4646.')
    expect(scriptCalls(0)).toEqual([LOCK, 'job deployments -latest -json cedra-storefront'])
  })

  it('a canary that is not healthy yet: Nomad refuses, exit 1 with its reason, nothing promoted', async () => {
    deployed('aaaaaaaaaaaa')
    sb.setState({ polls: 100_000 })
    deployed('bbbbbbbbbbbb', 0)
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/the canary of cedra-storefront version 1 is not healthy yet \(Task group "storefront" has 0\/1 healthy allocations\): nothing was promoted/)
    const d = sb.readState().jobs['cedra-storefront'].deployments[1]
    expect(d.TaskGroups.storefront.Promoted).toBe(false)
  })

  it('--timeout bounds the wait after the promotion: exit 1, it goes on in Nomad', async () => {
    deployed('aaaaaaaaaaaa')
    deployed('bbbbbbbbbbbb')
    sb.setState({ polls: 100_000 })
    const r = await sb.run(SCRIPT, ['--timeout', '1'])
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/still running after 1s \(--timeout\); it goes on in Nomad/)
  })

  it('a refused token: exit 2, nothing promoted', async () => {
    deployed('aaaaaaaaaaaa')
    deployed('bbbbbbbbbbbb')
    sb.setState({ mode: 'forbidden' })
    const before = sb.commands('nomad').length
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/refused the token \(403\): check NOMAD_TOKEN/)
    expect(scriptCalls(before)).toEqual([LOCK]) // taking the job's lock already meets the 403
  })

  it('--dry-run prints the commands and runs nothing; --help prints the header', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run'])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('nomad job promote -detach cedra-storefront')
    expect(r.stdout).toContain('# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/cedra-storefront/lock')
    expect(r.stdout).toContain('nomad job tag apply -name "storefront-$IMAGE_TAG" -description "$DESCRIPTION" -version "$VERSION" cedra-storefront')
    expect(r.stdout).toContain(`nomad var get -item history ${RECORD}`)
    const h = await sb.run(SCRIPT, ['--help'])
    expect(h.stdout).toMatch(/^promote_storefront: promote the healthy canary/)
    for (const s of ['Usage: npx tsx deploy/promote_storefront.mts', 'Needs: nomad CLI', 'NOMAD_TOKEN', 'DEPLOY_POLL_SECONDS', '--timeout D', 'Exit: 0'])
      expect(h.stdout).toContain(s)
    expect(sb.calls()).toEqual([])
  })
})
