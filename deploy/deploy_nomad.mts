#!/usr/bin/env -S npx tsx
// deploy_nomad: deploy the Agent Economique job (jobs/agent.nomad, raw_exec) with the local nomad CLI.
//
// Usage: npx tsx deploy/deploy_nomad.mts [--dry-run] [--plan] [--binary SHA256] [--timeout 10m] [--json] [--env-file PATH]
//
// Which binary, without ssh: the release record nomad/jobs/agent-economique/releases (a Nomad
// Variable that deploy_binary.mts writes) says which builds are on the servers. By default the newest
// build deploy_binary uploaded, when it was never deployed yet; otherwise what the job runs now,
// applied again (from cron: nothing changes, it says what runs). --binary SHA256 (or a prefix of 8+
// digits) deploys a recorded build on purpose. The job gets its exact path
// AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256> and the sha256 and commit in its meta: a new binary is
// a new job version, rolled out by Nomad with its health gate and auto_revert.
// Runs `nomad job plan` (shows the diff, proves the cluster accepts the token), then
// `nomad job run -check-index N -detach`, and follows the deployment to its outcome, under the job's
// lock (nomad var lock, Nomad 1.7+; a second run is refused with who holds it, or waits
// DEPLOY_LOCK_WAIT seconds). A good deployment is tagged agent-<sha256 prefix> (Nomad 1.9+) and every
// outcome is written to the release record. When the plan shows no change at all, nothing is run.
// The clients it may run on: the Nomad nodes of DEPLOY_SSH_HOST / DEPLOY_SSH_HOSTS (matched by address
// or name as deploy_binary matches them, each checked ready, eligible, with a healthy raw_exec
// driver), passed as -var nodes (a constraint in the job); the build must be on each of them.
// Prints the raw_exec plugin block to add by hand to the client configuration; never changes the
// Nomad configuration.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https
//        (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        AGENT_REMOTE_DIR (default /root/data), AGENT_BINARY_NAME (default agent),
//        DEPLOY_SSH_HOST or DEPLOY_SSH_HOSTS (required: the hosts deploy_binary uploads to; no ssh here),
//        DEPLOY_KEEP_RELEASES (default 5: tags and record entries kept), DEPLOY_LOCK_WAIT (default 0:
//          seconds to wait for another run of this job),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   --binary SHA256   deploy this recorded build (its sha256, or 8+ first digits) instead of the default
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            ask the cluster what a deploy would do (the real nomad job plan); change nothing
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or already up to date), 1 a step failed, 2 refused before changing anything.
import path from 'node:path'
import { exit, EXIT, refuse, report, root, start, step } from './lib/env.mts'
import { deployPlanned, planCommands, planJob, reportPlan } from './lib/deployment.mts'
import { nomadConnection, nomadVersions, timeoutSeconds } from './lib/nomad.mts'
import { clientNodes } from './lib/nodes.mts'
import { lockJob } from './lib/lock.mts'
import { agentPath, agentSha, defaultAgentBuild, type Binary } from './lib/agent.mts'
import { concludeRelease, jobVersions, keepReleases, listItem, lockWait, readRecord, recordPath, type Release } from './lib/release.mts'
import { sshHosts } from './lib/ssh.mts'

const JOB = 'agent-economique'
const FILE = path.join(root, 'jobs/agent.nomad')

// Check
const { check, dryRun, planOnly, flags } = start(import.meta.url, { options: { timeout: { type: 'string' }, binary: { type: 'string' } }, plan: true })
const nomad = nomadConnection(check)
const dir = check.remotePath('AGENT_REMOTE_DIR', '/root/data')
const name = check.remoteName('AGENT_BINARY_NAME', 'agent')
const hosts = sshHosts(check)
const timeout = timeoutSeconds(flags.timeout, check)
const keep = keepReleases(check)
const wait = lockWait(check)
const wanted = flags.binary as string | undefined
if (wanted !== undefined && !/^[0-9a-f]{8,64}$/.test(wanted)) check.problem(`--binary ${JSON.stringify(wanted)} must be a sha256 or its first 8+ digits (lower-case hex): see npx tsx deploy/revert_agent.mts --list`)
check.done()
report({ job: JOB })

if (dryRun) {
  const sha = wanted && wanted.length === 64 ? wanted : '$SHA256'
  console.log(`# SHA256: ${wanted ? `the recorded build ${wanted}` : `the newest build deploy_binary recorded and never deployed, else the one the job runs`}: nomad var get -item binaries ${recordPath(JOB)}
# NODE_IDS: the IDs of the Nomad nodes of ${hosts.join(', ')}, comma-separated (nomad node status -json: the node whose Address, or else Name, is the host)
# the job's lock while it runs (Nomad 1.7+): nomad var lock -early-return -shell=false nomad/jobs/${JOB}/lock @holder.json sh -c 'echo locked; exec cat >/dev/null'`)
  console.log(planCommands(nomad, FILE, { binary_path: `${dir}/${name}-${sha}`, binary_sha256: sha, commit: '$COMMIT', nodes: '$NODE_IDS' }).join('\n'))
  console.log(`# then follow the deployment: nomad job deployments -latest ${JOB}
# when it is successful (Nomad 1.9+): nomad job tag apply -name "agent-\${SHA256:0:12}" -version "$VERSION" ${JOB}
# and record it: nomad var get -item history ${recordPath(JOB)}`)
  exit(EXIT.done)
}

// The clients that hold the binary: the job is constrained to them
step(`Ask Nomad at ${nomad.addr} which clients ${hosts.join(', ')} are`)
await nomadVersions(nomad)
const nodes = [...(await clientNodes(nomad, hosts, 'raw_exec')).values()].map((n) => n.ID).join(',')

