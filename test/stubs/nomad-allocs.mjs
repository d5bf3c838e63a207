// The allocations of the nomad test double (test/stubs/nomad.mjs): what the scheduler places for a
// deployment, how the client reports them, and the commands that read them: `job allocs`,
// `alloc status`, `alloc logs`. Each behaviour names the source it imitates (path@tag in hashicorp/nomad).
//
// The model, per job (state.jobs[job].allocs, in creation order):
// - a deployment places its allocations when it is registered (the scheduler runs on the
//   registration's evaluation): DesiredCanaries canaries (DeploymentStatus.Canary true) for a canary
//   deployment, else `count` allocations; a running allocation of the same specification (or any,
//   with the `inplace` knob) is updated in place (same ID; new JobVersion and DeploymentID); one of
//   another specification is stopped and replaced (the new one's PreviousAllocation names it).
// - status reads move them on with their deployment (nomad.mjs advance()): the client starts them,
//   then they are healthy, or, when the deployment fails, one allocation per group is unhealthy
//   (DeploymentStatus.Healthy false) and its main task (the job's first task) behaves as the job's
//   restart block says: mode "fail" -> task dead, Failed, alloc ClientStatus "failed"; mode "delay"
//   -> the task waits to restart (State "pending"), the alloc "pending" (or "running" with a
//   sidecar that runs). A vault block the cluster cannot serve (nomad.mjs runtimeProblem) leaves
//   the tasks pending on their template ("Missing: vault.read(<path>)"): they never start.
// - promotion makes canaries plain allocations (Canary false) and stops the old ones; a failed
//   deployment stops its unpromoted canaries; a newer deployment stops the unpromoted canaries of
//   the older one. Stopped allocations keep their place in the list (DesiredStatus "stop",
//   ClientStatus "complete", or "failed" for one that had failed): Nomad lists them until GC.
// - each allocation goes to a node the scheduler finds feasible (nomad-nodes.mjs evaluation: ready,
//   eligible, in the job's datacenters and pool, constraints, drivers, host volumes). An in-place
//   update stays on its node if that node still fits the new version, else it is a destructive
//   update. A destructive update whose replacement finds no node leaves the old allocation running
//   (scheduler/generic_sched.go@v2.0.5 computePlacements: the stop is backed out, plan.PopUpdate).
//   What cannot be placed leaves the deployment blocked (d.stub.blocked): each status read tries
//   again (fill), as Nomad's blocked evaluation does when a node or a volume changes.
// Simplifications: every group runs all the job's tasks; a rolling update replaces all old
// allocations at once (no max_parallel); no rescheduling, no GC, no job purge (so `job allocs -all`
// lists the same as without it); no migration off a draining node.
//
// Knob in the state file: failureLog: "text" — what a failing task writes to stderr on each run
// (default: an "Error: cannot connect to valkey ..." line).
import { randomUUID } from 'node:crypto'
import { evaluation } from './nomad-nodes.mjs'

const ZERO = '0001-01-01T00:00:00Z' // a zero time.Time, as Go encodes it
// scheduler/structs/const.go@v2.0.5 (scheduler/generic_sched.go@v1.6.10 allocNotNeeded, allocUpdating).
const NOT_NEEDED = 'alloc not needed due to job update'
const UPDATING = 'alloc is being updated due to job update'
const TERMINAL = ['complete', 'failed', 'lost']
const DEFAULT_FAILURE = 'Error: cannot connect to valkey at 127.0.0.1:6379: dial tcp 127.0.0.1:6379: connect: connection refused'

/** The allocation model and commands, over the double's state and helpers (see nomad.mjs). */
/**
 * The job version an allocation or a deployment runs: a tracked one, else the copy the allocation keeps
 * once the version was pruned from the job's history (structs.Allocation.Job outlives job_version;
 * nomad/state/state_store.go@v2.0.5 upsertJobVersion deletes only the job_version entry).
 */
export const versionAt = (j, n) => j.versions.find((v) => v.version === n) ?? j.pruned?.find((v) => v.version === n)

