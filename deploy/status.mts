#!/usr/bin/env -S npx tsx
// status: what runs now on Nomad for both systems, and whether the repository would change it. Read-only.
//
// Usage: npx tsx deploy/status.mts [--json] [--env-file PATH]
//
// For every job of Agent Economique (agent-economique, arangodb-agent-economique) and of the CEDRA
// storefront (cedra-storefront, valkey): its current version and whether it is stable, what it runs
// (the storefront's image and the commit its tag names, the agent's binary path, the other images),
// its latest deployment (state, healthy instances, canaries waiting for promotion), and a
// `nomad job plan` of the repository's job file with the settings a deploy would use (the storefront
// with the image that runs now: the plan shows what the job file would change, not a new build).
// One table on stdout, or with --json one JSON object (deploy/lib/result.schema.json, field "jobs").
// Nothing is changed: a read-only token is enough (read-job; plan-job on Nomad 1.11.2+; node:read to
// learn the servers' version). Fit for cron: the exit code says whether anyone needs to look.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_COMMAND_TIMEOUT (default 60),
//        and what the deploy scripts plan with: AGENT_REMOTE_DIR, AGENT_BINARY_NAME, DEPLOY_SSH_HOST or
//        DEPLOY_SSH_HOSTS (the agent's clients; unset: the agent is not planned),
//        STOREFRONT_VAULT_PATH, STOREFRONT_VAULT_MOUNT, STOREFRONT_COUNT, STOREFRONT_AUTO_PROMOTE,
//        DEPLOY_VAULT_AUTH, STOREFRONT_VAULT_ROLE, DEPLOY_VAULT_SUBMIT_TOKEN and DEPLOY_CONSUL_SUBMIT_TOKEN
//        (Nomad 1.6-1.9: the submitter tokens a plan of the storefront and Valkey needs; see their --help).
// Options:
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 every job runs as the repository says (deployed, healthy, no change planned);
//       1 something needs a look: a job missing, unhealthy, deploying, a canary waiting for
//         promotion, a plan that would change it, or a read that failed;
//       2 refused (configuration, or the cluster refused the token).
import path from 'node:path'
import { exit, EXIT, fail, refuse, report, root, start, step } from './lib/env.mts'
import { planChanges } from './lib/deployment.mts'
import { chooseFlow, vaultSettings } from './lib/identity.mts'
import { nomadConnection, nomadError, nomadVersions, type Nomad } from './lib/nomad.mts'
import { listNodes, matchNodes, nodeProblems } from './lib/nodes.mts'
import { sshHosts } from './lib/ssh.mts'
import { agentSha, defaultAgentBuild, type Binary } from './lib/agent.mts'
import { listItem, readRecord, type JobVersion, type Release } from './lib/release.mts'

type State = 'ok' | 'missing' | 'unhealthy' | 'deploying' | 'canary-waiting' | 'would-change' | 'unknown'
type Row = {
  job: string; system: 'agent-economique' | 'cedra-storefront'; state: State; version?: number; stable?: boolean
  image?: string; commit?: string; binary?: string; deployment?: { id: string; status: string; description: string }
  canariesWaiting?: number; healthy?: number; desired?: number; wouldChange: boolean | null; detail?: string
}
type Version = { Version: number; Stable: boolean; Meta?: Record<string, string> | null; TaskGroups?: { Tasks?: { Driver?: string; Config?: { image?: string; command?: string } }[] }[] }
type Deployment = { ID: string; JobVersion: number; Status: string; StatusDescription: string
  TaskGroups?: Record<string, { DesiredCanaries: number; DesiredTotal: number; HealthyAllocs: number; Promoted: boolean }> }

