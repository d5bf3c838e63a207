// The deployment sequence every job script shares: plan (above the point of no return) -> run
// -check-index -> follow the deployment to its outcome; and the commands a dry run prints instead.
import path from 'node:path'
import type { ProcessOutput } from 'zx'
import { EXIT, exit, fail, refuse, report, root, shq, step } from './env.mts'
import { flowProblem, type Flow } from './identity.mts'
import { nomadFailed, nomadVersions, shown, type Nomad } from './nomad.mts'

export type Plan = { job: string; file: string; vars: string[]; index: number; unchanged: boolean; created: boolean }

/**
 * `nomad job plan`: proves the cluster answers and accepts the token, shows the diff, gives the modify
 * index. For a job that reads Vault (`flow`), a plan the cluster refuses or warns about for its Vault
 * or Consul flow is refused with the fix, before anything is built or run.
 */
export async function planJob(nomad: Nomad, job: string, file: string, vars: Record<string, string> = {}, flow?: Flow): Promise<Plan> {
  report({ job })
  const { server } = await nomadVersions(nomad)
  const varArgs = Object.entries(vars).map(([k, v]) => `-var=${k}=${v}`)
  const out = await nomad.$`nomad job plan ${varArgs} ${file}`
  const problem = flow && flowProblem(`${out.stderr}\n${out.stdout}`, flow, server)
  if (problem) refuse([`nomad job plan ${path.basename(file)}: ${problem} (nothing was run)`])
  // 0: no allocation changes (also in-place updates), 1: allocations change, 255: error.
  if (out.exitCode !== 0 && out.exitCode !== 1) {
    if (/Error getting job struct|Error parsing job file|Unset variable|Undefined -var variable/.test(out.stderr))
      refuse([`${path.relative(root, file)} does not parse: ${out.stderr.trim().split('\n').slice(-2).join(' ')}`,
        `check it with: nomad job validate ${[...varArgs, shown(file)].map(shq).join(' ')}`])
    nomadFailed(nomad, `nomad job plan ${path.basename(file)}`, out, false)
  }
  const index = out.stdout.match(/^Job Modify Index: (\d+)$/m)
  if (!index) fail(`nomad job plan printed no "Job Modify Index" line:\n${out.stdout}`)
  const diff = out.stdout.slice(0, out.stdout.indexOf('Job Modify Index:')).trimEnd()
  console.error(diff.replace(/^/gm, '    '))
  // The scheduler could not place it (a host volume no client declares, no capacity...): running it
  // would leave a blocked deployment. Refuse, with the scheduler's reasons.
  if (/WARNING: Failed to place/.test(out.stdout)) {
    const reasons = diff.split('\n').map((l) => l.trim().replace(/^[-*]\s*/, '')).filter((l) => /^Constraint|^Task Group/.test(l))
    refuse([`nomad cannot place ${job} (nothing was run): ${reasons.join('; ')}` +
      (/host volume/.test(diff) ? ' — declare the host_volume on a client by hand (DEPLOYMENT_GUIDE.md, section 2) and restart it' : '')])
  }
  return {
    job, file, vars: varArgs, index: Number(index[1]),
    unchanged: !planChanges(out),
    created: out.stdout.startsWith('+ Job: '),
  }
}

/**
 * Whether a `nomad job plan` shows a change: its exit code (0 no allocation change, 1 changes, 255
 * error: command/job_plan.go) and its first diff line, the job's marker ("+ Job:" new, "+/- Job:"
 * edited, bare "Job:" unchanged), since an in-place update exits 0 too. undefined: the plan failed.
 */
export function planChanges(out: ProcessOutput): boolean | undefined {
  if (out.exitCode !== 0 && out.exitCode !== 1) return undefined
  return !(out.exitCode === 0 && out.stdout.startsWith('Job: '))
}

