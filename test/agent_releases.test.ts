// The agent's releases end to end (issue "Releases you can return to"): REAL go builds uploaded over a
// REAL sshd by deploy_binary, rolled out by deploy_nomad through the nomad double (job versions,
// deployments with auto_revert, version tags, the release record in a Nomad Variable, the job lock),
// brought back by revert_agent. The binary on the server is never renamed: each release is a file.
import { createHash } from 'node:crypto'
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, root, sandbox, type Sandbox } from './helpers.ts'
import { ensureUsers, goEnv, requireTools, startSshd, userDir, USERS, type Sshd } from './sshd.ts'

const FIXTURE = path.join(root, 'test/fixtures/agent')
const JOB = 'agent-economique'
const RECORD = 'nomad/jobs/agent-economique/releases'
let sshd: Sshd
let sb: Sandbox
let remote: string
const cleanup: (() => unknown)[] = []

beforeAll(async () => {
  requireTools()
  ensureUsers()
  sshd = await startSshd()
})
afterAll(async () => {
  await sshd?.stop()
})
beforeEach(() => {
  sb = sandbox()
  const base = userDir(USERS.dash)
  cleanup.push(() => rmSync(base, { recursive: true, force: true }))
  remote = `${base}/data`
})
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

/** A copy of the fixture whose binary differs (another version string). */
function variant(version: string) {
  const dir = path.join(sb.dir, `src-${version}`)
  if (existsSync(dir)) return dir
  cpSync(FIXTURE, dir, { recursive: true })
  const main = path.join(dir, 'main.go')
  writeFileSync(main, readFileSync(main, 'utf8').replace('"fixture-1"', JSON.stringify(version)))
  return dir
}
const env = (more: Record<string, string> = {}) => ({ ...goEnv, ...sshd.env(USERS.dash), AGENT_REMOTE_DIR: remote, ...more })
/** deploy_binary of the fixture built as `version`: the sha256 of that build. */
async function upload(version: string, more: Record<string, string> = {}) {
  const r = await sb.run('deploy_binary.mts', ['--json'], { env: env({ AGENT_SOURCE_DIR: variant(version), ...more }) })
  expect(r.code, r.stderr).toBe(0)
  return (await jsonResult(r.stdout)).binary.sha256 as string
}
const deployNomad = (args: string[] = [], more: Record<string, string> = {}) => sb.run('deploy_nomad.mts', ['--json', ...args], { env: env(more) })
const revertAgent = (args: string[] = []) => sb.run('revert_agent.mts', ['--json', ...args], { env: env() })
/** The release files on the server, by sha256. */
const files = () => readdirSync(remote).filter((f) => /^agent-[0-9a-f]{64}$/.test(f)).map((f) => f.slice(6)).sort()
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex')
/** What the job runs now: its current version's meta and command, from the double's answers. */
function current() {
  const versions = JSON.parse(sb.nomad('job', 'history', '-json', JOB)) as { Version: number; Meta: Record<string, string> | null; VersionTag?: { Name: string } | null; TaskGroups: { Tasks: { Config: { command?: string } }[] }[] }[]
  const v = versions.sort((a, b) => b.Version - a.Version)[0]
  return { version: v.Version, sha: v.Meta?.binary_sha256, command: v.TaskGroups[0].Tasks[0].Config.command, versions }
}
const record = () => JSON.parse(sb.readState().vars[RECORD].Items.history) as { version: number; sha256: string; outcome: string; action: string; tag?: string; by: string }[]