// Check
const { check, dryRun } = start(import.meta.url)
const nomad = nomadConnection(check)
const agentDir = check.remotePath('AGENT_REMOTE_DIR', '/root/data')
const agentName = check.remoteName('AGENT_BINARY_NAME', 'agent')
// The agent's clients, as deploy_nomad constrains the job to them (optional here: without them the agent is not planned).
const agentHosts = process.env.DEPLOY_SSH_HOST !== undefined || process.env.DEPLOY_SSH_HOSTS !== undefined ? sshHosts(check) : []
const secrets = check.kvPath('STOREFRONT_VAULT_PATH', 'secret/cedra/prod', check.optional('STOREFRONT_VAULT_MOUNT'))
const count = check.optional('STOREFRONT_COUNT')
if (count !== undefined && !(/^\d+$/.test(count) && Number(count) >= 2)) check.problem(`STOREFRONT_COUNT=${JSON.stringify(count)} must be a whole number of at least 2`)
const autoPromote = check.optional('STOREFRONT_AUTO_PROMOTE')
if (autoPromote !== undefined && !['true', 'false'].includes(autoPromote)) check.problem(`STOREFRONT_AUTO_PROMOTE=${JSON.stringify(autoPromote)} must be true or false`)
const vaultAuth = vaultSettings(check)
check.done()

const JOBS = [
  { job: 'agent-economique', system: 'agent-economique', file: 'jobs/agent.nomad' },
  { job: 'arangodb-agent-economique', system: 'agent-economique', file: 'jobs/arangodb.nomad' },
  { job: 'cedra-storefront', system: 'cedra-storefront', file: 'jobs/cedra-storefront.nomad' },
  { job: 'valkey', system: 'cedra-storefront', file: 'jobs/valkey.nomad' },
] as const

if (dryRun) {
  console.log([nomad.exportLine, ...JOBS.flatMap(({ job, file }) => [
    `nomad job history -json ${job}`, `nomad job deployments -json ${job}`, `nomad job plan <the deploy script's -var flags> ${file}`])].join('\n'))
  exit(EXIT.done)
}

// Read (nothing below changes anything)
step(`Ask Nomad at ${nomad.addr} which version it runs`)
const versions = await nomadVersions(nomad)
const { vars: flowVars } = chooseFlow(nomad, versions, vaultAuth)
const agentNodes = await agentClients()
const rows: Row[] = []
for (const { job, system, file } of JOBS) {
  step(`Read ${job}`)
  rows.push(await jobStatus(nomad, job, system, path.join(root, file)))
}

// Report
const attention = rows.filter((r) => r.state !== 'ok')
report({
  outcome: attention.length ? 'drift' : 'in-sync',
  message: attention.length
    ? `${attention.length} of ${rows.length} jobs need a look: ${attention.map((r) => `${r.job} ${r.state}${r.detail ? ` (${r.detail})` : ''}`).join('; ')}`
    : `all ${rows.length} jobs run as the repository says`,
  jobs: rows,
})
printTable(rows)
console.log(`\n${attention.length ? `${attention.length} of ${rows.length} jobs need a look.` : `All ${rows.length} jobs run as the repository says.`}
Useful commands:
  nomad job status <job>
  nomad job deployments <job>
  npx tsx deploy/<deploy script>.mts --plan      (the diff a deploy would apply)
  npx tsx deploy/promote_storefront.mts          (a canary waiting for promotion)`)
if (attention.length) process.exitCode = EXIT.failed

// ---------------------------------------------------------------------------------------------

