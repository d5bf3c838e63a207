#!/usr/bin/env -S npx tsx
// deploy_arangodb: deploy the Agent Economique ArangoDB job (jobs/arangodb.nomad, Docker) with the local nomad CLI.
//
// Usage: npx tsx deploy/deploy_arangodb.mts [--dry-run] [--plan] [--timeout 10m] [--env-file PATH]
//
// First checks that the Nomad Variable nomad/jobs/arangodb-agent-economique holds a root_password item
// (the job's template reads the root password from it and would wait forever without it; the value
// itself is never read: only the item names). Then runs `nomad job plan` (shows the diff, proves the
// cluster accepts the token), `nomad job run -check-index N -detach`, and follows the deployment to
// its outcome. When the plan shows no change at all, nothing is run. Prints the host_volume client
// block to add by hand; never changes the Nomad configuration.
// Order: deploy_arango_volume.mts, put_arangodb_password.mts, then this script.
// Releases: from the plan to the end the run holds the job's lock (Nomad 1.7+: a concurrent deploy of
// arangodb-agent-economique is refused, exit 2, naming who holds it; DEPLOY_LOCK_WAIT waits instead). A deployment
// followed to successful is tagged arangodb-<kit commit> (this repository's commit; Nomad 1.9+; the kit's
// tags beyond the last DEPLOY_KEEP_RELEASES are unset) and every outcome is written to the release
// record, the Nomad Variable nomad/jobs/arangodb-agent-economique/releases (nomad var get -item history nomad/jobs/arangodb-agent-economique/releases).
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https
//        (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        ARANGO_DATA_DIR (default /opt/arangodb_data; only for the host_volume block it prints),
//        DEPLOY_KEEP_RELEASES (default 5: the kit's tags and record entries kept per job),
//        DEPLOY_LOCK_WAIT (default 0: seconds to wait for another run of the job; 0 = refused at once),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            ask the cluster what a deploy would do (the real nomad job plan); change nothing
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or already up to date), 1 a step failed, 2 refused before changing anything (another run
//       holds the job's lock included).
import path from 'node:path'
import { exit, EXIT, fail, refuse, root, shq, start, step } from './lib/env.mts'
import { deployPlanned, planCommands, planJob, reportPlan } from './lib/deployment.mts'
import { nomadConnection, nomadError, timeoutSeconds } from './lib/nomad.mts'
import { lockJob } from './lib/lock.mts'
import { concludeKitRelease, keepReleases, kitCommit, kitReleaseCommands, lockWait } from './lib/release.mts'
import { volumeReminder } from './lib/volume.mts'

const JOB = 'arangodb-agent-economique'
const FILE = path.join(root, 'jobs/arangodb.nomad')
const VAR_PATH = `nomad/jobs/${JOB}`
const ITEM = 'root_password'
// Metadata and item NAMES only: the value never reaches this process.
const NAMES = '{{.ModifyIndex}}{{range $k, $v := .Items}} {{$k}}{{end}}'

// Check
const { check, dryRun, planOnly, flags } = start(import.meta.url, { options: { timeout: { type: 'string' } }, plan: true })
const nomad = nomadConnection(check)
const dataDir = check.remotePath('ARANGO_DATA_DIR', '/opt/arangodb_data')
const timeout = timeoutSeconds(flags.timeout, check)
const keep = keepReleases(check)
const wait = lockWait(check)
check.done()

if (dryRun) {
  const [exportLine, ...deploy] = planCommands(nomad, FILE)
  console.log([exportLine, `nomad var get -out go-template -template ${shq(NAMES)} ${VAR_PATH}`, ...deploy].join('\n'))
  console.log(`# then follow the deployment: nomad job deployments -latest ${JOB}`)
  console.log(kitReleaseCommands(JOB, 'arangodb', FILE, await kitCommit(root)).join('\n'))
  exit(EXIT.done)
}

step(`Check the Nomad Variable ${VAR_PATH} (item names only)`)
const found = await nomad.$`nomad var get -out go-template -template ${NAMES} ${VAR_PATH}`
const missing = `run first: npx tsx deploy/put_arangodb_password.mts (the job's template waits for ${VAR_PATH}:${ITEM})`
if (!found.ok) {
  if (/Variable not found/.test(found.stderr))
    refuse([`the Nomad Variable ${VAR_PATH} does not exist (or NOMAD_TOKEN may not read it: Nomad 1.x reports both alike): ${missing}`])
  const { message, code } = nomadError(nomad, found)
  if (code === EXIT.refused) refuse([`nomad var get ${VAR_PATH}: ${message}`])
  fail(`nomad var get ${VAR_PATH}: ${message}`)
}
const [varIndex, ...items] = found.stdout.trim().split(/\s+/)
if (!items.includes(ITEM)) refuse([`the Nomad Variable ${VAR_PATH} has no ${ITEM} item (items: ${items.join(', ') || 'none'}): ${missing}`])
console.error(`    ${VAR_PATH} holds ${ITEM} (modify index ${varIndex})`)

// Plan; from here to the end of the run no other deploy of the job can start (a --plan changes nothing: no lock).
if (!planOnly) await lockJob(nomad, JOB, 'deploy_arangodb.mts', wait)
step(`Plan ${JOB}`)
const plan = await planJob(nomad, JOB, FILE)
if (planOnly) reportPlan(plan)

// --- point of no return ---
const result = await deployPlanned(nomad, plan, timeout)
await concludeKitRelease(nomad, JOB, 'arangodb', FILE, result, keep)

// Report
console.log(`
Before the first deploy (one-time):
${volumeReminder(nomad, 'arangodb_data', dataDir, 'deploy/deploy_arango_volume.mts')}

Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${result.deployment ? `\n  nomad deployment status ${result.deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB}
  nomad job history ${JOB}
  nomad var get -item ${ITEM} ${VAR_PATH}    # the root password (needs variables:read)`)