describe('agent releases: each build a file, each deploy a job version, any kept one back by name', () => {
  it('v1 -> v2 -> v3 (fails, Nomad reverts to v2) -> revert_agent to v1 by tag -> cron changes nothing -> 8 more builds keep 5 + the running one', async () => {
    // v1: uploaded, then deployed as job version 0, tagged, recorded.
    const v1 = await upload('v1')
    expect(files()).toEqual([v1])
    let r = await deployNomad()
    expect(r.code, r.stderr).toBe(0)
    let res = await jsonResult(r.stdout)
    expect(res).toMatchObject({ outcome: 'deployed', version: 0, tag: `agent-${v1.slice(0, 12)}`, binary: { path: `${remote}/agent-${v1}`, sha256: v1 } })
    expect(current()).toMatchObject({ version: 0, sha: v1, command: `${remote}/agent-${v1}` })
    expect(sha(`${remote}/agent-${v1}`)).toBe(v1)
    expect(record()[0]).toMatchObject({ version: 0, sha256: v1, outcome: 'deployed', action: 'deploy', tag: `agent-${v1.slice(0, 12)}` })

    // v2: a new file beside v1; a new job version.
    const v2 = await upload('v2')
    expect(files()).toEqual([v1, v2].sort())
    r = await deployNomad()
    expect(r.code, r.stderr).toBe(0)
    expect(current()).toMatchObject({ version: 1, sha: v2, command: `${remote}/agent-${v2}` })

    // v3 fails its health gate: Nomad registers v2's specification again (auto_revert), and the kit says so.
    const v3 = await upload('v3')
    expect(files()).toEqual([v1, v2, v3].sort())
    sb.setState({ outcome: 'failed' })
    r = await deployNomad()
    expect(r.code).toBe(1)
    res = await jsonResult(r.stdout)
    expect(res).toMatchObject({ outcome: 'failed', version: 2 })
    expect(res.tag).toBeUndefined()
    sb.setState({ outcome: 'successful' })
    expect(current()).toMatchObject({ version: 3, sha: v2, command: `${remote}/agent-${v2}` })
    expect(record()[0]).toMatchObject({ version: 2, sha256: v3, outcome: 'failed' })
    // The failed build is not offered again as new: deploy_nomad from cron re-applies what runs (v2).
    r = await deployNomad()
    expect(r.code, r.stderr).toBe(0)
    expect((await jsonResult(r.stdout)).outcome).toBe('unchanged')
    expect(current().version).toBe(3)

    // revert_agent back to v1 by its tag: a Nomad deployment of v1's specification, no file renamed.
    r = await revertAgent([`agent-${v1.slice(0, 12)}`])
    expect(r.code, r.stderr).toBe(0)
    res = await jsonResult(r.stdout)
    expect(res).toMatchObject({ outcome: 'deployed', version: 4, tag: `agent-${v1.slice(0, 12)}` })
    expect(current()).toMatchObject({ version: 4, sha: v1, command: `${remote}/agent-${v1}` })
    // The tag moved to the version that runs it now.
    expect(current().versions.filter((v) => v.VersionTag?.Name === `agent-${v1.slice(0, 12)}`).map((v) => v.Version)).toEqual([4])
    expect(record()[0]).toMatchObject({ version: 4, sha256: v1, action: 'revert', outcome: 'deployed' })
    expect(files()).toEqual([v1, v2, v3].sort()) // nothing renamed, nothing removed

    // cron: deploy_nomad alone changes nothing and says what runs.
    r = await deployNomad()
    expect(r.code, r.stderr).toBe(0)
    expect((await jsonResult(r.stdout)).outcome).toBe('unchanged')
    expect(r.stderr).toContain(`runs version 4: agent-${v1.slice(0, 12)}`)
    expect(current().version).toBe(4)

    // Eight more builds, none deployed: the newest five stay, and v1 (it runs).
    const later: string[] = []
    for (let i = 4; i < 12; i++) later.push(await upload(`v${i}`))
    expect(files()).toEqual([...later.slice(-5), v1].sort())
  }, 240_000)

  it('revert_agent without a release goes back to the previous good one; --list names them; a removed binary is refused (exit 2)', async () => {
    const v1 = await upload('v1')
    expect((await deployNomad()).code).toBe(0)
    const v2 = await upload('v2')
    expect((await deployNomad()).code).toBe(0)
    let r = await revertAgent(['--list'])
    expect(r.code, r.stderr).toBe(0)
    // With --json the table goes to stderr, and the list is the result's `releases`.
    expect(r.stderr).toMatch(new RegExp(`^1\\s+agent-${v2.slice(0, 12)}\\s+${v2.slice(0, 12)}\\s+.*yes\\s+kept\\s+\\(current\\) \\(last good\\)$`, 'm'))
    expect(r.stderr).toMatch(new RegExp(`^0\\s+agent-${v1.slice(0, 12)}\\s+${v1.slice(0, 12)}\\s+`, 'm'))
    expect((await jsonResult(r.stdout)).releases.map((x: { version: number; tag: string; current: boolean }) => [x.version, x.tag, x.current])).toEqual([[1, `agent-${v2.slice(0, 12)}`, true], [0, `agent-${v1.slice(0, 12)}`, false]])
    r = await revertAgent()
    expect(r.code, r.stderr).toBe(0)
    expect(current()).toMatchObject({ version: 2, sha: v1 })
    // The current release is refused, and so is one whose binary was removed (DEPLOY_KEEP_RELEASES).
    r = await revertAgent([v1.slice(0, 12)])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('is the current release of agent-economique')
    const versionsBefore = current().versions.length
    for (let i = 3; i < 6; i++) await upload(`v${i}`, { DEPLOY_KEEP_RELEASES: '2' })
    expect(files()).not.toContain(v2)
    r = await revertAgent([`agent-${v2.slice(0, 12)}`])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/is no longer on the servers/)
    expect(current().versions.length).toBe(versionsBefore)
  }, 180_000)

  it('deploy_nomad --binary deploys a named build; an unknown one is refused before anything changes (exit 2)', async () => {
    const v1 = await upload('v1')
    const v2 = await upload('v2')
    let r = await deployNomad(['--binary', v1.slice(0, 10)])
    expect(r.code, r.stderr).toBe(0)
    expect(current()).toMatchObject({ version: 0, sha: v1 })
    // v2 was staged but v1 deployed on purpose: the default now deploys the staged v2.
    r = await deployNomad()
    expect(r.code, r.stderr).toBe(0)
    expect(current()).toMatchObject({ version: 1, sha: v2 })
    r = await deployNomad(['--binary', 'ffffffffffff'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('--binary ffffffffffff is not a build recorded on the servers')
    expect(current().version).toBe(1)
  }, 120_000)

  it('a job deployed before releases (a fixed path, no meta): cron changes nothing; deploy_binary + deploy_nomad move it to a release', async () => {
    // The job as the kit deployed it before: the fixed path, registered through the double's CLI.
    sb.nomad('job', 'run', '-detach', `-var=binary_path=${remote}/agent`, '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', path.join(root, 'jobs/agent.nomad'))
    let r = await deployNomad()
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('deployed before releases were named by their sha256')
    expect(current().version).toBe(0)
    const v1 = await upload('v1')
    r = await deployNomad()
    expect(r.code, r.stderr).toBe(0)
    expect(current()).toMatchObject({ version: 1, sha: v1, command: `${remote}/agent-${v1}` })
  }, 120_000)
})