/** `nomad job run -check-index N -detach`: a concurrent change aborts instead of being overwritten. */
export async function runJob(nomad: Nomad, plan: Plan): Promise<number> {
  report({ acted: true })
  const out = await nomad.$`nomad job run -check-index ${plan.index} -detach ${plan.vars} ${plan.file}`
  if (!out.ok) {
    // command/job_run.go@v2.0.5 (and @v1.6.10): "Enforcing job modify index N: job exists with
    // conflicting job modify index: M", then "Job not updated", exit 1.
    if (/Enforcing job modify index/.test(out.stderr))
      fail(`${plan.job} changed on the cluster since the plan (${out.stderr.match(/Enforcing job modify index[^\n)]*/)![0]}): nothing was overwritten; run again to plan against the new version`)
    const problem = flowProblem(out.stderr, 'token', nomad.versions?.server ?? '')
    if (problem) fail(`nomad job run: ${problem}; Nomad registered nothing`)
    nomadFailed(nomad, 'nomad job run', out, true)
  }
  const version = await versionAfter(nomad, plan.job, plan.index)
  if (version === undefined) fail(`nomad job history ${plan.job} shows no version registered after modify index ${plan.index}: run it again`)
  report({ version })
  return version
}

/**
 * The job version a registration made after modify index `index` (-check-index guarantees ours is the
 * first): the oldest version whose JobModifyIndex is greater; undefined when none was registered. Not "the current version": a deploy that
 * lands between our run and this read would otherwise be reported as ours.
 */
export async function versionAfter(nomad: Nomad, job: string, index: number): Promise<number | undefined> {
  const out = await nomad.$`nomad job history -json ${job}`
  if (!out.ok) nomadFailed(nomad, 'nomad job history', out, true)
  let versions: { Version: number; JobModifyIndex: number }[]
  try {
    versions = JSON.parse(out.stdout)
  } catch {
    fail(`nomad job history -json ${job} printed no JSON`)
  }
  return versions.filter((v) => v.JobModifyIndex > index).sort((a, b) => a.Version - b.Version)[0]?.Version
}

export type Outcome = { outcome: 'successful' | 'canary' | 'failed' | 'timeout' | 'none'; line: string; deployment?: string; allocation?: Allocation; version?: number }
type Allocation = { id: string; task: string; event?: string }

/**
 * Follow the deployment of a job version until it succeeds, fails, or waits for promotion.
 * (`deployment status -monitor` always exits 0 and an attached `job run` blocks while a canary waits.)
 */
export async function followDeployment(nomad: Nomad, job: string, version: number, timeoutSeconds: number): Promise<Outcome> {
  const every = Number(process.env.DEPLOY_POLL_SECONDS ?? 5) * 1000 // checked by timeoutSeconds()
  const began = Date.now()
  const deadline = began + timeoutSeconds * 1000
  let last = ''
  for (;;) {
    const out = await nomad.$`nomad job deployments -latest -json ${job}`
    if (!out.ok) nomadFailed(nomad, 'nomad job deployments', out, true)
    let d = out.stdout.trim() && out.stdout.trim() !== 'null' ? JSON.parse(out.stdout) : undefined
    if (d && d.JobVersion > version) {
      // A newer version: the auto-revert of OUR failed deployment, or someone else's deploy. Ours says which.
      const all = await nomad.$`nomad job deployments -json ${job}`
      if (!all.ok) nomadFailed(nomad, 'nomad job deployments', all, true)
      const mine = (JSON.parse(all.stdout || '[]') as { JobVersion: number }[] | null)?.find((x) => x.JobVersion === version)
      if (!mine) return { outcome: 'failed', line: `${job} version ${version} was superseded by version ${d.JobVersion} (deployment ${d.ID.slice(0, 8)}): someone else deployed meanwhile`, deployment: d.ID }
      d = mine
    }
    if (d && d.JobVersion === version) {
      const id = d.ID.slice(0, 8)
      // A deployment whose canaries Nomad promotes by itself was created "pending automatic promotion"
      // (scheduler/reconciler/reconcile_cluster.go@v2.0.5, scheduler/reconcile.go@v1.6.10): it never waits
      // for a person. The description is the signal: `job deployments -json` prints api.DeploymentState,
      // which has no AutoPromote field in any release (api/deployments.go@v1.6.10, @v2.0.5).
      const auto = d.StatusDescription === 'Deployment is running pending automatic promotion'
      const groups = Object.values(d.TaskGroups ?? {}) as { DesiredCanaries: number; DesiredTotal: number; HealthyAllocs: number; Promoted: boolean }[]
      // One line per change (status, description or healthy count), with the time since the follow began.
      const healthy = `${groups.reduce((n, g) => n + g.HealthyAllocs, 0)}/${groups.reduce((n, g) => n + (g.DesiredCanaries > 0 && !g.Promoted ? g.DesiredCanaries : g.DesiredTotal), 0)} healthy`
      const progress = `${d.Status}: ${d.StatusDescription} (${healthy})`
      if (progress !== last) console.error(`    deployment ${id} ${progress}, after ${Math.round((Date.now() - began) / 1000)}s`)
      last = progress
      if (d.Status === 'successful') return { outcome: 'successful', line: `${job} version ${version}: deployment ${id} successful (${d.StatusDescription})`, deployment: d.ID }
      if (['failed', 'cancelled'].includes(d.Status)) {
        const line = `${job} version ${version}: deployment ${id} ${d.Status}: ${d.StatusDescription}`
        // auto_revert: Nomad registers the last stable version again as a new one; follow that too.
        const back = d.StatusDescription.match(/rolling back to job version (\d+)/)
        const allocation = await unhealthyAllocation(nomad, job, version)
        return { outcome: 'failed', line: back ? `${line}; ${await followRollback(nomad, job, version, Number(back[1]), deadline, every)}` : line, deployment: d.ID, allocation }
      }
      const waiting = groups.filter((g) => g.DesiredCanaries > 0 && !g.Promoted)
      if (d.Status === 'running' && !auto && waiting.length && waiting.every((g) => g.HealthyAllocs >= g.DesiredCanaries))
        return { outcome: 'canary', line: `${job} version ${version}: canary healthy, deployment ${id} waiting for promotion`, deployment: d.ID }
    }
    if (Date.now() + every > deadline)
      return { outcome: 'timeout', line: `${job} version ${version}: deployment ${d?.JobVersion === version ? `${d.ID.slice(0, 8)} still ${d.Status}` : 'not started'} after ${timeoutSeconds}s (--timeout); it goes on in Nomad`, deployment: d?.ID }
    await new Promise((r) => setTimeout(r, every))
  }
}

