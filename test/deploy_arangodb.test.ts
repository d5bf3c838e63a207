// deploy_arangodb.mts, run as a user runs it, against the nomad test double: the Nomad Variable check
// above the point of no return, then plan -> run -check-index -> follow (the kit's shared sequence).
import { execFileSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

const SCRIPT = 'deploy_arangodb.mts'
const JOB = 'arangodb-agent-economique'
const JOBFILE = path.join(root, 'jobs/arangodb.nomad')
const VAR = `nomad/jobs/${JOB}`
const CANARY = 'canary-stored-arango-pw-5150'
const CHECK = `var get -out go-template -template {{.ModifyIndex}}{{range $k, $v := .Items}} {{$k}}{{end}} ${VAR}`
// The job's lock, taken after the Variable check, before the plan (its holder file's random path normalised).
const LOCK = `var lock -early-return -shell=false nomad/jobs/${JOB}/lock @HOLDER sh -c echo locked; exec cat >/dev/null`
const RECORD = `nomad/jobs/${JOB}/releases`
// Who the tag's description names: the OS user and host (the sandbox's env has no CI variables).
const BY = `${os.userInfo().username}@${os.hostname()}`
/** The kit's own commit as the script reads it (12 digits, "-dirty" when a tracked file changed): the release's name. */
function kit(): string {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8' }).trim()
  return `${git('rev-parse', '--short=12', 'HEAD')}${git('status', '--porcelain', '--untracked-files=no') ? '-dirty' : ''}`
}
let sb: Sandbox
/** The nomad calls, the lock's holder file normalised to @HOLDER. */
const nomadCalls = () => sb.commands('nomad').map((c) => c.replace(/@\S+\/holder\.json/, '@HOLDER'))
beforeEach(() => {
  sb = sandbox()
})

function storePassword(items: Record<string, string> = { root_password: CANARY }) {
  sb.setState({ index: 20, vars: { [VAR]: { Namespace: 'default', Path: VAR, CreateIndex: 20, ModifyIndex: 20, CreateTime: 1, ModifyTime: 1, Items: items } } })
}

describe('deploy_arangodb: the main path', () => {
  it('checks the Variable (names only), plans, runs with the plan\'s check-index, follows to success', async () => {
    storePassword()
    const r = await sb.run(SCRIPT)
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    const k = kit()
    expect(nomadCalls()).toEqual([
      CHECK,
      LOCK,
      `job plan ${JOBFILE}`,
      `job run -check-index 0 -detach ${JOBFILE}`,
      `job history -json ${JOB}`,
      `job deployments -latest -json ${JOB}`,
      `job deployments -latest -json ${JOB}`,
      // successful: tagged arangodb-<kit commit>, then recorded (no record yet: check-index 0)
      `job history -json ${JOB}`,
      `job tag apply -name arangodb-${k} -description the kit at commit ${k} (jobs/arangodb.nomad), by ${BY} -version 0 ${JOB}`,
      `var get -out json ${RECORD}`,
      'var put -check-index 0 -in=json -out=none -',
    ])
    expect(sb.readState().jobs[JOB].versions[0].versionTag).toMatchObject({ Name: `arangodb-${k}` })
    expect(JSON.parse(sb.readState().vars[RECORD].Items.history)).toEqual([expect.objectContaining({ job: JOB, version: 0, action: 'deploy', outcome: 'deployed', kit: k, tag: `arangodb-${k}` })])
    expect(r.stdout).toContain(`Release: arangodb-${k} = ${JOB} version 0 (deployed)`)
    expect(r.stderr).toContain(`${VAR} holds root_password (modify index 20)`)
    expect(r.stdout).toMatch(new RegExp(`^${JOB} version 0: deployment [0-9a-f]{8} successful`, 'm'))
    expect(r.stdout).toContain('the host volume "arangodb_data" on the client that runs it: deploy/deploy_arango_volume.mts creates /opt/arangodb_data and registers it')
    expect(r.stdout).not.toContain('then restart Nomad on that server')
    expect(r.stdout).toContain(`nomad alloc logs -f -job ${JOB}`)
    expect(r.stdout).toContain(`nomad var get -item root_password ${VAR}`)
    // The password is never read, let alone shown, and never a -var.
    for (const call of sb.calls('nomad')) expect(call.argv.join(' ')).not.toMatch(/-item|-var|canary/)
    expect(r.output).not.toContain(CANARY)
  })

  it('names ARANGO_DATA_DIR, the directory deploy_arango_volume creates: registered on Nomad 1.10+, a host_volume block to add by hand before', async () => {
    storePassword()
    let r = await sb.run(SCRIPT, [], { env: { ARANGO_DATA_DIR: '/srv/arango/' } })
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('deploy/deploy_arango_volume.mts creates /srv/arango and registers it (Nomad 1.10+: no configuration edit, no restart)')
    expect(r.stdout).not.toContain('host_volume "arangodb_data" {')
    const box = sandbox()
    box.setState({ ...sb.readState(), version: '1.9.7', jobs: {} })
    r = await box.run(SCRIPT, [], { env: { ARANGO_DATA_DIR: '/srv/arango/' } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('path      = "/srv/arango"')
  })

  it('does not run the job when the plan shows no change, and says so', async () => {
    storePassword()
    expect((await sb.run(SCRIPT)).code).toBe(0)
    const before = sb.commands('nomad').length
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`${JOB} is already up to date (the plan shows no change): nothing was run`)
    expect(nomadCalls().slice(before)).toEqual([CHECK, LOCK, `job plan ${JOBFILE}`])
    expect(sb.readState().jobs[JOB].versions).toHaveLength(1)
  })

  it('stops without overwriting when the job changed between plan and run (check-index)', async () => {
    storePassword()
    sb.setState({ raceAfterPlan: true })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(new RegExp(`${JOB} changed on the cluster since the plan \\(.*job already exists.*\\): nothing was overwritten`))
  })

  it('exits 1 with Nomad\'s reason when the deployment fails', async () => {
    storePassword()
    sb.setState({ outcome: 'failed' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/deployment [0-9a-f]{8} failed: Failed due to unhealthy allocations/)
  })
})

describe('deploy_arangodb: refused before anything changes', () => {
  it('refuses (exit 2) when the Nomad Variable does not exist: no plan, no run, says what to run first', async () => {
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`the Nomad Variable ${VAR} does not exist (or NOMAD_TOKEN may not read it`)
    expect(r.stderr).toContain('run first: npx tsx deploy/put_arangodb_password.mts')
    expect(sb.commands('nomad')).toEqual([CHECK])
    expect(sb.readState().jobs ?? {}).toEqual({})
  })

  it('refuses (exit 2) when the Variable has no root_password item, naming the items it has (not their values)', async () => {
    storePassword({ other: CANARY })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`the Nomad Variable ${VAR} has no root_password item (items: other)`)
    expect(sb.commands('nomad')).toEqual([CHECK])
    expect(r.output).not.toContain(CANARY)
  })

  it('a refused token (403) stops at the first call with exit 2 and names NOMAD_TOKEN', async () => {
    storePassword()
    sb.setState({ mode: 'forbidden' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/NOMAD_TOKEN/)
    expect(sb.commands('nomad')).toEqual([CHECK])
  })

  it('an unreachable cluster stops at the first call with exit 1, a connection problem', async () => {
    sb.setState({ mode: 'unreachable' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cannot reach Nomad at http:\/\/127\.0\.0\.1:4646: a connection problem/)
    expect(sb.commands('nomad')).toEqual([CHECK])
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })

  it('refuses without nomad on PATH (exit 2)', async () => {
    const r = await sb.run(SCRIPT, [], { env: { PATH: sb.pathWithout('nomad') } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad not found on PATH \(install the Nomad CLI/)
  })

  it('reports ALL invalid settings in one message', async () => {
    const r = await sb.run(SCRIPT, ['--timeout', 'soon'], { env: { NOMAD_ADDR: 'https://nomad.test:4646', ARANGO_DATA_DIR: 'data/arango' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('NOMAD_TOKEN is not set')
    expect(r.stderr).toContain('ARANGO_DATA_DIR="data/arango" must be an absolute path')
    expect(r.stderr).toContain('--timeout soon: give a positive duration')
    expect(sb.calls()).toEqual([])
  })
})

describe('deploy_arangodb: flags', () => {
  it('--help prints the header', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_arangodb: deploy the Agent Economique ArangoDB job/)
    for (const s of ['Usage: npx tsx deploy/deploy_arangodb.mts', 'Needs: nomad CLI', 'NOMAD_TOKEN', 'ARANGO_DATA_DIR', 'DEPLOY_POLL_SECONDS', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
  })

  it('--dry-run with .env.example and no nomad installed prints the whole plan, runs nothing', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run', '--env-file', path.join(root, '.env.example')], {
      env: { PATH: sb.pathWithout('nomad'), NOMAD_ADDR: undefined }, cwd: root,
    })
    expect(r.code).toBe(0)
    expect(r.stderr).toMatch(/warning: a real run would refuse: nomad not found on PATH/)
    expect(r.stdout.split('\n')).toEqual([
      expect.stringMatching(/^export NOMAD_ADDR=https:\/\/nomad\.example\.internal:4646 NOMAD_CACERT=.* NOMAD_TOKEN="\$NOMAD_TOKEN"$/),
      `nomad var get -out go-template -template '{{.ModifyIndex}}{{range $k, $v := .Items}} {{$k}}{{end}}' ${VAR}`,
      'nomad job plan jobs/arangodb.nomad',
      'nomad job run -check-index "$JOB_MODIFY_INDEX_FROM_PLAN" -detach jobs/arangodb.nomad',
      `# then follow the deployment: nomad job deployments -latest ${JOB}`,
      `# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/${JOB}/lock`,
      '# once it is successful (Nomad 1.9+), VERSION being the version the run registered:',
      `nomad job tag apply -name arangodb-${kit()} -description 'the kit at commit ${kit()} (jobs/arangodb.nomad), by ${BY}' -version "$VERSION" ${JOB}`,
      '# every outcome is written to the release record (nomad var put -check-index); read it with:',
      `nomad var get -item history ${RECORD}`,
      '',
    ])
    expect(r.output).not.toContain('00000000-0000-0000-0000-000000000000')
  })

  it('--dry-run calls no nomad command at all', async () => {
    storePassword()
    const r = await sb.run(SCRIPT, ['--dry-run'])
    expect(r.code).toBe(0)
    expect(sb.calls()).toEqual([])
  })
})
