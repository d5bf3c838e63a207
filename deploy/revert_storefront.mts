#!/usr/bin/env -S npx tsx
// revert_storefront: roll the CEDRA storefront back to an earlier release, and follow that deployment.
//
// Usage: npx tsx deploy/revert_storefront.mts [--dry-run] [--plan] [--timeout 10m] [--env-file PATH] <version|tag|commit>
//
// Without a target, lists what it can return to (TAG, VERSION, COMMIT, IMAGE, SUBMITTED, STABLE; the
// current version and the last good one, the newest stable, are marked) and exits 2. The target is
// a job version (a whole number), a version tag (storefront-<image tag>: every good release is tagged
// on Nomad 1.9+), or a commit of the storefront (7 to 40 hex digits: the newest version whose image
// tag, or meta commit, starts with it). Nomad keeps the 6 newest untagged versions and every tagged
// one: a tagged release stays within reach however many deploys follow (the kit keeps the last
// DEPLOY_KEEP_RELEASES tags). Then, holding the job's lock (Nomad 1.7+: a concurrent deploy or revert
// of the job is refused, exit 2), `nomad job revert -detach cedra-storefront <version>` (Nomad
// registers that version again, as a new version) and follows the deployment to one of three
// outcomes, as deploy_storefront does: canary healthy and waiting for promotion (a revert of this job
// places a canary too: promote it with promote_storefront.mts), deployment successful, or deployment
// failed / rolled back (Nomad's reason). A successful revert is tagged (its tag moves to the new
// version) and every outcome is written to the release record, the Nomad Variable
// nomad/jobs/cedra-storefront/releases (read it: nomad var get -item history nomad/jobs/cedra-storefront/releases).
// A failed deployment reverts by itself (auto_revert); this script is for a manual rollback.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current; tags need 1.9+, the lock 1.7+); the TLS files when NOMAD_ADDR is https (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        DEPLOY_VAULT_SUBMIT_TOKEN and DEPLOY_CONSUL_SUBMIT_TOKEN (optional secrets, Nomad 1.6-1.9 only:
//          the submitter tokens a cluster without allow_unauthenticated demands on a revert too),
//        DEPLOY_KEEP_RELEASES (default 5: the kit's tags and record entries kept per job),
//        DEPLOY_LOCK_WAIT (default 0: seconds to wait for another run of the job; 0 = refused at once),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   <version|tag|commit>  what to go back to (see the list this script prints without one)
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            read the history and say what the revert would do; change nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 reverted (canary waiting for promotion, or deployed); 1 a step failed, the deployment failed
//       or rolled back, or --timeout reached; 2 refused before changing anything (no target, not a
//       version, tag or commit, an unknown, pruned or current one, another run holds the job's lock).
import { exit, EXIT, fail, refuse, report, secret, shq, start, step } from './lib/env.mts'
import { followDeployment, reportOutcome, versionAfter } from './lib/deployment.mts'
import { flowProblem } from './lib/identity.mts'
import { atLeast, nomadConnection, nomadError, nomadVersions, nomadWithTokens, timeoutSeconds } from './lib/nomad.mts'
import { lockJob } from './lib/lock.mts'
import { concludeRelease, imagesOf, imageTag, type JobVersion, keepReleases, lockWait, printTable, recordPath, when, whoAmI } from './lib/release.mts'

const JOB = 'cedra-storefront'
const COMMIT = /^[0-9a-f]{7,40}(-dirty-[0-9a-f]{12})?$/i
const TAG = /^[A-Za-z][A-Za-z0-9._-]{0,127}$/

// Check
const { check, dryRun, planOnly, flags, args } = start(import.meta.url, { options: { timeout: { type: 'string' } }, positionals: '<version|tag|commit>', plan: true })
const nomad = nomadConnection(check)
const timeout = timeoutSeconds(flags.timeout, check)
const keep = keepReleases(check)
const wait = lockWait(check)
// Nomad 1.6-1.9 check the submitter's tokens on a revert as on a run (nomad/job_endpoint.go@v1.9.7 Revert).
const submitTokens = { VAULT_TOKEN: secret(check.optional('DEPLOY_VAULT_SUBMIT_TOKEN')), CONSUL_HTTP_TOKEN: secret(check.optional('DEPLOY_CONSUL_SUBMIT_TOKEN')) }
const wanted = args[0]
if (args.length > 1) check.problem(`give one version, tag or commit, not ${args.length} arguments (${args.join(' ')})`)
if (wanted !== undefined && !/^\d+$/.test(wanted) && !COMMIT.test(wanted) && !TAG.test(wanted))
  check.problem(`${JSON.stringify(wanted)} must be a version (a whole number), a tag (such as storefront-<commit>) or a commit (7 to 40 hex digits): run without it to list the releases of ${JOB}`)
