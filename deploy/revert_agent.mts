#!/usr/bin/env -S npx tsx
// revert_agent: bring an earlier release of the Agent Economique back, through a Nomad deployment.
//
// Usage: npx tsx deploy/revert_agent.mts [--list] [--dry-run] [--plan] [--timeout 10m] [--json] [--env-file PATH] [<release>]
//
// Without a release: back to the previous good one (the newest stable job version that runs another
// binary than the current one). A release is named by its job version (a whole number), its tag
// (agent-<sha256 prefix>, Nomad 1.9+), its sha256 (8+ first digits) or its source commit (7+ digits).
// --list prints what it can return to (version, tag, sha256, commit, submitted, stable, binary kept)
// and exits 0. The binary must still be on the servers (the release record
// nomad/jobs/agent-economique/releases, item binaries, written by deploy_binary.mts, says which are).
// Then, under the job's lock (Nomad 1.7+), `nomad job revert -detach agent-economique <version>`:
// Nomad registers that version again, as a new version, and rolls it out with its health gate and
// auto_revert; the script follows the deployment to its outcome, tags a good one agent-<sha256 prefix>
// (the tag moves to the new version; Nomad 1.9+) and writes it to the release record. Nothing on the
// servers is renamed: each release is a file of its own.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        DEPLOY_KEEP_RELEASES (default 5: tags and record entries kept), DEPLOY_LOCK_WAIT (default 0:
//          seconds to wait for another run of this job),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   <release>         a job version, a tag, a sha256 prefix or a commit prefix (default: the previous good release)
//   --list            print the releases it can return to; change nothing
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            read the history and say what the revert would do; change nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 reverted (or --list); 1 a step failed, the deployment failed or rolled back, or --timeout
//       reached; 2 refused before changing anything (unknown or current release, its binary removed,
//       no earlier good release, the job's lock held).
import { exit, EXIT, fail, refuse, report, shq, start, step } from './lib/env.mts'
import { followDeployment, reportOutcome, versionAfter } from './lib/deployment.mts'
import { nomadConnection, nomadError, nomadVersions, timeoutSeconds } from './lib/nomad.mts'
import { lockJob } from './lib/lock.mts'
import { agentSha, type Binary } from './lib/agent.mts'
import { concludeRelease, jobVersions, keepReleases, listItem, lockWait, printTable, readRecord, recordPath, when, type JobVersion } from './lib/release.mts'

const JOB = 'agent-economique'

// Check
const { check, dryRun, planOnly, flags, args } = start(import.meta.url, { options: { timeout: { type: 'string' }, list: { type: 'boolean' } }, positionals: '<release>', plan: true })
const nomad = nomadConnection(check)
const timeout = timeoutSeconds(flags.timeout, check)
const keep = keepReleases(check)
const wait = lockWait(check)
const wanted = args[0]
if (args.length > 1) check.problem(`give one release, not ${args.length} arguments (${args.join(' ')})`)
if (wanted !== undefined && !/^[A-Za-z0-9._-]{1,100}$/.test(wanted)) check.problem(`release ${JSON.stringify(wanted)} must be a job version, a tag, a sha256 or a commit prefix (letters, digits, . _ -)`)
if (flags.list && wanted !== undefined) check.problem('--list goes alone: it lists the releases, give no release')
check.done()
report({ job: JOB })

if (dryRun) {
  console.log([nomad.exportLine, `nomad job history -json ${JOB}`, `nomad var get -item binaries ${recordPath(JOB)}`,
    `# VERSION: ${wanted === undefined ? 'the newest stable version that runs another binary than the current one' : `the version that ${shq(wanted)} names (a version, a tag, a sha256 or commit prefix)`}`,
    `# the job's lock while it runs (Nomad 1.7+): nomad var lock -early-return -shell=false nomad/jobs/${JOB}/lock @holder.json sh -c 'echo locked; exec cat >/dev/null'`,
    `nomad job revert -detach ${JOB} "$VERSION"`,
    `# then follow the deployment: nomad job deployments -latest ${JOB}`,
    `# when it is successful (Nomad 1.9+): nomad job tag apply -name "agent-<sha256 prefix>" -version "$NEW_VERSION" ${JOB}`,
    `# and record it: nomad var get -item history ${recordPath(JOB)}`].join('\n'))
  exit(EXIT.done)
}