export function allocations({ state, cli, flags, args, die, out, hint, findJob, version }) {
  const nowNs = () => Date.now() * 1e6
  const iso = () => new Date().toISOString()
  const allocsOf = (j) => (j.allocs ??= [])
  const live = (a) => a.DesiredStatus === 'run' && !TERMINAL.includes(a.ClientStatus)
  const isCanary = (a) => a.DeploymentStatus?.Canary === true
  const ofDeployment = (d) => allocsOf(state().jobs[d.JobID]).filter((a) => a.DeploymentID === d.ID)
  const bump = (a, index = ++state().index) => Object.assign(a, { ModifyIndex: index, AllocModifyIndex: index, ModifyTime: nowNs() })

  // ----- task events (api.TaskEvent; DisplayMessage as nomad/structs/structs.go@v2.0.5
  // PopulateEventDisplayMessage fills it in, which the HTTP API calls before it answers:
  // command/agent/job_endpoint.go@v2.0.5 jobAllocations SetEventDisplayMessages) -------------------
  const event = (Type, extra = {}) => ({ Type, Time: nowNs(), DisplayMessage: '', Details: {}, Message: '', FailsTask: false, RestartReason: '', SetupError: '', DriverError: '', DriverMessage: '',
    ExitCode: 0, Signal: 0, KillReason: '', KillTimeout: 0, KillError: '', StartDelay: 0, DownloadError: '', ValidationError: '', DiskLimit: 0, DiskSize: 0, FailedSibling: '',
    VaultError: '', TaskSignalReason: '', TaskSignal: '', GenericSource: '', ...extra })
  const received = () => event('Received', { DisplayMessage: 'Task received by client' })
  const setup = () => event('Task Setup', { Message: 'Building Task Directory', DisplayMessage: 'Building Task Directory', Details: { message: 'Building Task Directory' } })
  const started = () => event('Started', { DisplayMessage: 'Task started by client' })
  const terminated = (code) => event('Terminated', { ExitCode: code, DisplayMessage: `Exit Code: ${code}`, Details: { exit_code: String(code), signal: '0', oom_killed: 'false' } })
  // client/allocrunner/taskrunner/restarts/restarts.go@v2.0.5 (same at v1.6.10): ReasonWithinPolicy is not shown.
  const restarting = (reason, delayNs) => event('Restarting', { StartDelay: delayNs, RestartReason: reason, Details: { start_delay: String(delayNs), restart_reason: reason },
    DisplayMessage: reason === 'Restart within policy' ? `Task restarting in ${goDuration(delayNs)}` : `${reason} - Task restarting in ${goDuration(delayNs)}` })
  const notRestarting = (reason) => event('Not Restarting', { FailsTask: true, RestartReason: reason, DisplayMessage: reason, Details: { fails_task: 'true', restart_reason: reason } })
  const killing = () => event('Killing', { KillTimeout: 5e9, DisplayMessage: 'Sent interrupt. Waiting 5s before force killing', Details: { kill_timeout: '5s' } })
  const killed = () => event('Killed', { DisplayMessage: 'Task successfully killed' })
  // client/allocrunner/taskrunner/template/template.go@v2.0.5 (consulTemplateSourceName "Template", "Missing: %s").
  const missing = (path) => event('Template', { DisplayMessage: `Missing: vault.read(${path})` })
  // client/allocrunner/taskrunner/task_runner.go@v2.0.5 (and @v1.6.10): defaultMaxEvents = 10, the oldest dropped.
  const push = (ts, ...events) => { ts.Events = [...(ts.Events ?? []), ...events].slice(-10) }
  const taskState = (State, Events) => ({ State, Failed: false, Restarts: 0, LastRestart: ZERO, StartedAt: ZERO, FinishedAt: ZERO, Events })

  /** client/allocrunner/alloc_runner.go@v2.0.5 (@v1.6.10) getClientStatus. */
  function clientStatus(a) {
    const s = Object.values(a.TaskStates ?? {})
    const [status, description] = s.some((t) => t.State === 'dead' && t.Failed) ? ['failed', 'Failed tasks'] : s.some((t) => t.State === 'running') ? ['running', 'Tasks are running']
      : s.some((t) => t.State === 'pending') ? ['pending', 'No tasks have started'] : s.length ? ['complete', 'All tasks have completed'] : ['pending', '']
    a.ClientStatus = status
    a.ClientDescription = description
  }

  // ----- placement (the scheduler) --------------------------------------------------------------

  function create(j, d, v, group, nameIndex, { index, evalID, canary = false, previous, node }) {
    const a = {
      ID: randomUUID(), Namespace: 'default', EvalID: evalID, Name: `${d.JobID}.${group}[${nameIndex}]`, NodeID: node.ID, NodeName: node.Name, JobID: d.JobID, JobVersion: d.JobVersion, TaskGroup: group,
      DesiredStatus: 'run', DesiredDescription: '', ClientStatus: 'pending', ClientDescription: '',
      // No task states until the client has the allocation.
      TaskStates: null, DeploymentID: d.ID,
      // scheduler/generic_sched.go@v2.0.5 L676-682 (@v1.6.10 L697-703): a canary is marked at placement; other allocations have no DeploymentStatus until their health is known.
      DeploymentStatus: canary ? { Healthy: null, Timestamp: ZERO, Canary: true, ModifyIndex: 0 } : null,
      FollowupEvalID: '', PreviousAllocation: previous?.ID ?? '', NextAllocation: '', PreemptedAllocations: null, PreemptedByAllocation: '',
      CreateIndex: index, ModifyIndex: index, AllocModifyIndex: index, CreateTime: nowNs(), ModifyTime: nowNs(),
      stub: { key: v.key, tasks: v.tasks ?? [v.task ?? 'main'], image: v.image, restart: v.restart, secret: v.secret, count: v.count, volumes: (v.sched?.groups[group]?.volumes ?? []).map((x) => x.source) },
    }
    // nomad/state/state_store.go@v2.0.5 L4383-4390: the replaced allocation names its replacement.
    if (previous) Object.assign(previous, { NextAllocation: a.ID, ModifyIndex: index })
    allocsOf(j).push(a)
    return a
  }

  /** The server stops it; the client kills what still runs (tasks dead, not failed: "complete"). */
  function stop(a, description, index) {
    Object.assign(a, { DesiredStatus: 'stop', DesiredDescription: description })
    if (!TERMINAL.includes(a.ClientStatus)) {
      for (const ts of Object.values(a.TaskStates ?? {})) if (ts.State !== 'dead') { push(ts, killing(), killed()); Object.assign(ts, { State: 'dead', FinishedAt: iso() }) }
      if (!a.TaskStates) a.TaskStates = Object.fromEntries(a.stub.tasks.map((t) => [t, { ...taskState('dead', [killing(), killed()]), FinishedAt: iso() }]))
      clientStatus(a)
    }
    bump(a, index)
  }

  /** scheduler/generic_sched.go@v2.0.5 L406-412 (@v1.6.10 L431-437): an in-place update joins the new deployment with no health yet. */
  function inPlace(a, d, v, index, evalID) {
    Object.assign(a, { JobVersion: d.JobVersion, DeploymentID: d.ID, DeploymentStatus: null, EvalID: evalID })
    Object.assign(a.stub, { key: v.key, image: v.image, restart: v.restart, secret: v.secret })
    bump(a, index)
  }

  const nameIndex = (a) => Number(a.Name.match(/\[(\d+)\]$/)[1])
  function freeIndex(j, group) {
    const used = new Set(allocsOf(j).filter((a) => a.TaskGroup === group && a.DesiredStatus === 'run' && !TERMINAL.includes(a.ClientStatus)).map(nameIndex))
    let i = 0
    while (used.has(i)) i++
    return i
  }

  /** A scheduler evaluation for the job: its allocations that run are the proposed ones. */
  const NO_SPEC = { datacenters: ['*'], nodePool: 'default', constraints: [], groups: {} }
  const newEval = (j, v) => evaluation({ state: state(), version, spec: v.sched ?? NO_SPEC, proposed: allocsOf(j).filter(live) })

  /**
   * The allocations a new deployment `d` of version record `v` places (nomad.mjs register()):
   * unpromoted canaries of an older deployment stopped; what is beyond `count` stopped; an
   * allocation of the same specification (or any, with the `inplace` knob) updated in place if its
   * node still fits; then fill(). Returns the failures per group (api.AllocationMetric).
   */
  function place(j, d, v) {
    const index = ++state().index
    const evalID = randomUUID()
    const ev = newEval(j, v)
    for (const g of v.groups) {
      const tg = d.TaskGroups[g]
      const current = allocsOf(j).filter((a) => a.TaskGroup === g && live(a))
      // scheduler/reconcile.go@v1.6.10 cancelUnneededCanaries (L650-672; scheduler/reconciler/reconcile_cluster.go@v2.0.5):
      // the canaries of an older deployment that were never promoted are stopped.
      for (const a of current.filter(isCanary)) { stop(a, NOT_NEEDED, index); ev.release(a) }
      if (tg.DesiredCanaries > 0) continue
      let kept = 0
      for (const a of current.filter((x) => !isCanary(x))) {
        if (kept >= v.count) { stop(a, NOT_NEEDED, index); ev.release(a); continue }
        // scheduler/generic_sched.go@v2.0.5 inplaceUpdate: the same node, if it still fits; else a destructive update (fill).
        ev.release(a)
        if ((a.stub.key === v.key || state().inplace) && ev.fits(g, a.NodeID)) inPlace(a, d, v, index, evalID)
        ev.propose(a)
        kept++
      }
    }
    return fill(j, d, v, ev, index, evalID)
  }

  /**
   * What the deployment still lacks, placed if a node takes it: its canaries (before promotion),
   * else `count` allocations of its version, each older one replaced (stopped only when its
   * replacement has a node). Sets or clears d.stub.blocked; returns the failures per group.
   */
  function fill(j, d, v, ev = newEval(j, v), index = ++state().index, evalID = randomUUID()) {
    for (const g of v.groups) {
      const tg = d.TaskGroups[g]
      const canaries = tg.DesiredCanaries > 0 && !tg.Promoted
      const liveOf = (a) => a.TaskGroup === g && live(a)
      const mine = allocsOf(j).filter((a) => liveOf(a) && a.DeploymentID === d.ID)
      const old = allocsOf(j).filter((a) => liveOf(a) && a.DeploymentID !== d.ID && !isCanary(a))
      const names = old.map(nameIndex)
      for (let k = mine.length; k < (canaries ? tg.DesiredCanaries : v.count); k++) {
        if (canaries) {
          // The deployment lists its canaries' allocation IDs (api.DeploymentState PlacedCanaries).
          const node = ev.select(g)
          if (node) { const a = create(j, d, v, g, names[k] ?? k, { index, evalID, canary: true, node }); ev.propose(a); (tg.PlacedCanaries ??= []).push(a.ID) }
          continue
        }
        const previous = old.shift()
        if (previous) ev.release(previous)
        const node = ev.select(g)
        if (!node) { if (previous) ev.propose(previous); continue }
        if (previous) stop(previous, UPDATING, index)
        ev.propose(create(j, d, v, g, previous ? nameIndex(previous) : freeIndex(j, g), { index, evalID, previous, node }))
      }
    }
    if (Object.keys(ev.failures).length) d.stub.blocked = true
    else delete d.stub.blocked
    return ev.failures
  }

  /** The blocked evaluation runs again: true when the deployment now has all it needs. */
  function unblock(d) {
    const j = state().jobs[d.JobID]
    fill(j, d, versionAt(j, d.JobVersion))
    for (const [g, tg] of Object.entries(d.TaskGroups)) tg.PlacedAllocs = ofDeployment(d).filter((a) => a.TaskGroup === g).length
    return !d.stub.blocked
  }

  /**
   * What the scheduler would do, without doing it (the plan's dry run): `v` a version record (or
   * what the job file would register), `d` the deployment it would create, or the latest one to fill.
   */
  function dryRun(j, v, d, { fillOnly = false } = {}) {
    const saved = state().index
    const jc = structuredClone(j ?? { allocs: [] })
    const dc = structuredClone(d)
    const failures = fillOnly ? fill(jc, dc, v) : place(jc, dc, v)
    state().index = saved
    return failures
  }

  /**
   * Promotion (nomad/state/state_store.go@v2.0.5 L5115-5120, @v1.6.10 L4990-4995): canaries lose
   * Canary; the old allocations beyond what `count` still needs are stopped, the others replaced (fill).
   */
  function promoted(d) {
    const j = state().jobs[d.JobID]
    const v = versionAt(j, d.JobVersion)
    const index = ++state().index
    const evalID = randomUUID()
    const ev = newEval(j, v)
    let any = false
    for (const [g, tg] of Object.entries(d.TaskGroups)) {
      if (!tg.Promoted || !tg.DesiredCanaries) continue
      any = true
      for (const a of ofDeployment(d).filter((x) => x.TaskGroup === g && isCanary(x))) { a.DeploymentStatus.Canary = false; a.DeploymentStatus.ModifyIndex = index; bump(a, index) }
      // The canaries count toward `count`: that many old ones are no longer needed, the others are replaced.
      const old = allocsOf(j).filter((a) => a.TaskGroup === g && live(a) && a.DeploymentID !== d.ID)
      for (const a of old.slice(Math.max(0, v.count - tg.DesiredCanaries))) { stop(a, NOT_NEEDED, index); ev.release(a) }
    }
    if (any) fill(j, d, v, ev, index, evalID)
  }

  /** Every allocation on a node, newest first (api/nodes.go@v2.0.5 Allocations). */
  const onNode = (nodeID) => sorted(Object.values(state().jobs).flatMap((j) => allocsOf(j)).filter((a) => a.NodeID === nodeID))

  // ----- what the client reports, one status read at a time ------------------------------------

  /** The client runs the allocation's tasks (or, with a vault problem, they wait on their template). */
  function start(a) {
    if (a.TaskStates || !live(a)) return
    const blocked = a.stub.problem === 'vault'
    a.TaskStates = Object.fromEntries(a.stub.tasks.map((t) => [t, blocked
      ? taskState('pending', [received(), setup(), missing(a.stub.secret ?? 'secret/data/unknown')])
      : { ...taskState('running', [received(), setup(), started()]), StartedAt: iso() }]))
    clientStatus(a)
    bump(a)
  }

  /** A status read while the deployment runs: its allocations start. */
  function progress(d, problem) {
    for (const a of ofDeployment(d)) { if (problem) a.stub.problem = problem; start(a) }
  }

  /** Health reported (DeploymentStatus.Healthy), for the canaries only or for every allocation of the deployment. */
  function healthy(d, { canariesOnly = false } = {}) {
    for (const a of ofDeployment(d)) {
      if (!live(a) || (canariesOnly && !isCanary(a)) || a.DeploymentStatus?.Healthy === true) continue
      start(a)
      a.DeploymentStatus = { Healthy: true, Timestamp: iso(), Canary: isCanary(a), ModifyIndex: ++state().index }
      bump(a, a.DeploymentStatus.ModifyIndex)
    }
  }

  /**
   * The deployment failed: its allocations without a health verdict run the broken version (the main
   * task fails as its restart policy says); the first of each group is the unhealthy one the
   * deployment counted. Then the unpromoted canaries of the failed deployment are stopped
   * (scheduler/reconcile.go@v1.6.10 L665-672 cancelUnneededCanaries). Returns unhealthy per group.
   */
  function failed(d, problem = 'exit') {
    const unhealthy = {}
    for (const a of ofDeployment(d)) {
      if (!live(a) || a.DeploymentStatus?.Healthy === true) continue
      a.stub.problem ??= problem
      start(a)
      breakTasks(a)
      if (!unhealthy[a.TaskGroup]) {
        unhealthy[a.TaskGroup] = 1
        a.DeploymentStatus = { Healthy: false, Timestamp: iso(), Canary: isCanary(a), ModifyIndex: ++state().index }
      }
      bump(a)
    }
    const index = ++state().index
    for (const [g, tg] of Object.entries(d.TaskGroups))
      if (!tg.Promoted) for (const id of tg.PlacedCanaries ?? []) {
        const a = allocsOf(state().jobs[d.JobID]).find((x) => x.ID === id && x.TaskGroup === g)
        if (a && a.DesiredStatus === 'run') stop(a, NOT_NEEDED, index)
      }
    return unhealthy
  }

  /**
   * The main task of a broken version: it exits 1 at each start, restarted as the restart block says
   * (nomad/structs/structs.go@v2.0.5 DefaultServiceJobRestartPolicy: 2 attempts in 30m, 15s delay,
   * mode "fail"), and client/allocrunner/taskrunner/restarts/restarts.go@v2.0.5 (same text at
   * v1.6.10, v1.9.7, v1.10.5): past the attempts, mode "fail" gives up with
   * `Exceeded allowed attempts %d in interval %v and mode is "fail"`; mode "delay" waits
   * ("Exceeded allowed attempts, applying a delay") and tries again. With a vault problem the tasks
   * never started: they stay pending on their template.
   */
  function breakTasks(a) {
    if (a.stub.problem === 'vault') return
    const main = a.stub.tasks[0]
    const ts = a.TaskStates[main]
    if (ts.State !== 'running') return
    const { attempts, interval, delay, mode } = a.stub.restart ?? { attempts: 2, interval: '30m', delay: '15s', mode: 'fail' }
    const delayNs = seconds(delay) * 1e9 * 1.13 // with its jitter
    for (let i = 0; i < attempts; i++) push(ts, terminated(1), restarting('Restart within policy', delayNs), started())
    ts.Restarts = attempts
    ts.LastRestart = iso()
    if (mode === 'fail') {
      push(ts, terminated(1), notRestarting(`Exceeded allowed attempts ${attempts} in interval ${goDuration(seconds(interval) * 1e9)} and mode is "fail"`))
      Object.assign(ts, { State: 'dead', Failed: true, FinishedAt: iso() })
      // The other tasks are killed with it.
      for (const t of a.stub.tasks.slice(1)) {
        const other = a.TaskStates[t]
        if (other.State === 'dead') continue
        push(other, event('Sibling Task Failed', { FailedSibling: main, DisplayMessage: `Task's sibling "${main}" failed`, Details: { failed_sibling: main } }), killing(), killed())
        Object.assign(other, { State: 'dead', FinishedAt: iso() })
      }
    } else {
      push(ts, terminated(1), restarting('Exceeded allowed attempts, applying a delay', seconds(interval) * 1e9 * 0.8))
      ts.State = 'pending'
    }
    clientStatus(a)
  }

  // ----- views (the CLI decodes the server's answer into its own api structs, then prints those:
  // the fields follow the CLI's version) ---------------------------------------------------------

  const outTaskStates = (states) => states && Object.fromEntries(Object.entries(states).map(([t, s]) => [t, { ...s, ...(cli('1.10') ? {} : { TaskHandle: null }) }]))

  /** api.AllocationListStub (api/allocations.go, the same fields at v1.6.10, v1.9.7, v1.10.5, v2.0.5): no DeploymentID. */
  const listStub = (a) => ({
    ID: a.ID, EvalID: a.EvalID, Name: a.Name, Namespace: a.Namespace, NodeID: a.NodeID, NodeName: a.NodeName, JobID: a.JobID, JobType: 'service', JobVersion: a.JobVersion, TaskGroup: a.TaskGroup,
    DesiredStatus: a.DesiredStatus, DesiredDescription: a.DesiredDescription, ClientStatus: a.ClientStatus, ClientDescription: a.ClientDescription, TaskStates: outTaskStates(a.TaskStates),
    DeploymentStatus: a.DeploymentStatus, FollowupEvalID: a.FollowupEvalID, NextAllocation: a.NextAllocation, RescheduleTracker: null, PreemptedAllocations: a.PreemptedAllocations,
    PreemptedByAllocation: a.PreemptedByAllocation, CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex, CreateTime: a.CreateTime, ModifyTime: a.ModifyTime,
  })

  /** api.Allocation (api/allocations.go@v2.0.5, same fields at v1.6.10): DeploymentID, and the job (the fields scripts read). */
  function allocation(a) {
    const v = versionAt(state().jobs[a.JobID], a.JobVersion)
    const job = { Region: 'global', Namespace: 'default', ID: a.JobID, Name: a.JobID, Type: 'service', Priority: 50, Datacenters: ['dc1'], Version: a.JobVersion, Stable: v.stable, Status: 'running',
      TaskGroups: v.groups.map((g) => ({ Name: g, Count: v.count, Tasks: a.stub.tasks.map((t) => ({ Name: t, Driver: 'docker', Config: t === a.stub.tasks[0] && v.image ? { image: v.image } : {} })) })) }
    // api/allocations.go@v1.11.0: DesiredTransition gains ForceReschedule, NoShutdownDelay, MigrateDisablePlacement.
    const transition = { Migrate: null, Reschedule: null, ...(cli('1.11') ? { ForceReschedule: null, NoShutdownDelay: null, MigrateDisablePlacement: null } : {}) }
    return {
      ID: a.ID, Namespace: a.Namespace, EvalID: a.EvalID, Name: a.Name, NodeID: a.NodeID, NodeName: a.NodeName, JobID: a.JobID, Job: job, TaskGroup: a.TaskGroup, Resources: null, TaskResources: null,
      AllocatedResources: null, Services: null, Metrics: null, DesiredStatus: a.DesiredStatus, DesiredDescription: a.DesiredDescription, DesiredTransition: transition,
      ClientStatus: a.ClientStatus, ClientDescription: a.ClientDescription, TaskStates: outTaskStates(a.TaskStates), DeploymentID: a.DeploymentID, DeploymentStatus: a.DeploymentStatus,
      FollowupEvalID: a.FollowupEvalID, PreviousAllocation: a.PreviousAllocation, NextAllocation: a.NextAllocation, RescheduleTracker: null, NetworkStatus: null,
      PreemptedAllocations: a.PreemptedAllocations, PreemptedByAllocation: a.PreemptedByAllocation, CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex, AllocModifyIndex: a.AllocModifyIndex,
      CreateTime: a.CreateTime, ModifyTime: a.ModifyTime,
    }
  }

  /**
   * api/jobs.go@v2.0.5 Allocations (and @v1.6.10), api/allocations.go List: sort.Sort(AllocIndexSort)
   * = newest CreateIndex first; one plan's allocations share a CreateIndex and keep the server's
   * order, by ID (a list this short is insertion-sorted, which keeps it).
   */
  const sorted = (list) => [...list].sort((x, y) => y.CreateIndex - x.CreateIndex || (x.ID < y.ID ? -1 : x.ID > y.ID ? 1 : 0))

  /** command/data_format.go@v2.0.5 (same at v1.6.10): codec JSON indented by 4; Format refuses -json with -t. */
  function format(data, template) {
    if (flags.json && template !== undefined) die('Both json and template formatting are not allowed')
    if (flags.json) return out(JSON.stringify(data, null, 4))
    process.stdout.write(goTemplate(data, template) + '\n')
  }

  function goTemplate(data, tmpl) {
    const unsupported = () => die(`template not supported by the test double: ${tmpl}`)
    const value = (obj, p) => p.split('.').filter(Boolean).reduce((o, k) => {
      if (o === null) die(`Error formatting the data: template: output: nil pointer evaluating ${p}`)
      if (typeof o !== 'object' || Array.isArray(o)) unsupported()
      return o[k]
    }, obj)
    const show = (x) => (x === null ? '<nil>' : x === undefined ? '<no value>' : typeof x === 'object' ? unsupported() : String(x))
    const render = (body, dot) => body.replace(/{{-?\s*(?:"((?:[^"\\]|\\.)*)"|(\.[\w.]*))\s*-?}}/g, (_, lit, p) => (lit !== undefined ? JSON.parse(`"${lit}"`) : show(value(dot, p))))
    let text = tmpl.replace(/{{-?\s*range\s+\.\s*-?}}([\s\S]*?){{-?\s*end\s*-?}}/g, (_, body) => (Array.isArray(data) ? data : unsupported()).map((x) => render(body, x)).join(''))
    text = render(text, data)
    if (text.includes('{{')) unsupported()
    return text
  }

  // ----- commands -------------------------------------------------------------------------------

  /**
   * `nomad job allocs [-all] [-json] [-t tmpl] [-verbose] <job>`: command/job_allocs.go, the same
   * flags and messages at v1.6.10, v1.9.7, v1.10.5 and v2.0.5 (2.0.3+ also reads the job, for a
   * deadline column the double has no use for). -all adds the allocations of an earlier instance of
   * the job (stopped, purged, run again), which the double never has.
   */
  function jobAllocs() {
    if (args.length !== 1) die(`This command takes one argument: <job>\nFor additional help try 'nomad job allocs -help'`)
    const name = findJob(args[0].trim())
    const list = sorted(allocsOf(state().jobs[name])).map(listStub)
    if (flags.json || flags.t !== undefined) return format(list, flags.t)
    out(table(list, Boolean(flags.verbose)))
  }

  /** command/job_status.go@v2.0.5 formatAllocListStubs (same columns at v1.6.10), columnize'd. */
  function table(list, verbose) {
    if (!list.length) return 'No allocations placed'
    const id = (x) => (verbose ? x : x.slice(0, 8))
    const rows = verbose
      ? [['ID', 'Eval ID', 'Node ID', 'Node Name', 'Task Group', 'Version', 'Desired', 'Status', 'Created', 'Modified'],
          ...list.map((a) => [a.ID, a.EvalID, a.NodeID, a.NodeName, a.TaskGroup, a.JobVersion, a.DesiredStatus, a.ClientStatus, formatTime(a.CreateTime), formatTime(a.ModifyTime)])]
      : [['ID', 'Node ID', 'Task Group', 'Version', 'Desired', 'Status', 'Created', 'Modified'],
          ...list.map((a) => [id(a.ID), id(a.NodeID), a.TaskGroup, a.JobVersion, a.DesiredStatus, a.ClientStatus, ago(a.CreateTime), ago(a.ModifyTime)])]
    return columns(rows)
  }

  /** command/alloc_status.go (v1.6.10 to v2.0.5): the prefix rules, then api.Allocation as JSON or a summary. */
  function allocStatus() {
    const all = Object.values(state().jobs).flatMap((j) => allocsOf(j))
    // No argument, with -json or -t: every allocation (api.AllocationListStub).
    if (args.length === 0 && (flags.json || flags.t !== undefined)) return format(sorted(all).map(listStub), flags.t)
    if (args.length !== 1) die(`This command takes one of the following argument conditions:\n * A single <allocation>\n * No arguments, with output format specified\nFor additional help try 'nomad alloc status -help'`)
    if (args[0].length === 1) die('Identifier must contain at least two characters.')
    const prefix = sanitizeUUIDPrefix(args[0])
    const matches = sorted(all.filter((a) => a.ID.startsWith(prefix)))
    if (!matches.length) die(`No allocation(s) with prefix or id "${prefix}" found`)
    // Several: the list on stdout, exit 0 (alloc_status.go@v2.0.5 L173-177).
    if (matches.length > 1) return out(`Prefix matched multiple allocations\n\n${table(matches.map(listStub), Boolean(flags.verbose))}`)
    const a = matches[0]
    if (flags.json || flags.t !== undefined) return format(allocation(a), flags.t)
    // formatAllocBasicInfo, then each task's state and recent events (the double leaves out resources).
    const health = a.DeploymentStatus?.Healthy === true ? 'healthy' : a.DeploymentStatus?.Healthy === false ? 'unhealthy' : 'unset'
    const length = flags.verbose ? 36 : 8
    const basic = [['ID', a.ID], ['Eval ID', a.EvalID.slice(0, length)], ['Name', a.Name], ['Node ID', a.NodeID.slice(0, length)], ['Node Name', a.NodeName], ['Job ID', a.JobID],
      ['Job Version', a.JobVersion], ['Client Status', a.ClientStatus], ['Client Description', a.ClientDescription || '<none>'], ['Desired Status', a.DesiredStatus],
      ['Desired Description', a.DesiredDescription || '<none>'], ['Created', ago(a.CreateTime)], ['Modified', ago(a.ModifyTime)],
      ['Deployment ID', a.DeploymentID.slice(0, length)], ['Deployment Health', health], ...(isCanary(a) ? [['Canary', 'true']] : []),
      ...(a.NextAllocation ? [['Replacement Alloc ID', a.NextAllocation.slice(0, length)]] : [])]
    const lines = [kv(basic)]
    for (const [t, s] of Object.entries(a.TaskStates ?? {})) {
      const time = (x) => (x === ZERO ? 'N/A' : x.replace(/\.\d+Z$/, 'Z'))
      lines.push('', `Task "${t}" is "${s.State}"`, 'Task Events:',
        kv([['Started At', time(s.StartedAt)], ['Finished At', time(s.FinishedAt)], ['Total Restarts', s.Restarts], ['Last Restart', time(s.LastRestart)]]), '', 'Recent Events:',
        columns([['Time', 'Type', 'Description'], ...[...s.Events].reverse().map((e) => [formatTime(e.Time), e.Type, e.DisplayMessage])]))
    }
    out(lines.join('\n'))
    hint('View allocation details', `allocations/${a.ID}`)
  }

  /**
   * `nomad alloc logs [options] <allocation> <task>`, or `-job <job> [<task>]`: command/alloc_logs.go
   * at v1.6.10, v1.9.7, v1.10.5, v2.0.5 (the same but for -group, 1.10.0+). A task given by -task is
   * checked against the job (validateTaskExistsInAllocation); a positional one is only checked by
   * the client (400 "unknown task name"). Without either, a group of one task needs none
   * (lookupAllocTask). A single stream (stdout by default; -stderr) is copied to the CLI's STDOUT,
   * from the start, or with -tail the last -n lines (10) or -c bytes. -f with no other stream flag
   * follows both from their end, stderr to stderr: what was already written is not shown. The
   * double never waits for more (-f ends at once).
   */
  function allocLogs() {
    for (const f of ['n', 'c']) if (flags[f] !== undefined && !/^[+-]?\d+$/.test(flags[f])) die(`invalid value "${flags[f]}" for flag -${f}: parse error\nUsage: nomad alloc logs [options] <allocation> <task>`)
    const n = flags.n === undefined ? -1 : Number(flags.n)
    const c = flags.c === undefined ? -1 : Number(flags.c)
    if (args.length < 1) die(`${flags.job ? 'A job ID is required' : 'An allocation ID is required'}\nFor additional help try 'nomad alloc logs -help'`)
    if (args.length > 2) die(`This command takes one or two arguments\nFor additional help try 'nomad alloc logs -help'`)
    let id = args[0]
    if (flags.job) {
      const name = findJob(args[0])
      // command/alloc_fs.go@v2.0.5 getRandomJobAlloc (@v1.6.10 without the group): a running one at random, else any.
      let list = sorted(allocsOf(state().jobs[name]))
      if (!list.length) die(`Error fetching allocations: job "${name}" doesn't exist or it has no allocations`)
      if (flags.group !== undefined) {
        list = list.filter((a) => a.TaskGroup === flags.group)
        if (!list.length) die(`Error fetching allocations: task group "${flags.group}" doesn't exist or it has no allocations`)
      }
      const running = list.filter((a) => a.ClientStatus === 'running')
      const pool = running.length ? running : list
      id = pool[Math.floor(Math.random() * pool.length)].ID
    }
    if (id.length === 1) die('Alloc ID must contain at least two characters.')
    const prefix = sanitizeUUIDPrefix(id)
    const matches = sorted(Object.values(state().jobs).flatMap((j) => allocsOf(j)).filter((a) => a.ID.startsWith(prefix)))
    if (!matches.length) die(`No allocation(s) with prefix or id "${prefix}" found`)
    if (matches.length > 1) die(`Prefix matched multiple allocations\n\n${table(matches.map(listStub), Boolean(flags.verbose))}`)
    const a = matches[0]
    const tasks = a.stub.tasks
    let task = flags.task
    if (task !== undefined) {
      if (!tasks.includes(task)) die(`Failed to validate task: Could not find task named: ${task}, found:\n${tasks.join('\n')}`)
    } else if (args.length >= 2) {
      task = args[1]
      if (task === '') die('Task name required')
    } else if (tasks.length === 1) task = tasks[0]
    else die(`Failed to validate task: Allocation "${a.ID.slice(0, 8)}" is running the following tasks:\n${tasks.map((t) => `  * ${t}\n`).join('')}\nPlease specify the task.`)
    // client/fs_endpoint.go@v2.0.5 L436-451 (same at v1.6.10): the client's checks, as HTTP errors.
    const multi = flags.f && !(flags.stderr || flags.stdout || flags.tail || n > 0 || c > 0)
    const stream = flags.stderr ? 'stderr' : 'stdout'
    const clientError = (why) => die(multi ? `Failed to tail stdout and stderr files: failed to setup stdout log tailing: ${why}` : `Failed to read ${stream} file: error reading file: ${why}`)
    const ts = a.TaskStates?.[task]
    if (!ts) clientError(`Unexpected response code: 400 (unknown task name "${task}")`)
    if (ts.StartedAt === ZERO) clientError(`Unexpected response code: 404 (task "${task}" not started yet. No logs available)`)
    if (multi) return
    if (flags.stderr && flags.stdout) die('Unable to support both stdout and stderr')
    let text = logText(a, task, stream)
    if (flags.tail) {
      if (n !== -1 && c !== -1) die(`Failed to read ${stream} file: both -n and -c set`)
      text = c !== -1 ? text.slice(-c) : text.split('\n').slice(0, -1).slice(-(n === -1 ? 10 : n)).map((l) => l + '\n').join('')
    }
    process.stdout.write(text)
  }

  /** What the task wrote: a start line per run on stdout; a failing task's error on stderr at each run. */
  function logText(a, task, stream) {
    const ts = a.TaskStates[task]
    const failing = task === a.stub.tasks[0] && (ts.Failed || ts.Restarts > 0)
    const runs = 1 + ts.Restarts
    const lines = []
    for (let i = 0; i < runs; i++) {
      if (stream === 'stdout') lines.push(`${task}: starting (${a.JobID} version ${a.JobVersion}${a.stub.image ? `, ${a.stub.image}` : ''})`, ...(failing ? [] : [`${task}: ready`]))
      else if (failing) lines.push(...(state().failureLog ?? DEFAULT_FAILURE).split('\n'))
    }
    return lines.map((l) => l + '\n').join('')
  }

  return { place, fill, unblock, dryRun, onNode, listStub, progress, healthy, failed, promoted, jobAllocs, allocStatus, allocLogs }
}

// ----- formatting helpers -------------------------------------------------------------------------

/** command/helpers.go@v2.0.5 sanitizeUUIDPrefix: an odd number of hex digits loses its last character. */
function sanitizeUUIDPrefix(prefix) {
  const digits = prefix.length - (prefix.match(/-/g) ?? []).length
  return prefix.slice(0, prefix.length - (digits % 2))
}

/** github.com/ryanuber/columnize, as the CLI's formatList uses it: columns two spaces apart. */
function columns(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  return rows.map((r) => r.map((x, i) => (i === r.length - 1 ? String(x) : String(x).padEnd(widths[i]))).join('  ').trimEnd()).join('\n')
}

/** command/helpers.go formatKV: "Key = Value" columns. */
function kv(pairs) {
  const w = Math.max(...pairs.map(([k]) => k.length))
  return pairs.map(([k, v]) => `${k.padEnd(w)} = ${v}`).join('\n')
}

/** formatUnixNanoTime: RFC 3339, to the second. */
const formatTime = (ns) => new Date(ns / 1e6).toISOString().replace(/\.\d+Z$/, 'Z')

/** command/helpers.go@v2.0.5 prettyTimeDiff, in short. */
function ago(ns) {
  const s = Math.round((Date.now() - ns / 1e6) / 1000)
  if (s <= 0) return 'now'
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${!h && sec ? `${sec}s` : ''} ago`
}

/** "5m", "30m", "15s", "1h30m" (an HCL duration) in seconds. */
function seconds(text) {
  let total = 0
  for (const [, n, unit] of String(text).matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s)/g)) total += Number(n) * { h: 3600, m: 60, s: 1, ms: 0.001 }[unit]
  return total
}

/** Go's time.Duration String(): 5m -> "5m0s", 30m -> "30m0s", 16.95s -> "16.95s". */
function goDuration(ns) {
  const total = Math.round(ns / 1e6) / 1000
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60)
  const s = Math.round((total - h * 3600 - m * 60) * 1000) / 1000
  return h ? `${h}h${m}m${s}s` : m ? `${m}m${s}s` : `${s}s`
}