/** One job: its versions, its latest deployment, and the plan of the repository's job file. */
async function jobStatus(nomad: Nomad, job: string, system: Row['system'], file: string): Promise<Row> {
  const history = await nomad.$`nomad job history -json ${job}`
  if (!history.ok) {
    // command/meta.go@v1.6.10 and @v2.0.5: `No job(s) with prefix or ID "x" found`.
    if (/No job\(s\) with prefix or ID/.test(history.stderr)) return { job, system, state: 'missing', wouldChange: true, detail: 'not deployed' }
    return failedRead(job, system, 'nomad job history', history)
  }
  const list = (JSON.parse(history.stdout) as Version[]).sort((a, b) => b.Version - a.Version)
  const current = list[0]
  const tasks = (current.TaskGroups ?? []).flatMap((g) => g.Tasks ?? [])
  const images = tasks.map((t) => t.Config?.image).filter((i): i is string => Boolean(i))
  // The agent's binary: a raw_exec task's command (a docker task's command, such as valkey-server, is no binary of ours).
  const binary = tasks.find((t) => t.Driver === 'raw_exec')?.Config?.command
  const row: Row = { job, system, state: 'ok', version: current.Version, stable: current.Stable, wouldChange: null }
  if (images.length) row.image = images.join(' ')
  if (binary) row.binary = binary

  const all = await nomad.$`nomad job deployments -json ${job}`
  if (!all.ok) return { ...row, ...failedRead(job, system, 'nomad job deployments', all) }
  // Newest first (one deployment per job version at most).
  const deployments = ((JSON.parse(all.stdout || '[]') ?? []) as Deployment[]).sort((a, b) => b.JobVersion - a.JobVersion)
  const [d, before] = deployments
  if (d) {
    const groups = Object.values(d.TaskGroups ?? {})
    const waiting = groups.filter((g) => g.DesiredCanaries > 0 && !g.Promoted)
    row.deployment = { id: d.ID, status: d.Status, description: d.StatusDescription }
    row.healthy = groups.reduce((n, g) => n + g.HealthyAllocs, 0)
    row.desired = groups.reduce((n, g) => n + (g.DesiredCanaries > 0 && !g.Promoted ? g.DesiredCanaries : g.DesiredTotal), 0)
    row.canariesWaiting = d.Status === 'running' ? waiting.reduce((n, g) => n + g.DesiredCanaries, 0) : 0
    if (['failed', 'cancelled'].includes(d.Status)) Object.assign(row, { state: 'unhealthy', detail: `deployment ${d.ID.slice(0, 8)} ${d.Status}: ${d.StatusDescription}` })
    else if (d.Status === 'running' && row.canariesWaiting) Object.assign(row, { state: 'canary-waiting', detail: `version ${d.JobVersion} waits for promotion` })
    else if (d.Status === 'running') Object.assign(row, { state: 'deploying', detail: `deployment ${d.ID.slice(0, 8)}: ${d.StatusDescription}` })
    // The latest deploy failed and Nomad's auto_revert brought the last stable specification back.
    const back = before?.Status === 'failed' && before.StatusDescription.match(/rolling back to job version (\d+)/)
    if (back && row.state === 'ok') row.detail = `version ${before.JobVersion} failed (deployment ${before.ID.slice(0, 8)}: ${before.StatusDescription}); version ${d.JobVersion} runs the specification of version ${back[1]} again`
  }

  // The plan: the repository's job file, with what a deploy would pass (the storefront: the image that runs).
  const vars: Record<string, string> = {}
  if (job === 'agent-economique') {
    if (agentNodes.problems.length) return { ...row, state: row.state !== 'ok' ? row.state : agentHosts.length ? 'unhealthy' : 'unknown', detail: agentNodes.problems.join('; ') }
    // What deploy_nomad would apply: a build deploy_binary staged, else what runs (its release file, sha256, commit).
    if (/^[0-9a-f]{7,40}$/.test(current.Meta?.commit ?? '')) row.commit = current.Meta!.commit
    const record = await readRecord(nomad, job)
    const build = defaultAgentBuild(current as JobVersion, listItem<Binary>(record, 'binaries'), listItem<Release>(record, 'history'))
    if (build && build.sha !== agentSha(current as JobVersion)) row.detail = `build ${build.sha.slice(0, 12)} ${build.why}, not deployed yet`
    Object.assign(vars, build
      ? { binary_path: `${agentDir}/${agentName}-${build.sha}`, binary_sha256: build.sha, commit: build.commit, nodes: agentNodes.ids }
      : { binary_path: binary ?? `${agentDir}/${agentName}`, nodes: agentNodes.ids })
  }
  if (job === 'valkey') Object.assign(vars, { vault_secret: secrets.api }, flowVars)
  if (job === 'cedra-storefront') {
    const ref = images[0]?.match(/^(.+):([^:/]+)$/)
    if (!ref) return { ...row, detail: row.detail ?? 'no image tag to plan with' }
    row.commit = ref[2].match(/^[0-9a-f]{7,40}/)?.[0]
    Object.assign(vars, { image: ref[1], image_tag: ref[2], vault_secret: secrets.api, ...(count ? { count } : {}), ...(autoPromote ? { auto_promote: autoPromote } : {}) }, flowVars)
  }
  const varArgs = Object.entries(vars).map(([k, v]) => `-var=${k}=${v}`)
  const plan = await nomad.$`nomad job plan ${varArgs} ${file}`
  const changes = planChanges(plan)
  if (changes === undefined) return { ...row, state: row.state === 'ok' ? 'unknown' : row.state, detail: row.detail ?? `nomad job plan failed: ${lastLine(plan.stderr || plan.stdout)}` }
  row.wouldChange = changes
  if (changes && row.state === 'ok')
    Object.assign(row, { state: 'would-change', detail: `${row.detail ? `${row.detail}; ` : ''}a deploy would change it (npx tsx deploy/${scriptOf(job)}.mts --plan shows the diff)` })
  return row
}