// Plan: the job's versions and the builds still on the servers
step(`Read the releases of ${JOB}`)
await nomadVersions(nomad)
const versions = await jobVersions(nomad, JOB)
if (!versions.length) refuse([`${JOB} is not deployed on ${nomad.addr}: there is nothing to revert`])
const current = versions[0]
const record = await readRecord(nomad, JOB)
const binaries = listItem<Binary>(record, 'binaries')
const kept = (v: JobVersion) => { const sha = agentSha(v); return Boolean(sha && binaries.some((b) => b.sha256 === sha)) }
const releases = versions.filter((v) => agentSha(v))
report({ releases: releases.map((v) => ({ version: v.Version, tag: v.VersionTag?.Name ?? null, sha256: agentSha(v) ?? null, commit: v.Meta?.commit || null, submitted: new Date(v.SubmitTime / 1e6).toISOString(), stable: v.Stable, current: v === current, kept: kept(v) })) })
if (flags.list) {
  printReleases()
  report({ outcome: 'done', message: `${releases.length} release${releases.length === 1 ? '' : 's'} of ${JOB} listed; it runs version ${current.Version}` })
  exit(EXIT.done)
}

const target = wanted === undefined ? previousGood() : find(wanted)
if (target === current) refuse([`${wanted} is the current release of ${JOB} (version ${current.Version}): nothing to revert`, ...listing()])
const sha = agentSha(target)!
if (!kept(target)) refuse([`the binary of version ${target.Version} (${sha.slice(0, 12)}) is no longer on the servers (only the last DEPLOY_KEEP_RELEASES=${keep} builds are kept): upload it again with deploy_binary.mts from its commit${target.Meta?.commit ? ` ${target.Meta.commit}` : ''}, then deploy_nomad.mts --binary ${sha.slice(0, 12)}`, ...listing()])
const name = `version ${target.Version}${target.VersionTag ? ` (${target.VersionTag.Name})` : ''}, sha256 ${sha.slice(0, 12)}${target.Meta?.commit ? `, commit ${target.Meta.commit}` : ''}`
report({ binary: { path: (target.TaskGroups ?? []).flatMap((g) => g.Tasks ?? []).map((t) => t.Config?.command).find(Boolean) ?? '', sha256: sha } })
if (planOnly) {
  const line = `--plan: a revert would register ${JOB} ${name} again, as a new version, replacing version ${current.Version}`
  report({ outcome: 'planned', message: line, changes: true, version: current.Version })
  console.log(line)
  console.log('Nothing was changed (--plan reads the cluster only).')
  exit(EXIT.done)
}

// One run of this job at a time
step(`Lock ${JOB} for this revert`)
await lockJob(nomad, JOB, 'revert_agent.mts', wait)
const now = (await jobVersions(nomad, JOB))[0]
if (now.Version !== current.Version) refuse([`${JOB} changed while this run waited for its lock (version ${now.Version} now): nothing was reverted; run again to choose against the new version`])