check.done()
report({ job: JOB })

if (dryRun) {
  const target = wanted === undefined ? 'VERSION' : /^\d+$/.test(wanted) ? shq(wanted) : '"$VERSION"'
  console.log([nomad.exportLine, `nomad job history -json ${JOB}`,
    ...(wanted === undefined ? ['# then, with the version, tag or commit to go back to:']
      : /^\d+$/.test(wanted) ? [] : [`# VERSION: the version whose tag is ${wanted}, else the newest whose image tag (or meta commit) starts with it`]),
    `# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/${JOB}/lock`,
    `nomad job revert -detach ${JOB} ${target}`,
    `# then follow the deployment: nomad job deployments -latest ${JOB}`,
    `# once it is successful (Nomad 1.9+), its tag moves to the new version (NEW_VERSION):`,
    `nomad job tag apply -name "$TAG_OF_THAT_RELEASE" -description ${shq(`revert to version VERSION, by ${whoAmI()}`)} -version "$NEW_VERSION" ${JOB}`,
    `# every outcome is written to the release record (nomad var put -check-index); read it with:`,
    `nomad var get -item history ${recordPath(JOB)}`].join('\n'))
  exit(EXIT.done)
}

// Plan: the job's versions (reading them also proves the cluster answers and accepts the token)
step(`Read the history of ${JOB}`)
const { server } = await nomadVersions(nomad)
if (!atLeast(server, '1.10')) nomadWithTokens(nomad, submitTokens)
// Listing needs no lock; a revert holds the job's lock from before it reads the history to the end.
if (wanted !== undefined && !planOnly) await lockJob(nomad, JOB, 'revert_storefront.mts', wait)
const history = await nomad.$`nomad job history -json ${JOB}`
if (!history.ok) {
  // command/meta.go@v1.6.10 and @v2.0.5: `No job(s) with prefix or ID "x" found` (capital ID).
  if (/No job\(s\) with prefix or ID/.test(history.stderr)) refuse([`${JOB} is not deployed on ${nomad.addr}: there is nothing to revert`])
  const { message, code } = nomadError(nomad, history)
  if (code !== EXIT.refused) fail(`nomad job history: ${message}`)
  refuse([`nomad job history: ${message}`])
}
const versions = (JSON.parse(history.stdout) as JobVersion[]).sort((a, b) => b.Version - a.Version)
const current = versions[0]
const lastGood = versions.find((v) => v.Stable)
const kept = `Nomad keeps the 6 newest versions and every tagged one (tags: Nomad 1.9+)`
if (wanted === undefined) {
  listReleases(versions)
  refuse([`give the version, tag or commit to go back to: npx tsx deploy/revert_storefront.mts <version|tag|commit> (the current version is ${current.Version}${lastGood && lastGood !== current ? `; the last good one ${lastGood.Version}` : ''})`])
}
const found = resolve(versions, wanted)
if (!found.version) {
  listReleases(versions)
  refuse([`${JOB} has ${found.why}: it is not among the versions listed above (${kept}; an older one was pruned)`])
}
const target = found.version
if (target === current) {
  listReleases(versions)
  refuse([`version ${target.Version}${found.how} is the current version of ${JOB}: nothing to revert; give an earlier one (list above)`])
}
const image = imagesOf(target)[0]
const imageTagOf = image && imageTag(image)
const commit = target.Meta?.commit ?? imageTagOf?.split('-')[0]
// The tag that release goes by: its own, else the one the kit gives a storefront release.
const tagName = target.VersionTag?.Name ?? (imageTagOf ? `storefront-${imageTagOf}` : undefined)
console.error(`    ${wanted} is version ${target.Version}${found.how} (${image ?? 'no image'}, submitted ${when(target.SubmitTime)}${target.Stable ? ', stable' : ''})`)
report({ ...(image ? { image } : {}), ...(commit ? { commit } : {}) })
if (planOnly) {
  const line = `--plan: a revert would register the specification of version ${target.Version} of ${JOB} again (${image ?? 'no image'}), as a new version, replacing version ${current.Version}`
  report({ outcome: 'planned', message: line, changes: true, version: current.Version })
  console.log(line)
  console.log('Nothing was changed (--plan reads the cluster only).')
  exit(EXIT.done)
}

