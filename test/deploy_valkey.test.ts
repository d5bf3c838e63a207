// deploy_valkey.mts, run as a user runs it, against the nomad test double.
import { execFileSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

const SCRIPT = 'deploy_valkey.mts'
const JOBFILE = path.join(root, 'jobs/valkey.nomad')
// The Vault variables: the cluster's version decides them (2.0.5 by default: workload identity).
const VAR = '-var=vault_secret=secret/data/cedra/prod -var=vault_auth=identity -var=vault_role=cedra-storefront'
const PLAN = `job plan ${VAR} ${JOBFILE}`
// The job's lock, taken before the plan (its holder file's random path normalised).
const LOCK = 'var lock -early-return -shell=false nomad/jobs/valkey/lock @HOLDER sh -c echo locked; exec cat >/dev/null'
const RECORD = 'nomad/jobs/valkey/releases'
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

describe('deploy_valkey: the main path', () => {
  it('plans, runs with the plan\'s check-index, follows the deployment, and reminds the volume and the Vault secret', async () => {
    const r = await sb.run(SCRIPT)
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    const k = kit()
    expect(nomadCalls()).toEqual([
      LOCK,
      PLAN,
      `job run -check-index 0 -detach ${VAR} ${JOBFILE}`,
      'job history -json valkey',
      'job deployments -latest -json valkey',
      'job deployments -latest -json valkey',
      // successful: tagged valkey-<kit commit>, then recorded (no record yet: check-index 0)
      'job history -json valkey',
      `job tag apply -name valkey-${k} -description the kit at commit ${k} (jobs/valkey.nomad), by ${BY} -version 0 valkey`,
      `var get -out json ${RECORD}`,
      'var put -check-index 0 -in=json -out=none -',
    ])
    expect(sb.readState().jobs.valkey.versions[0].versionTag).toMatchObject({ Name: `valkey-${k}` })
    expect(JSON.parse(sb.readState().vars[RECORD].Items.history)).toEqual([expect.objectContaining({ job: 'valkey', version: 0, action: 'deploy', outcome: 'deployed', kit: k, tag: `valkey-${k}` })])
    expect(r.stdout).toContain(`Release: valkey-${k} = valkey version 0 (deployed)`)
    expect(r.stdout).toMatch(/^valkey version 0: deployment [0-9a-f]{8} successful/m)
    expect(r.stderr).toContain('note: Valkey needs the host volume "valkey_data" on a client (deploy/deploy_valkey_volume.mts) and valkey_password in Vault at secret/cedra/prod (deploy/put_storefront_secrets.mts)')
    // Nomad 2.0: the volume script registers the volume; no block to add by hand (the block: below, on 1.9).
    expect(r.stdout).toContain('  - the host volume "valkey_data" on the client that runs it: deploy/deploy_valkey_volume.mts creates /opt/valkey_data and registers it (Nomad 1.10+: no configuration edit, no restart).')
    expect(r.stdout).not.toContain('host_volume "valkey_data" {')
    expect(r.stdout).toContain('valkey_password in Vault at secret/cedra/prod: npx tsx deploy/put_storefront_secrets.mts')
    expect(r.stdout).toContain('nomad alloc logs -f -job valkey exporter')
    expect(sb.calls('vault')).toEqual([])
  })

  it('passes the Vault path from STOREFRONT_VAULT_PATH (the one put_storefront_secrets writes) and the data dir to the reminder', async () => {
    const r = await sb.run(SCRIPT, [], { env: { STOREFRONT_VAULT_PATH: 'kv/cedra/staging', VALKEY_DATA_DIR: '/srv/valkey' } })
    expect(r.code).toBe(0)
    expect(nomadCalls()[0]).toBe(LOCK)
    expect(nomadCalls()[1]).toBe(`job plan -var=vault_secret=kv/data/cedra/staging -var=vault_auth=identity -var=vault_role=cedra-storefront ${JOBFILE}`)
    expect(r.stdout).toContain('deploy/deploy_valkey_volume.mts creates /srv/valkey and registers it')
  })

  it('on Nomad 1.9 (no dynamic host volumes) reminds the host_volume block to add by hand, with VALKEY_DATA_DIR', async () => {
    sb.setState({ version: '1.9.7' })
    const r = await sb.run(SCRIPT, [], { env: { VALKEY_DATA_DIR: '/srv/valkey' } })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('  client {\n    host_volume "valkey_data" {\n      path      = "/srv/valkey"\n      read_only = false\n    }\n  }')
  })

  it('does not run the job when the plan shows no change, and says so', async () => {
    expect((await sb.run(SCRIPT)).code).toBe(0)
    const before = sb.commands('nomad').length
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('valkey is already up to date (the plan shows no change): nothing was run')
    expect(nomadCalls().slice(before)).toEqual([LOCK, PLAN])
    expect(sb.readState().jobs.valkey.versions).toHaveLength(1)
  })

  it('stops without overwriting when the job changed between plan and run (check-index)', async () => {
    expect((await sb.run(SCRIPT)).code).toBe(0)
    sb.setState({ raceAfterPlan: true })
    const r = await sb.run(SCRIPT, [], { env: { STOREFRONT_VAULT_PATH: 'secret/cedra/other' } })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/valkey changed on the cluster since the plan \(.*conflicting job modify index.*\): nothing was overwritten/)
  })

  it('exits 1 with Nomad\'s reason when the deployment fails', async () => {
    expect((await sb.run(SCRIPT)).code).toBe(0)
    sb.setState({ outcome: 'failed' })
    const r = await sb.run(SCRIPT, [], { env: { STOREFRONT_VAULT_PATH: 'secret/cedra/other' } })
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/valkey version 1: deployment [0-9a-f]{8} failed: Failed due to unhealthy allocations/)
  })

  it('never hands VAULT_TOKEN (or any secret) to nomad: token in its environment only, nothing in argv or output', async () => {
    const r = await sb.run(SCRIPT, [], { env: { NOMAD_TOKEN: 'canary-nomad-token-8001', VAULT_TOKEN: 'canary-vault-token-8002', CONSUL_HTTP_TOKEN: 'canary-consul-8003' } })
    expect(r.code).toBe(0)
    for (const call of sb.calls('nomad')) {
      expect(call.env.NOMAD_TOKEN).toBe('canary-nomad-token-8001')
      expect(call.env.VAULT_TOKEN).toBeUndefined()
      expect(call.env.CONSUL_HTTP_TOKEN).toBeUndefined()
      expect(call.argv.join(' ')).not.toMatch(/canary-|-token/)
    }
    expect(r.output).not.toMatch(/canary-|REDACTED/)
  })
})