// Which binary: named, staged by deploy_binary, or what runs
step(`Read what ${JOB} runs and what deploy_binary recorded (${recordPath(JOB)})`)
const versions = await jobVersions(nomad, JOB)
const current = versions[0]
const running = current && agentSha(current)
const record = await readRecord(nomad, JOB)
const binaries = listItem<Binary>(record, 'binaries')
const history = listItem<Release>(record, 'history')
console.error(`    ${JOB} runs ${current ? `version ${current.Version}: ${running ? `${name}-${running.slice(0, 12)}${current.Meta?.commit ? ` (commit ${current.Meta.commit})` : ''}` : agentPath(current) ?? 'an unknown binary'}` : 'nothing yet (not deployed)'}; ${binaries.length} build${binaries.length === 1 ? '' : 's'} recorded`)
let chosen: { sha: string; commit: string; why: string }
if (wanted) {
  const matches = binaries.filter((b) => b.sha256.startsWith(wanted))
  if (matches.length > 1) refuse([`--binary ${wanted} matches ${matches.length} recorded builds (${matches.map((b) => b.sha256.slice(0, 12)).join(', ')}): give more digits`])
  if (!matches.length) refuse([`--binary ${wanted} is not a build recorded on the servers (${binaries.map((b) => b.sha256.slice(0, 12)).join(', ') || 'none recorded'}): upload it with deploy_binary.mts; see npx tsx deploy/revert_agent.mts --list`])
  chosen = { sha: matches[0].sha256, commit: matches[0].commit ?? '', why: 'given with --binary' }
} else if (defaultAgentBuild(current, binaries, history)) {
  chosen = defaultAgentBuild(current, binaries, history)!
} else if (current) {
  // A job deployed before content addressing runs a fixed path: nothing recorded to apply again.
  const line = `${JOB} version ${current.Version} runs ${agentPath(current) ?? 'a binary'} (deployed before releases were named by their sha256): nothing to apply again; run deploy_binary.mts, then deploy_nomad.mts, to move it to a release`
  report({ outcome: 'unchanged', message: line, version: current.Version })
  console.log(line)
  exit(EXIT.done)
} else {
  refuse([`nothing to deploy: ${JOB} is not deployed and no build is recorded in ${recordPath(JOB)}: run npx tsx deploy/deploy_binary.mts first`])
}
const build = binaries.find((b) => b.sha256 === chosen.sha)
const missing = build ? hosts.filter((h) => !build.hosts.includes(h)) : []
if (missing.length) refuse([`${name}-${chosen.sha.slice(0, 12)} is not on ${missing.join(', ')} (recorded on ${build!.hosts.join(', ') || 'no host'}): run deploy_binary.mts with the same DEPLOY_SSH_HOST(S) first`])
const vars = { binary_path: `${dir}/${name}-${chosen.sha}`, binary_sha256: chosen.sha, commit: chosen.commit, nodes }
report({ binary: { path: vars.binary_path, sha256: chosen.sha }, ...(/^[0-9a-f]{7,40}$/.test(chosen.commit) ? { commit: chosen.commit } : {}) })
console.error(`    deploying ${name}-${chosen.sha.slice(0, 12)}${chosen.commit ? ` (commit ${chosen.commit})` : ''}: ${chosen.why}`)

// One run of this job at a time (not for --plan: it changes nothing)
if (!planOnly) {
  step(`Lock ${JOB} for this deploy`)
  await lockJob(nomad, JOB, 'deploy_nomad.mts', wait)
}

// Plan
step(`Plan ${JOB} (binary ${vars.binary_path} on ${hosts.join(', ')})`)
const plan = await planJob(nomad, JOB, FILE, vars)
if (planOnly) reportPlan(plan, ` with ${name}-${chosen.sha.slice(0, 12)} (${chosen.why})`)

// --- point of no return ---
const result = await deployPlanned(nomad, plan, timeout)
let tagged: string | undefined
if (result.outcome !== 'none') {
  const version = result.version
  const outcome = ({ successful: 'deployed', failed: 'failed', timeout: 'timeout', canary: 'canary-waiting' } as const)[result.outcome]
  if (version !== undefined) {
    step(`Record the release of ${JOB} version ${version}`)
    const r = await concludeRelease(nomad, { job: JOB, version, action: 'deploy', outcome, sha256: chosen.sha, path: vars.binary_path, ...(chosen.commit ? { commit: chosen.commit } : {}), ...(result.deployment ? { deployment: result.deployment } : {}) },
      { name: `agent-${chosen.sha.slice(0, 12)}`, description: `sha256 ${chosen.sha}${chosen.commit ? `, commit ${chosen.commit}` : ''}` }, keep)
    tagged = r.tag
  }
}

// Report
console.log(`
${result.outcome === 'none' ? 'Runs' : result.outcome === 'successful' ? 'Now runs' : 'Tried'}: ${name}-${chosen.sha.slice(0, 12)}${chosen.commit ? ` (commit ${chosen.commit})` : ''}${tagged ? `, tagged ${tagged}` : ''}
  ${vars.binary_path}
The release record: nomad var get -item history ${recordPath(JOB)}

The raw_exec driver must be enabled on the client (a manual, one-time change; no script applies it):
  /etc/nomad.d/nomad.hcl:   plugin "raw_exec" { config { enabled = true } }
  then: sudo systemctl restart nomad

Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${result.deployment ? `\n  nomad deployment status ${result.deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB}
  npx tsx deploy/revert_agent.mts --list    (the releases it can return to)
  npx tsx deploy/revert_agent.mts           (back to the previous good release)`)