// --- point of no return ---
report({ acted: true })
step(`Revert ${JOB} from version ${current.Version} to ${name}`)
const reverted = await nomad.$`nomad job revert -detach ${JOB} ${String(target.Version)}`
if (!reverted.ok) fail(`nomad job revert: ${nomadError(nomad, reverted).message}`)
const version = (await versionAfter(nomad, JOB, current.JobModifyIndex)) ?? current.Version
if (version === current.Version) {
  const line = `${JOB} version ${current.Version} already has the specification of version ${target.Version}: Nomad registered nothing new`
  report({ outcome: 'unchanged', message: line, version })
  console.log(line)
  exit(EXIT.done)
}
step(`Follow the deployment of ${JOB} version ${version} (${name} again)`)
report({ version })
const result = reportOutcome(await followDeployment(nomad, JOB, version, timeout))
if (result.outcome === 'failed' || result.outcome === 'timeout') process.exitCode = EXIT.failed
const outcome = ({ successful: 'deployed', failed: 'failed', timeout: 'timeout', canary: 'canary-waiting', none: 'unchanged' } as const)[result.outcome]
step(`Record the release of ${JOB} version ${version}`)
const release = await concludeRelease(nomad, { job: JOB, version, action: 'revert', outcome, sha256: sha, ...(target.Meta?.commit ? { commit: target.Meta.commit } : {}), ...(result.deployment ? { deployment: result.deployment } : {}) },
  { name: `agent-${sha.slice(0, 12)}`, description: `sha256 ${sha}${target.Meta?.commit ? `, commit ${target.Meta.commit}` : ''}` }, keep)

// Report
console.log(`
${result.outcome === 'successful' ? 'Now runs' : 'Tried'}: ${name}${release.tag ? `, tagged ${release.tag}` : ''} as version ${version}
The release record: nomad var get -item history ${recordPath(JOB)}

Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${result.deployment ? `\n  nomad deployment status ${result.deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB}
  npx tsx deploy/revert_agent.mts --list`)

// ---------------------------------------------------------------------------------------------

/** The newest stable version, older than the current one, that runs another binary still on the servers. */
function previousGood(): JobVersion {
  const sha = agentSha(current)
  const v = versions.find((x) => x !== current && x.Stable && agentSha(x) && agentSha(x) !== sha && kept(x))
  if (!v) refuse([`${JOB} has no earlier good release to return to (a stable version with another binary still on the servers)`, ...listing()])
  return v
}

/** The version a name designates: a version number, a tag, a sha256 prefix, a commit prefix. */
function find(what: string): JobVersion {
  const byVersion = /^\d+$/.test(what) ? versions.find((v) => v.Version === Number(what)) : undefined
  const byTag = versions.find((v) => v.VersionTag?.Name === what)
  const hex = /^[0-9a-f]{7,64}$/.test(what)
  const bySha = hex && what.length >= 8 ? versions.find((v) => agentSha(v)?.startsWith(what)) : undefined
  const byCommit = hex ? versions.find((v) => v.Meta?.commit?.startsWith(what)) : undefined
  const v = byVersion ?? byTag ?? bySha ?? byCommit
  if (!v || !agentSha(v)) {
    const older = /^\d+$/.test(what) && Number(what) < current.Version ? ` (Nomad keeps only the 6 newest untagged versions: an older one is gone unless it was tagged)` : ''
    refuse([`${JOB} has no release ${JSON.stringify(what)}${older}`, ...listing()])
  }
  return v
}

/** The releases as lines for a refusal (the table goes to stdout). */
function listing(): string[] {
  printReleases()
  return ['the releases are listed above: npx tsx deploy/revert_agent.mts --list']
}

/** The releases, newest first, as a table on stdout. */
function printReleases() {
  const lastGood = versions.find((v) => v.Stable && agentSha(v))
  printTable(['VERSION', 'TAG', 'SHA256', 'COMMIT', 'SUBMITTED', 'STABLE', 'BINARY', ''], releases.map((v) => [
    String(v.Version), v.VersionTag?.Name ?? '-', agentSha(v)!.slice(0, 12), v.Meta?.commit || '-', when(v.SubmitTime),
    v.Stable ? 'yes' : 'no', kept(v) ? 'kept' : 'removed', [v === current ? '(current)' : '', v === lastGood ? '(last good)' : ''].filter(Boolean).join(' '),
  ]))
}
