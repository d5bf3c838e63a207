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
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https
//        (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            read the latest deployment and say what a promote would do; change nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 promoted and deployed; 1 nothing to promote, the canary is not healthy, the deployment
//       failed or rolled back, or --timeout reached; 2 refused before changing anything.
import { EXIT, exit, fail, refuse, report, start, step } from './lib/env.mts'
import { followDeployment, reportOutcome } from './lib/deployment.mts'
import { nomadConnection, nomadError, nomadVersions, timeoutSeconds } from './lib/nomad.mts'

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
check.done()
report({ job: JOB })

if (dryRun) {
  console.log([nomad.exportLine, `nomad job deployments -latest ${JOB}`, `nomad job promote -detach ${JOB}`,
    `# then follow the deployment: nomad job deployments -latest ${JOB}`].join('\n'))
  exit(EXIT.done)
}

// Plan: is there a canary waiting for promotion?
step(`Read the latest deployment of ${JOB}`)
await nomadVersions(nomad)
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
console.log(`
Useful commands:
  nomad job status ${JOB}
  nomad deployment status ${id}
  nomad alloc logs -f -job ${JOB}
  nomad job history ${JOB}            (and: npx tsx deploy/revert_storefront.mts <version>)`)

// ---------------------------------------------------------------------------------------------

/** Nothing waits for promotion: say why and what to do, exit 1. */
function nothingToPromote(why: string): never {
  report({ message: `nothing to promote: ${why}` })
  console.error(`✗ nothing to promote: ${why}.
  A canary waits for promotion after npx tsx deploy/deploy_storefront.mts (or revert_storefront.mts)
  reports "canary healthy, deployment … waiting for promotion"; see: nomad job deployments ${JOB}`)
  exit(EXIT.failed)
}