describe('deploy_valkey: flags, configuration and a refusing cluster', () => {
  it('--help prints the header: purpose, usage, tools, variables, exit codes', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_valkey: deploy Valkey 8\.0/)
    for (const s of ['Usage: npx tsx deploy/deploy_valkey.mts', 'Needs: nomad CLI', 'NOMAD_TOKEN', 'STOREFRONT_VAULT_PATH (default secret/cedra/prod', 'VALKEY_DATA_DIR', 'deploy_valkey_volume.mts', 'put_storefront_secrets.mts', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
    expect(sb.calls()).toEqual([])
  })

  it('--dry-run runs nothing and prints the plan and run commands, even without nomad', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run'], { env: { PATH: sb.pathWithout('nomad'), NOMAD_TOKEN: 'canary-nomad-token-8004' }, cwd: root })
    expect(r.code).toBe(0)
    expect(sb.calls()).toEqual([])
    expect(r.stderr).toContain('warning: a real run would refuse: nomad not found on PATH')
    expect(r.stdout).toContain(`nomad job plan ${VAR} jobs/valkey.nomad`)
    expect(r.stdout).toContain(`nomad job run -check-index "$JOB_MODIFY_INDEX_FROM_PLAN" -detach ${VAR} jobs/valkey.nomad`)
    expect(r.stdout).toContain('NOMAD_TOKEN="$NOMAD_TOKEN"')
    expect(r.stdout).toContain('# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/valkey/lock')
    expect(r.stdout).toContain(`nomad job tag apply -name valkey-${kit()} -description 'the kit at commit ${kit()} (jobs/valkey.nomad), by ${BY}' -version "$VERSION" valkey`)
    expect(r.stdout).toContain(`nomad var get -item history ${RECORD}`)
    expect(r.output).not.toContain('canary-')
  })

  it('refuses without nomad on PATH (exit 2)', async () => {
    const r = await sb.run(SCRIPT, [], { env: { PATH: sb.pathWithout('nomad') } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad not found on PATH \(install the Nomad CLI/)
  })

  it('reports ALL invalid variables in one message, before any nomad call', async () => {
    const r = await sb.run(SCRIPT, ['--timeout', 'soon'], { env: { NOMAD_ADDR: undefined, STOREFRONT_VAULT_PATH: 'secret/data/cedra/prod', VALKEY_DATA_DIR: 'data;rm' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('NOMAD_ADDR is not set')
    expect(r.stderr).toContain('STOREFRONT_VAULT_PATH="secret/data/cedra/prod": give the path as the vault CLI takes it, without /data/')
    expect(r.stderr).toContain('VALKEY_DATA_DIR="data;rm" must be an absolute path')
    expect(r.stderr).toContain('--timeout soon: give a positive duration')
    expect(sb.calls()).toEqual([])
  })

  it('a refused token stops at the lock, before the plan, with exit 2 and says which variable to fix', async () => {
    sb.setState({ mode: 'forbidden' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad var lock nomad\/jobs\/valkey\/lock: Nomad at http:\/\/127\.0\.0\.1:4646 refused the token \(403\): check NOMAD_TOKEN/)
    expect(nomadCalls()).toEqual([LOCK])
  })

  it('an unreachable cluster stops at the plan with exit 1, a connection problem', async () => {
    sb.setState({ mode: 'unreachable' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cannot reach Nomad at http:\/\/127\.0\.0\.1:4646: a connection problem/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    // The first call that reaches the cluster (the versions) finds it unreachable: nothing is planned.
    expect(sb.commands('nomad', { probes: true })).toEqual(['version', 'server members -json'])
  })
})
