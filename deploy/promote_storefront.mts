#!/usr/bin/env -S npx tsx
// promote_storefront: promote the healthy canary of the CEDRA storefront, and follow the rollout to its end.
//
// Usage: npx tsx deploy/promote_storefront.mts [--dry-run] [--plan] [--timeout 10m] [--env-file PATH]
//
// Reads the latest deployment of the job cedra-storefront (which also proves the cluster answers and
// accepts the token); when no canary waits for promotion it says why and exits 1. Otherwise runs
// `nomad job promote -detach cedra-storefront` (the other instances are then replaced one by one)
// and follows that deployment until it is successful, or failed and rolled back (Nomad's reason).
// A canary that is not healthy yet is refused by Nomad: wait, or revert (revert_storefront.mts).
// The run holds the job's lock (Nomad 1.7+: a concurrent deploy, revert or promote of cedra-storefront
// is refused, exit 2, naming who holds it). The promoted version, once successful, is tagged
// storefront-<image tag> (Nomad 1.9+; a revert's promoted canary keeps the tag of the release it went
// back to, which moves to it) and every outcome is written to the release record, the Nomad Variable
// nomad/jobs/cedra-storefront/releases (nomad var get -item history nomad/jobs/cedra-storefront/releases).
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https
//        (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        DEPLOY_KEEP_RELEASES (default 5: the kit's tags and record entries kept per job),
//        DEPLOY_LOCK_WAIT (default 0: seconds to wait for another run of the job; 0 = refused at once),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            read the latest deployment and say what a promote would do; change nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 promoted and deployed; 1 nothing to promote, the canary is not healthy, the deployment
//       failed or rolled back, or --timeout reached; 2 refused before changing anything (another run
//       holds the job's lock included).
import { EXIT, exit, fail, refuse, report, start, step } from './lib/env.mts'
import { followDeployment, reportOutcome } from './lib/deployment.mts'
import { nomadConnection, nomadError, nomadVersions, timeoutSeconds } from './lib/nomad.mts'
import type { ProcessOutput } from 'zx'
import { lockJob } from './lib/lock.mts'
import { bookkeepingFailed, concludeRelease, imagesOf, imageTag, type JobVersion, keepReleases, listItem, lockWait, recordPath, type Release, whoAmI } from './lib/release.mts'

const JOB = 'cedra-storefront'

type Deployment = {
  ID: string
  JobVersion: number
  Status: string
  StatusDescription: string
  TaskGroups: Record<string, { DesiredCanaries: number; HealthyAllocs: number; Promoted: boolean }>
}

// Check
const { check, dryRun, planOnly, flags } = start(import.meta.url, { options: { timeout: { type: 'string' } }, plan: true })
const nomad = nomadConnection(check)
const timeout = timeoutSeconds(flags.timeout, check)
const keep = keepReleases(check)
const wait = lockWait(check)
check.done()
report({ job: JOB })

if (dryRun) {
  console.log([nomad.exportLine, `# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/${JOB}/lock`,
    `nomad job deployments -latest ${JOB}`, `nomad job promote -detach ${JOB}`,
    `# then follow the deployment: nomad job deployments -latest ${JOB}`,
    `# once it is successful (Nomad 1.9+), VERSION being the promoted version and IMAGE_TAG its image's tag:`,
    `nomad job tag apply -name "storefront-$IMAGE_TAG" -description "$DESCRIPTION" -version "$VERSION" ${JOB}`,
    `# every outcome is written to the release record (nomad var put -check-index); read it with:`,
    `nomad var get -item history ${recordPath(JOB)}`].join('\n'))
  exit(EXIT.done)
}

// Plan: is there a canary waiting for promotion?
step(`Read the latest deployment of ${JOB}`)
await nomadVersions(nomad)
if (!planOnly) await lockJob(nomad, JOB, 'promote_storefront.mts', wait)
const latest = await nomad.$`nomad job deployments -latest -json ${JOB}`
if (!latest.ok) {
  // command/meta.go@v1.6.10 and @v2.0.5: `No job(s) with prefix or ID "x" found` (capital ID).
  if (/No job\(s\) with prefix or ID/.test(latest.stderr)) nothingToPromote(`${JOB} is not deployed on ${nomad.addr}`)
  const { message, code } = nomadError(nomad, latest)
  if (code !== EXIT.refused) fail(`nomad job deployments: ${message}`)
  refuse([`nomad job deployments: ${message}`])
}
const d = latest.stdout.trim() && latest.stdout.trim() !== 'null' ? (JSON.parse(latest.stdout) as Deployment) : undefined
if (!d) nothingToPromote(`${JOB} has no deployment`)
const id = d.ID.slice(0, 8)
report({ version: d.JobVersion, deployment: d.ID })
const waiting = Object.entries(d.TaskGroups ?? {}).filter(([, g]) => g.DesiredCanaries > 0 && !g.Promoted)
if (d.Status !== 'running') nothingToPromote(`its latest deployment ${id} (version ${d.JobVersion}) is ${d.Status}: ${d.StatusDescription}`)
if (!waiting.length) nothingToPromote(`its latest deployment ${id} (version ${d.JobVersion}) has no canary waiting for promotion (${d.StatusDescription})`)
if (planOnly) {
  const line = `--plan: a promote would promote the canary of ${JOB} version ${d.JobVersion} (deployment ${id}): ${waiting.map(([g, x]) => `${g} ${x.HealthyAllocs}/${x.DesiredCanaries} canary healthy`).join(', ')}`
  report({ outcome: 'planned', message: line, changes: true })
  console.log(line)
  console.log('Nothing was changed (--plan reads the cluster only).')
  exit(EXIT.done)
}