// --- point of no return ---
report({ acted: true })
step(`Revert ${JOB} from version ${current.Version} to version ${target.Version}${found.how}`)
const reverted = await nomad.$`nomad job revert -detach ${JOB} ${String(target.Version)}`
if (!reverted.ok) {
  const problem = flowProblem(reverted.stderr, 'token', server)
  fail(`nomad job revert: ${problem ? `${problem}; Nomad registered nothing` : nomadError(nomad, reverted).message}`)
}
// The version this revert registered: the first after the modify index read above (none: unchanged).
const version = (await versionAfter(nomad, JOB, current.JobModifyIndex)) ?? current.Version
if (version === current.Version) {
  // Nomad registers no new version when the old specification is the current one.
  const line = `${JOB} version ${current.Version} already has the specification of version ${target.Version}: Nomad registered nothing new`
  report({ outcome: 'unchanged', message: line, version: current.Version })
  console.log(line)
  exit(EXIT.done)
}
step(`Follow the deployment of ${JOB} version ${version} (version ${target.Version} again)`)
report({ version })
const result = await followDeployment(nomad, JOB, version, timeout)

// Report
const outcome = reportOutcome(result)
step(`Record the release${result.outcome === 'successful' && tagName ? ` and tag it ${tagName}` : ''}`)
const release = await concludeRelease(nomad, {
  job: JOB, version, action: 'revert', outcome: ({ successful: 'deployed', canary: 'canary-waiting', failed: 'failed', timeout: 'timeout', none: 'unchanged' } as const)[outcome.outcome],
  ...(commit ? { commit } : {}), ...(image ? { image } : {}), ...(result.deployment ? { deployment: result.deployment } : {}),
}, tagName ? { name: tagName, description: `revert to version ${target.Version} (${commit ? `commit ${commit}, ` : ''}${image ?? 'no image'}), by ${whoAmI()}` } : undefined, keep)
console.log(`Release: ${release.tag ? `${release.tag} = ` : ''}${JOB} version ${version} (${release.outcome}); the record: nomad var get -item history ${recordPath(JOB)}`)
if (result.outcome === 'canary') {
  report({ next: ['npx tsx deploy/promote_storefront.mts', `npx tsx deploy/revert_storefront.mts ${current.Version}`] })
  console.log(`\nCheck the canary (nomad alloc logs -f -job ${JOB}; its /api/health), then either`)
  console.log(`  ${'promote it to every instance:'.padEnd(31)}npx tsx deploy/promote_storefront.mts  (it is tagged then)`)
  console.log(`  ${`or go back to version ${current.Version}:`.padEnd(31)}npx tsx deploy/revert_storefront.mts ${current.Version}`)
  console.log(`The same with the nomad CLI:\n  nomad job promote ${JOB}\n  nomad job revert ${JOB} ${current.Version}`)
}
if (result.outcome === 'failed' || result.outcome === 'timeout') process.exitCode = EXIT.failed
console.log(`
Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${result.deployment ? `\n  nomad deployment status ${result.deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB}
  nomad job history ${JOB}
  npx tsx deploy/revert_storefront.mts          (the releases it can return to)`)

// ---------------------------------------------------------------------------------------------

/**
 * The version a target names: a whole number is a version; a name is the version that tag is on;
 * hex digits are a commit: the newest version whose image tag (or meta commit) starts with them.
 */
function resolve(list: JobVersion[], w: string): { version?: JobVersion; how: string; why: string } {
  if (/^\d+$/.test(w)) {
    const v = list.find((x) => x.Version === Number(w))
    if (v || !COMMIT.test(w)) return { version: v, how: '', why: `no version ${w}` }
  }
  const tagged = list.find((x) => x.VersionTag?.Name === w)
  if (tagged) return { version: tagged, how: ` (tag ${w})`, why: '' }
  if (COMMIT.test(w)) {
    const lower = w.toLowerCase()
    const v = list.find((x) => imagesOf(x).some((i) => imageTag(i)?.toLowerCase().startsWith(lower)) || x.Meta?.commit?.toLowerCase().startsWith(lower))
    return { version: v, how: v ? ` (commit ${w})` : '', why: `no version of commit ${w} (no image tag nor meta commit starts with it)${TAG.test(w) ? ' and no tag of that name' : ''}` }
  }
  return { version: undefined, how: '', why: `no version tagged ${w}` }
}

/** What the job can return to, newest first: a table on stdout and the `releases` of the --json result. */
function listReleases(list: JobVersion[]) {
  const releases = list.map((v) => {
    const image = imagesOf(v)[0]
    const t = image && imageTag(image)
    return {
      version: v.Version, tag: v.VersionTag?.Name ?? null, commit: v.Meta?.commit ?? t?.split('-')[0] ?? null, image: image ?? null,
      submitted: when(v.SubmitTime), stable: v.Stable, current: v === current, kept: true,
    }
  })
  report({ releases })
  printTable(['TAG', 'VERSION', 'COMMIT', 'IMAGE', 'SUBMITTED', 'STABLE', ''], releases.map((r, i) => [
    r.tag ?? '-', String(r.version), r.commit ?? '-', r.image ?? '-', r.submitted, r.stable ? 'yes' : 'no',
    [r.current && '(current)', list[i] === lastGood && '(last good)'].filter(Boolean).join(' '),
  ]))
}
