// The allocations of the nomad test double (test/stubs/nomad-allocs.mjs), run directly as the kit
// would run the CLI: placed by deployments, moved on by deployment status reads, and read back with
// `job allocs`, `alloc status` and `alloc logs` in the shapes and with the messages of the real CLI.
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

const AGENT = path.join(root, 'jobs/agent.nomad') // restart mode "delay", 3 attempts in 5m
const VALKEY = path.join(root, 'jobs/valkey.nomad') // two tasks: valkey, exporter
let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})

type Stub = Record<string, any>
function nomad(...args: string[]) {
  const r = spawnSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646', NOMAD_CLI_SHOW_HINTS: 'false' }, encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}
const allocs = (job: string): Stub[] => JSON.parse(nomad('job', 'allocs', '-json', job).stdout)
const latest = (job: string): Stub => JSON.parse(nomad('job', 'deployments', '-latest', '-json', job).stdout)
/** Status reads until the latest deployment is no longer running (the double moves on one step per read). */
function settle(job: string) {
  for (let i = 0; i < 10; i++) if (latest(job).Status !== 'running') return latest(job)
  throw new Error(`${job}: the deployment is still running`)
}
function runAgent(binary: string) {
  expect(nomad('job', 'run', '-detach', `-var=binary_path=${binary}`, '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', AGENT).code).toBe(0)
}
/** A job of two instances (by default) updated by one canary, whose restart policy is the service default (mode "fail"). */
function webJob(image: string, { count = 2, canary = 1 } = {}) {
  const file = path.join(sb.dir, 'web.nomad')
  writeFileSync(file, `job "web" {\n  group "web" {\n    count = ${count}\n    update {\n      canary      = ${canary}\n      auto_revert = true\n    }\n    task "web" {\n      driver = "docker"\n      config {\n        image = "${image}"\n      }\n    }\n  }\n}\n`)
  expect(nomad('job', 'run', '-detach', file).code).toBe(0)
}

describe('allocations follow their deployment', () => {
  it('placed by job run (pending, no task states yet), running after a status read, healthy when the deployment succeeds', () => {
    runAgent('/root/data/agent')
    let [a] = allocs('agent-economique')
    expect(allocs('agent-economique')).toHaveLength(1)
    expect(a).toMatchObject({ Name: 'agent-economique.agent[0]', JobID: 'agent-economique', JobVersion: 0, TaskGroup: 'agent', NodeName: 'node-1', DesiredStatus: 'run', ClientStatus: 'pending', TaskStates: null, DeploymentStatus: null })
    expect(a.ID).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
    expect(latest('agent-economique').Status).toBe('running')
    ;[a] = allocs('agent-economique')
    expect(a.ClientStatus).toBe('running')
    expect(a.TaskStates.agent.State).toBe('running')
    expect(a.DeploymentStatus).toBeNull()
    expect(settle('agent-economique').Status).toBe('successful')
    ;[a] = allocs('agent-economique')
    expect(a.DeploymentStatus).toMatchObject({ Healthy: true, Canary: false })
    expect(a.TaskStates.agent.Events.map((e: Stub) => e.Type)).toEqual(['Received', 'Task Setup', 'Started'])
  })

  it('a failed deployment (outcome "failed"): its allocation is unhealthy, its task restarts as the job says (mode "delay"); the rollback replaces it', () => {
    runAgent('/root/data/agent')
    settle('agent-economique')
    sb.setState({ outcome: 'failed' })
    runAgent('/root/data/agent2')
    // The latest deployment is the rollback's, version 2; version 1's failed.
    expect(settle('agent-economique')).toMatchObject({ JobVersion: 2, Status: 'successful' })
    const failed = (JSON.parse(nomad('job', 'deployments', '-json', 'agent-economique').stdout) as Stub[]).find((x) => x.JobVersion === 1)!
    expect(failed.Status).toBe('failed')
    expect(failed.StatusDescription).toBe('Failed due to unhealthy allocations - rolling back to job version 0')
    const list = allocs('agent-economique')
    const bad = list.filter((a) => a.DeploymentStatus?.Healthy === false)
    expect(bad).toHaveLength(1)
    expect(bad[0].JobVersion).toBe(failed.JobVersion)
    const task = bad[0].TaskStates.agent
    expect(task.Restarts).toBe(3)
    expect(task.Failed).toBe(false)
    expect(task.Events.filter((e: Stub) => e.Type === 'Terminated').at(-1)).toMatchObject({ ExitCode: 1, DisplayMessage: 'Exit Code: 1' })
    expect(task.Events.filter((e: Stub) => e.Type === 'Restarting').at(-1).DisplayMessage).toBe('Exceeded allowed attempts, applying a delay - Task restarting in 4m0s')
    // The rollback (version 2, the specification of version 0) replaced it: stopped, killed, linked to its replacement.
    expect(bad[0]).toMatchObject({ DesiredStatus: 'stop', DesiredDescription: 'alloc is being updated due to job update', ClientStatus: 'complete' })
    const next = list.find((a) => a.ID === bad[0].NextAllocation)!
    expect(next).toMatchObject({ JobVersion: 2, DesiredStatus: 'run', ClientStatus: 'running', DeploymentStatus: { Healthy: true } })
    // alloc status -json names the deployment (the list stub does not).
    expect(JSON.parse(nomad('alloc', 'status', '-json', bad[0].ID).stdout).DeploymentID).toBe(failed.ID)
    expect(bad[0]).not.toHaveProperty('DeploymentID')
  })

  it('a canary that fails (restart mode "fail"): listed in PlacedCanaries, failed, Healthy false, "Not Restarting", then stopped', () => {
    webJob('nginx:1')
    settle('web')
    const old = allocs('web').map((a) => a.ID)
    sb.setState({ outcome: 'failed' })
    webJob('nginx:2')
    const d = latest('web')
    const [canaryID] = d.TaskGroups.web.PlacedCanaries
    const canary = allocs('web').find((a) => a.ID === canaryID)!
    expect(canary.DeploymentStatus).toEqual({ Healthy: null, Timestamp: '0001-01-01T00:00:00Z', Canary: true, ModifyIndex: 0 })
    settle('web')
    const failed = nomad('job', 'deployments', '-json', 'web')
    const mine = (JSON.parse(failed.stdout) as Stub[]).find((x) => x.ID === d.ID)!
    expect(mine.Status).toBe('failed')
    const a = JSON.parse(nomad('alloc', 'status', '-json', canaryID.slice(0, 8)).stdout)
    expect(a).toMatchObject({ ID: canaryID, DeploymentID: d.ID, Job: { Version: 1 }, ClientStatus: 'failed', ClientDescription: 'Failed tasks', DesiredStatus: 'stop', DesiredDescription: 'alloc not needed due to job update' })
    expect(a.DeploymentStatus).toMatchObject({ Healthy: false, Canary: true })
    expect(a.TaskStates.web).toMatchObject({ State: 'dead', Failed: true, Restarts: 2 })
    expect(a.TaskStates.web.Events.at(-1)).toMatchObject({ Type: 'Not Restarting', FailsTask: true, DisplayMessage: 'Exceeded allowed attempts 2 in interval 30m0s and mode is "fail"' })
    expect(a.TaskStates.web.Events).toHaveLength(10) // the client keeps the last 10
    // The old instances were updated in place by the rollback: same IDs, the new version.
    const now = allocs('web').filter((x) => x.DesiredStatus === 'run')
    expect(now.map((x) => x.ID).sort()).toEqual([...old].sort())
    expect(now.every((x) => x.JobVersion === 2 && x.DeploymentStatus?.Healthy === true)).toBe(true)
  })

  it('promotion: the canary is no longer one, the old allocations are stopped, the deployment places the rest', () => {
    webJob('nginx:1')
    settle('web')
    webJob('nginx:2')
    latest('web')
    expect(latest('web').StatusDescription).toBe('Deployment is running but requires manual promotion')
    expect(nomad('job', 'promote', 'web').code).toBe(0)
    expect(settle('web').Status).toBe('successful')
    const list = allocs('web')
    const running = list.filter((a) => a.DesiredStatus === 'run')
    expect(running).toHaveLength(2)
    expect(running.every((a) => a.JobVersion === 1 && a.DeploymentStatus.Canary === false && a.DeploymentStatus.Healthy === true)).toBe(true)
    const stopped = list.filter((a) => a.DesiredStatus === 'stop')
    expect(stopped.map((a) => [a.JobVersion, a.ClientStatus])).toEqual([[0, 'complete'], [0, 'complete']])
    expect(stopped.map((a) => a.DesiredDescription).sort()).toEqual(['alloc is being updated due to job update', 'alloc not needed due to job update'])
  })

  it('a newer version while a canary waits: that deployment is cancelled, its canary stopped, a new canary placed', () => {
    webJob('nginx:1')
    settle('web')
    webJob('nginx:2')
    const first = latest('web')
    webJob('nginx:3')
    const second = latest('web')
    expect(second.JobVersion).toBe(2)
    const list = allocs('web')
    const [oldCanary] = first.TaskGroups.web.PlacedCanaries
    expect(list.find((a) => a.ID === oldCanary)).toMatchObject({ JobVersion: 1, DesiredStatus: 'stop', DesiredDescription: 'alloc not needed due to job update', ClientStatus: 'complete' })
    expect(list.find((a) => a.ID === second.TaskGroups.web.PlacedCanaries[0])).toMatchObject({ JobVersion: 2, DesiredStatus: 'run', DeploymentStatus: { Canary: true } })
    expect(list.filter((a) => a.JobVersion === 0 && a.DesiredStatus === 'run')).toHaveLength(2)
  })

  it('an in-place update (the inplace knob) to fewer instances: the same allocations go on, the extra ones are no longer needed', () => {
    webJob('nginx:1', { count: 3, canary: 0 })
    settle('web')
    const before = allocs('web')
    sb.setState({ inplace: true })
    webJob('nginx:1', { count: 1, canary: 0 })
    const after = allocs('web')
    expect(after.map((a) => a.ID).sort()).toEqual(before.map((a) => a.ID).sort())
    const run = after.filter((a) => a.DesiredStatus === 'run')
    expect(run).toHaveLength(1)
    expect(run[0]).toMatchObject({ JobVersion: 1, ClientStatus: 'running', DeploymentStatus: null })
    expect(after.filter((a) => a.DesiredStatus === 'stop').map((a) => [a.JobVersion, a.DesiredDescription])).toEqual([[0, 'alloc not needed due to job update'], [0, 'alloc not needed due to job update']])
  })

  it('a Vault secret the cluster does not grant (2.0, no role): the tasks wait on their template and never start', () => {
    expect(nomad('job', 'run', '-detach', '-var=vault_auth=token', VALKEY).code).toBe(0)
    expect(settle('valkey').Status).toBe('failed')
    const [a] = allocs('valkey')
    expect(a).toMatchObject({ ClientStatus: 'pending', DeploymentStatus: { Healthy: false } })
    expect(a.TaskStates.valkey.Events.at(-1)).toMatchObject({ Type: 'Template', DisplayMessage: 'Missing: vault.read(secret/data/cedra/prod)' })
    const r = nomad('alloc', 'logs', '-stderr', a.ID, 'valkey')
    expect(r.code).toBe(1)
    expect(r.stderr).toBe('Failed to read stderr file: error reading file: Unexpected response code: 404 (task "valkey" not started yet. No logs available)\n')
  })
})

describe('nomad job allocs', () => {
  it('-json: a list of api.AllocationListStub, indented by 4, newest CreateIndex first; no DeploymentID', () => {
    runAgent('/root/data/agent')
    settle('agent-economique')
    runAgent('/root/data/agent2')
    const r = nomad('job', 'allocs', '-json', 'agent-economique')
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^\[\n {4}\{\n {8}"ID": "[0-9a-f-]{36}",\n {8}"EvalID": /)
    const list = JSON.parse(r.stdout) as Stub[]
    expect(Object.keys(list[0])).toEqual(['ID', 'EvalID', 'Name', 'Namespace', 'NodeID', 'NodeName', 'JobID', 'JobType', 'JobVersion', 'TaskGroup', 'DesiredStatus', 'DesiredDescription',
      'ClientStatus', 'ClientDescription', 'TaskStates', 'DeploymentStatus', 'FollowupEvalID', 'NextAllocation', 'RescheduleTracker', 'PreemptedAllocations', 'PreemptedByAllocation',
      'CreateIndex', 'ModifyIndex', 'CreateTime', 'ModifyTime'])
    expect(list.map((a) => a.JobVersion)).toEqual([1, 0])
    expect(list[0].CreateIndex).toBeGreaterThan(list[1].CreateIndex)
  })

  it('the job must exist (JobIDByPrefix), one argument; -json and -t exclude each other; a job without allocations prints []', () => {
    let r = nomad('job', 'allocs', 'nope')
    expect([r.code, r.stderr]).toEqual([1, 'No job(s) with prefix or ID "nope" found\n'])
    r = nomad('job', 'allocs')
    expect([r.code, r.stderr]).toEqual([1, "This command takes one argument: <job>\nFor additional help try 'nomad job allocs -help'\n"])
    runAgent('/root/data/agent')
    r = nomad('job', 'allocs', '-json', '-t', '{{range .}}{{.ID}}{{end}}', 'agent-economique')
    expect([r.code, r.stderr]).toEqual([1, 'Both json and template formatting are not allowed\n'])
    // A prefix names the job.
    expect(nomad('job', 'allocs', '-t', '{{range .}}{{.JobID}} {{.ClientStatus}}{{end}}', 'agent-eco').stdout).toBe('agent-economique pending\n')
  })

  it('the table (short IDs) and -verbose (full IDs, eval and node names)', () => {
    runAgent('/root/data/agent')
    const [a] = allocs('agent-economique')
    const short = nomad('job', 'allocs', 'agent-economique').stdout.split('\n')
    expect(short[0]).toMatch(/^ID {8}Node ID {3}Task Group {2}Version {2}Desired {2}Status {3}Created {2}Modified$/)
    expect(short[1]).toMatch(new RegExp(`^${a.ID.slice(0, 8)}  4f3c2b1a  agent       0        run      pending  `))
    const verbose = nomad('job', 'allocs', '-verbose', 'agent-economique').stdout
    expect(verbose).toContain(`${a.ID}  ${a.EvalID}  ${a.NodeID}  node-1`)
  })

  it('the CLI prints its own api structs: TaskState.TaskHandle up to 1.9, DesiredTransition grows in 1.11', () => {
    sb.setState({ version: '1.9.7' })
    runAgent('/root/data/agent')
    latest('agent-economique')
    expect(allocs('agent-economique')[0].TaskStates.agent).toHaveProperty('TaskHandle', null)
    let a = JSON.parse(nomad('alloc', 'status', '-json', allocs('agent-economique')[0].ID).stdout)
    expect(Object.keys(a.DesiredTransition)).toEqual(['Migrate', 'Reschedule'])
    sb.setState({ cliVersion: '2.0.5' })
    expect(allocs('agent-economique')[0].TaskStates.agent).not.toHaveProperty('TaskHandle')
    a = JSON.parse(nomad('alloc', 'status', '-json', allocs('agent-economique')[0].ID).stdout)
    expect(Object.keys(a.DesiredTransition)).toEqual(['Migrate', 'Reschedule', 'ForceReschedule', 'NoShutdownDelay', 'MigrateDisablePlacement'])
  })
})

describe('nomad alloc status', () => {
  it('by ID prefix; the messages for an unknown one and a one-character one', () => {
    runAgent('/root/data/agent')
    const [a] = allocs('agent-economique')
    const text = nomad('alloc', 'status', a.ID.slice(0, 8)).stdout
    expect(text).toMatch(new RegExp(`^ID {18}= ${a.ID}$`, 'm'))
    expect(text).toMatch(/^Deployment Health {3}= unset$/m)
    let r = nomad('alloc', 'status', 'ffffffff')
    expect([r.code, r.stderr]).toEqual([1, 'No allocation(s) with prefix or id "ffffffff" found\n'])
    // An odd number of hex digits loses its last one (sanitizeUUIDPrefix).
    r = nomad('alloc', 'status', 'fffffff')
    expect(r.stderr).toBe('No allocation(s) with prefix or id "ffffff" found\n')
    r = nomad('alloc', 'status', 'f')
    expect([r.code, r.stderr]).toEqual([1, 'Identifier must contain at least two characters.\n'])
  })
})

describe('nomad alloc logs', () => {
  /** A failed agent deployment: its unhealthy allocation. */
  function failedAgent() {
    runAgent('/root/data/agent')
    settle('agent-economique')
    sb.setState({ outcome: 'failed', failureLog: 'Error: cannot connect to valkey at 10.0.0.5:6379' })
    runAgent('/root/data/agent2')
    settle('agent-economique')
    return allocs('agent-economique').find((a) => a.DeploymentStatus?.Healthy === false)!
  }

  it('<alloc> <task>: stdout by default; -stderr prints the task\'s stderr on the CLI\'s stdout, once per run', () => {
    const a = failedAgent()
    let r = nomad('alloc', 'logs', '-stderr', a.ID, 'agent')
    expect(r.code).toBe(0)
    expect(r.stdout).toBe('Error: cannot connect to valkey at 10.0.0.5:6379\n'.repeat(4)) // the first run and 3 restarts
    r = nomad('alloc', 'logs', a.ID.slice(0, 8))
    expect(r.stdout.split('\n')[0]).toBe('agent: starting (agent-economique version 1)')
    expect(r.stdout).not.toContain('Error:')
    // -tail: the last -n lines (10 by default); -n alone does not tail.
    expect(nomad('alloc', 'logs', '-stderr', '-tail', '-n', '1', a.ID).stdout).toBe('Error: cannot connect to valkey at 10.0.0.5:6379\n')
    expect(nomad('alloc', 'logs', '-stderr', '-n', '1', a.ID).stdout.split('\n')).toHaveLength(5)
    r = nomad('alloc', 'logs', '-tail', '-n', '1', '-c', '5', a.ID)
    expect([r.code, r.stderr]).toEqual([1, 'Failed to read stdout file: both -n and -c set\n'])
    r = nomad('alloc', 'logs', '-stderr', '-stdout', a.ID)
    expect([r.code, r.stderr]).toEqual([1, 'Unable to support both stdout and stderr\n'])
    // -job: a running allocation at random (here the rollback's; the others are stopped).
    for (let i = 0; i < 8; i++) expect(nomad('alloc', 'logs', '-job', 'agent-economique').stdout).toMatch(/^agent: starting \(agent-economique version 2\)\n/)
    // -f with no stream flag follows both from their end: nothing already written (the double does not wait).
    r = nomad('alloc', 'logs', '-f', a.ID)
    expect([r.code, r.stdout]).toEqual([0, ''])
  })

  it('the task: -task is checked against the job, a positional one by the client, none needed for a single task', () => {
    expect(nomad('job', 'run', '-detach', '-var=vault_auth=identity', '-var=vault_role=r', VALKEY).code).toBe(0)
    settle('valkey')
    const [a] = allocs('valkey')
    let r = nomad('alloc', 'logs', a.ID)
    expect([r.code, r.stderr]).toEqual([1, `Failed to validate task: Allocation "${a.ID.slice(0, 8)}" is running the following tasks:\n  * valkey\n  * exporter\n\nPlease specify the task.\n`])
    r = nomad('alloc', 'logs', '-task', 'nope', a.ID)
    expect([r.code, r.stderr]).toEqual([1, 'Failed to validate task: Could not find task named: nope, found:\nvalkey\nexporter\n'])
    r = nomad('alloc', 'logs', a.ID, 'nope')
    expect([r.code, r.stderr]).toEqual([1, 'Failed to read stdout file: error reading file: Unexpected response code: 400 (unknown task name "nope")\n'])
    // -task wins over the positional task.
    r = nomad('alloc', 'logs', '-task', 'exporter', a.ID, 'valkey')
    expect(r.stdout).toMatch(/^exporter: starting/)
    expect(nomad('alloc', 'logs', a.ID, 'exporter').stdout).toMatch(/^exporter: starting/)
  })

  it('the arguments: one or two; -job takes a job (prefix); a bad -n; an unknown or too short allocation ID', () => {
    runAgent('/root/data/agent')
    let r = nomad('alloc', 'logs')
    expect([r.code, r.stderr]).toEqual([1, "An allocation ID is required\nFor additional help try 'nomad alloc logs -help'\n"])
    r = nomad('alloc', 'logs', '-job')
    expect(r.stderr).toBe("A job ID is required\nFor additional help try 'nomad alloc logs -help'\n")
    r = nomad('alloc', 'logs', 'a', 'b', 'c')
    expect([r.code, r.stderr]).toEqual([1, "This command takes one or two arguments\nFor additional help try 'nomad alloc logs -help'\n"])
    r = nomad('alloc', 'logs', '-job', 'nope')
    expect([r.code, r.stderr]).toEqual([1, 'No job(s) with prefix or ID "nope" found\n'])
    r = nomad('alloc', 'logs', '-n', 'ten', '-job', 'agent-economique')
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^invalid value "ten" for flag -n: parse error\n/)
    r = nomad('alloc', 'logs', '0123abcd')
    expect([r.code, r.stderr]).toEqual([1, 'No allocation(s) with prefix or id "0123abcd" found\n'])
    r = nomad('alloc', 'logs', '0')
    expect([r.code, r.stderr]).toEqual([1, 'Alloc ID must contain at least two characters.\n'])
    // No task states yet (no status read since the run: the client has not reported the task).
    r = nomad('alloc', 'logs', '-job', 'agent-eco', 'agent')
    expect(r.stderr).toBe('Failed to read stdout file: error reading file: Unexpected response code: 400 (unknown task name "agent")\n')
    latest('agent-economique')
    r = nomad('alloc', 'logs', '-job', 'agent-eco', 'agent')
    expect([r.code, r.stdout]).toEqual([0, 'agent: starting (agent-economique version 0)\nagent: ready\n'])
  })

  it('-group: from 1.10.0 (with -job); 1.9 does not know the flag', () => {
    runAgent('/root/data/agent')
    latest('agent-economique')
    let r = nomad('alloc', 'logs', '-job', '-group', 'nope', 'agent-economique')
    expect([r.code, r.stderr]).toEqual([1, 'Error fetching allocations: task group "nope" doesn\'t exist or it has no allocations\n'])
    expect(nomad('alloc', 'logs', '-job', '-group', 'agent', 'agent-economique').stdout).toMatch(/^agent: starting/)
    sb.setState({ cliVersion: '1.9.7' })
    r = nomad('alloc', 'logs', '-job', '-group', 'agent', 'agent-economique')
    expect([r.code, r.stderr]).toEqual([1, 'flag provided but not defined: -group\n'])
  })
})