// --- point of no return ---
report({ acted: true })
step(`Promote the canary of ${JOB} version ${d.JobVersion} (deployment ${id})`)
const promoted = await nomad.$`nomad job promote -detach ${JOB}`
if (!promoted.ok) {
  const text = `${promoted.stderr}\n${promoted.stdout}`
  // command/job_promote.go (`Job %q has no deployment to promote`) and nomad/structs/errors.go@v2.0.5
  // (`can't promote terminal deployment`); too few healthy canaries: nomad/state/state_store.go@v2.0.5
  // `Task group %q has %d/%d healthy allocations`.
  if (/has no deployment to promote|can't promote terminal deployment/.test(text))
    nothingToPromote(`Nomad says: ${text.trim().split('\n')[0]}`)
  const unhealthy = text.match(/Task group "[^"]+" has \d+\/\d+ healthy allocations/)
  if (unhealthy)
    fail(`the canary of ${JOB} version ${d.JobVersion} is not healthy yet (${unhealthy[0]}): nothing was promoted; wait and run again (nomad deployment status ${id}), or revert (npx tsx deploy/revert_storefront.mts)`)
  fail(`nomad job promote: ${nomadError(nomad, promoted).message}`)
}
step(`Follow the deployment of ${JOB} version ${d.JobVersion}`)
const result = await followDeployment(nomad, JOB, d.JobVersion, timeout)

// Report
reportOutcome(result)
if (result.outcome !== 'successful') process.exitCode = EXIT.failed
step(`Record the release${result.outcome === 'successful' ? ' and tag it' : ''}`)
await recordPromoted(d.JobVersion, result.outcome === 'successful' ? 'deployed' : result.outcome, result.deployment ?? d.ID)
console.log(`
Useful commands:
  nomad job status ${JOB}
  nomad deployment status ${id}
  nomad alloc logs -f -job ${JOB}
  nomad job history ${JOB}            (and: npx tsx deploy/revert_storefront.mts <version>)`)

// ---------------------------------------------------------------------------------------------

/**
 * Tag the promoted version and record it: what it runs from the job's history, how it came (deploy
 * or revert) from the record's entry of its canary. Its tag: the kit's tag already on a version with
 * the same image (a revert to a tagged release: the tag moves), else storefront-<image tag>.
 */
async function recordPromoted(version: number, outcome: string, deployment: string) {
  // The promote is done whatever these reads say: a failed read leaves the tag out, and the run ends with exit 1 once reported.
  const read = async <T,>(what: string, out: ProcessOutput, fallback: T): Promise<T> => {
    if (!out.ok) return /Variable not found/.test(out.stderr) ? fallback : (bookkeepingFailed(`${what}: ${nomadError(nomad, out).message}`), fallback)
    try { return (JSON.parse(out.stdout) as T) ?? fallback } catch { return (bookkeepingFailed(`${what} printed no JSON`), fallback) }
  }
  const versions = await read<JobVersion[]>(`nomad job history ${JOB}`, await nomad.$`nomad job history -json ${JOB}`, [])
  const v = versions.find((x) => x.Version === version)
  const image = v && imagesOf(v)[0]
  const t = image && imageTag(image)
  const record = await read<{ Items?: Record<string, string> }>(`nomad var get ${recordPath(JOB)}`, await nomad.$`nomad var get -out json ${recordPath(JOB)}`, {})
  const canary = listItem<Release>({ index: 0, items: record.Items ?? {} }, 'history').find((r) => r.version === version)
  const sameImage = versions.find((x) => x.Version !== version && x.VersionTag?.Name.startsWith('storefront-') && image && imagesOf(x)[0] === image)
  const name = sameImage?.VersionTag?.Name ?? (t ? `storefront-${t}` : undefined)
  const commit = v?.Meta?.commit ?? t?.split('-')[0]
  const release = await concludeRelease(nomad, {
    job: JOB, version, action: canary?.action ?? 'deploy', outcome, ...(commit ? { commit } : {}), ...(image ? { image } : {}), deployment,
  }, name ? { name, description: `${canary?.action === 'revert' ? 'revert' : 'deploy'} of ${commit ? `commit ${commit}, ` : ''}image ${image}, promoted by ${whoAmI()}` } : undefined, keep)
  console.log(`Release: ${release.tag ? `${release.tag} = ` : ''}${JOB} version ${version} (${release.outcome}); the record: nomad var get -item history ${recordPath(JOB)}`)
}

/** Nothing waits for promotion: say why and what to do, exit 1. */
function nothingToPromote(why: string): never {
  report({ message: `nothing to promote: ${why}` })
  console.error(`✗ nothing to promote: ${why}.
  A canary waits for promotion after npx tsx deploy/deploy_storefront.mts (or revert_storefront.mts)
  reports "canary healthy, deployment … waiting for promotion"; see: nomad job deployments ${JOB}`)
  exit(EXIT.failed)
}