/** The agent's clients (DEPLOY_SSH_HOST / DEPLOY_SSH_HOSTS, matched as deploy_nomad matches them) and what stops them running it. */
async function agentClients(): Promise<{ ids: string; problems: string[] }> {
  if (!agentHosts.length) return { ids: '', problems: ['DEPLOY_SSH_HOST (or DEPLOY_SSH_HOSTS) is not set: the agent job is constrained to its hosts, so it cannot be planned'] }
  const { found, problems } = await matchNodes(nomad, await listNodes(nomad), agentHosts)
  for (const [host, n] of found) problems.push(...nodeProblems(host, n, 'raw_exec'))
  return { ids: [...found.values()].map((n) => n.ID).join(','), problems }
}

/** A read that failed: refused when the cluster refused the token (nothing can be read), else this job is unknown. */
function failedRead(job: string, system: Row['system'], what: string, out: Parameters<typeof nomadError>[1]): Row {
  const { message, code } = nomadError(nomad, out)
  if (code === EXIT.refused) refuse([`${what} ${job}: ${message}`])
  if (/no answer within/.test(message)) fail(`${what} ${job}: ${message}`)
  return { job, system, state: 'unknown', wouldChange: null, detail: `${what}: ${message}` }
}

function scriptOf(job: string): string {
  return { 'agent-economique': 'deploy_nomad', 'arangodb-agent-economique': 'deploy_arangodb', 'cedra-storefront': 'deploy_storefront', valkey: 'deploy_valkey' }[job] ?? job
}

function lastLine(text: string): string {
  return text.trim().split('\n').filter(Boolean).at(-1) ?? 'no message'
}

/** The rows as a table on stdout, then each row's detail. */
function printTable(list: Row[]) {
  const cells = list.map((r) => [
    r.job,
    r.version === undefined ? '-' : `${r.version}${r.stable ? '' : ' (unstable)'}`,
    r.state,
    r.deployment ? `${r.deployment.id.slice(0, 8)} ${r.deployment.status}` : '-',
    r.healthy === undefined ? '-' : `${r.healthy}/${r.desired}`,
    r.wouldChange === null ? '-' : r.wouldChange ? 'would change' : 'no change',
    r.binary ?? r.image ?? '-',
  ])
  const header = ['JOB', 'VERSION', 'STATE', 'DEPLOYMENT', 'HEALTHY', 'PLAN', 'RUNS']
  const width = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)))
  for (const c of [header, ...cells]) console.log(c.map((x, i) => x.padEnd(width[i])).join('  ').trimEnd())
  for (const r of list.filter((x) => x.detail)) console.log(`  ${r.job}: ${r.detail}`)
}