/**
 * The allocation that made the deployment of `version` fail: one its deployment found unhealthy
 * (DeploymentStatus.Healthy false; api.AllocationListStub has no DeploymentID, api/allocations.go@v2.0.5
 * and @v1.6.10), newest first as `job allocs` lists them; its failing task (failed, or restarted) and
 * last event. Undefined when none is found or the read fails: the outcome line stands without it.
 */
async function unhealthyAllocation(nomad: Nomad, job: string, version: number): Promise<Allocation | undefined> {
  const out = await nomad.$`nomad job allocs -json ${job}`
  if (!out.ok) return undefined
  type Stub = { ID: string; JobVersion: number; DeploymentStatus?: { Healthy?: boolean | null } | null
    TaskStates?: Record<string, { Failed?: boolean; Restarts?: number; Events?: { Type?: string; DisplayMessage?: string }[] | null }> | null }
  let list: Stub[]
  try {
    list = JSON.parse(out.stdout) ?? []
  } catch {
    return undefined
  }
  const a = list.find((x) => x.JobVersion === version && x.DeploymentStatus?.Healthy === false)
  if (!a) return undefined
  const tasks = Object.entries(a.TaskStates ?? {})
  const [task, state] = tasks.find(([, t]) => t.Failed || (t.Restarts ?? 0) > 0) ?? tasks[0] ?? ['<task>', undefined]
  // The last event that says why (an exit code, a template waiting for Vault...), not the routine ones
  // (nomad/structs/structs.go@v2.0.5 TaskEvent types).
  const routine = ['Received', 'Task Setup', 'Started', 'Killing', 'Killed', 'Restarting', 'Restart Signaled', 'Signaling', 'Downloading Artifacts', 'Leader Task Dead']
  const why = (state?.Events ?? []).filter((e) => e.DisplayMessage && !routine.includes(e.Type ?? '')).at(-1)
  return { id: a.ID, task, event: why?.DisplayMessage }
}

/** Follow the rollback Nomad started after `version` failed, to its end or the deadline: one clause. */
async function followRollback(nomad: Nomad, job: string, version: number, target: number, deadline: number, every: number): Promise<string> {
  console.error(`    following Nomad's rollback to the specification of version ${target}`)
  for (;;) {
    const out = await nomad.$`nomad job deployments -latest -json ${job}`
    if (!out.ok) nomadFailed(nomad, 'nomad job deployments', out, true)
    const d = out.stdout.trim() && out.stdout.trim() !== 'null' ? JSON.parse(out.stdout) : undefined
    if (d && d.JobVersion > version && d.Status !== 'running')
      return d.Status === 'successful'
        ? `Nomad's rollback is done: version ${d.JobVersion} (the specification of version ${target}), deployment ${d.ID.slice(0, 8)} successful`
        : `the rollback failed too: version ${d.JobVersion}, deployment ${d.ID.slice(0, 8)} ${d.Status}: ${d.StatusDescription}`
    if (Date.now() + every > deadline)
      return `the rollback to version ${target} is still under way after the --timeout; it goes on in Nomad`
    await new Promise((r) => setTimeout(r, every))
  }
}

/** The shared sequence: plan (already done above the point of no return) -> run -> follow -> one-line outcome. */
export async function deployPlanned(nomad: Nomad, plan: Plan, timeoutSeconds: number): Promise<Outcome> {
  if (plan.unchanged) {
    console.log(`${plan.job} is already up to date (the plan shows no change): nothing was run`)
    return reportOutcome({ outcome: 'none', line: `${plan.job} already up to date (the plan shows no change): nothing was run` }, { quiet: true })
  }
  step(`Run ${plan.job} (check-index ${plan.index})`)
  const version = await runJob(nomad, plan)
  step(`Follow the deployment of ${plan.job} version ${version}`)
  const result = reportOutcome(await followDeployment(nomad, plan.job, version, timeoutSeconds))
  if (result.outcome === 'failed' || result.outcome === 'timeout') process.exitCode = EXIT.failed
  return { ...result, version }
}

/**
 * The deployment's outcome: its line on stdout (and the allocation that failed it, with the commands
 * for its events and logs), and in the --json result, where canary-waiting is told apart from deployed
 * (both exit 0).
 */
export function reportOutcome(result: Outcome, { quiet = false } = {}): Outcome {
  const outcome = ({ successful: 'deployed', canary: 'canary-waiting', failed: 'failed', timeout: 'timeout', none: 'unchanged' } as const)[result.outcome]
  const a = result.allocation
  const logs = a && `nomad alloc logs -stderr ${a.id.slice(0, 8)} ${a.task}`
  report({ outcome, message: result.line, ...(result.deployment ? { deployment: result.deployment } : {}), ...(a ? { allocation: { id: a.id, task: a.task, ...(a.event ? { event: a.event } : {}), logs: logs! }, next: [logs!, `nomad alloc status ${a.id.slice(0, 8)}`] } : {}) })
  if (quiet) return result
  console.log(result.line)
  if (a) console.log(`The allocation that failed it: ${a.id.slice(0, 8)} (task ${a.task}${a.event ? `, last event: ${a.event}` : ''})
  nomad alloc status ${a.id.slice(0, 8)}     (its events)
  ${logs}     (what the task printed)`)
  return result
}

/** The commands a dry run prints instead of running (one per line, copy-pasteable). */
export function planCommands(nomad: Nomad, file: string, vars: Record<string, string> = {}) {
  // A value that names a shell variable ($NODE_IDS) stays one for the shell that pastes it.
  const v = Object.entries(vars).map(([k, val]) => ` ${val.includes('$') ? `"-var=${k}=${val}"` : shq(`-var=${k}=${val}`)}`).join('')
  const f = shq(shown(file))
  return [nomad.exportLine, `nomad job plan${v} ${f}`, `nomad job run -check-index "$JOB_MODIFY_INDEX_FROM_PLAN" -detach${v} ${f}`]
}


/** --plan: what a deploy would do, from the plan just printed; nothing changes (exit 0). */
export function reportPlan(plan: Plan, would = ''): never {
  const line = plan.unchanged
    ? `--plan: ${plan.job} already runs this specification: a deploy would change nothing`
    : `--plan: a deploy would ${plan.created ? 'create' : 'register a new version of'} ${plan.job}${would} (nomad job run -check-index ${plan.index}; the diff is above)`
  report({ outcome: 'planned', message: line, changes: !plan.unchanged })
  console.log(line)
  console.log('Nothing was changed (--plan asks the cluster, read-only: a token with read-job, or plan-job on Nomad 1.11.2+, is enough).')
  exit(EXIT.done)
}
