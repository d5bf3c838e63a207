#!/usr/bin/env -S npx tsx
// revert_storefront: roll the CEDRA storefront back to an earlier job version, and follow that deployment.
//
// Usage: npx tsx deploy/revert_storefront.mts [--dry-run] [--plan] [--timeout 10m] [--env-file PATH] <version>
//
// Without a version, prints the job's history (versions, stable flags, dates, images) and exits 2.
// The version must be a whole number, one of the job's versions, and not the current one. Then
// `nomad job revert -detach cedra-storefront <version>` (Nomad registers that version again, as a new
// version) and follows the deployment to one of three outcomes, as deploy_storefront does: canary
// healthy and waiting for promotion (a revert of this job places a canary too: promote it with
// promote_storefront.mts), deployment successful, or deployment failed / rolled back (Nomad's reason).
// A failed deployment reverts by itself (auto_revert); this script is for a manual rollback.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        DEPLOY_VAULT_SUBMIT_TOKEN and DEPLOY_CONSUL_SUBMIT_TOKEN (optional secrets, Nomad 1.6-1.9 only:
//          the submitter tokens a cluster without allow_unauthenticated demands on a revert too),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   <version>         the job version to go back to (see: nomad job history cedra-storefront)
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            read the history and say what the revert would do; change nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 reverted (canary waiting for promotion, or deployed); 1 a step failed, the deployment failed
//       or rolled back, or --timeout reached; 2 refused before changing anything (no version, not a
//       whole number, unknown or current version).
import { exit, EXIT, fail, refuse, report, secret, shq, start, step } from './lib/env.mts'
import { followDeployment, reportOutcome, versionAfter } from './lib/deployment.mts'
import { flowProblem } from './lib/identity.mts'
import { atLeast, nomadConnection, nomadError, nomadVersions, nomadWithTokens, timeoutSeconds } from './lib/nomad.mts'

const JOB = 'cedra-storefront'

type Version = { Version: number; Stable: boolean; SubmitTime: number; JobModifyIndex: number; TaskGroups?: { Tasks?: { Config?: { image?: string } }[] }[] }

// Check
const { check, dryRun, planOnly, flags, args } = start(import.meta.url, { options: { timeout: { type: 'string' } }, positionals: '<version>', plan: true })
const nomad = nomadConnection(check)
const timeout = timeoutSeconds(flags.timeout, check)
// Nomad 1.6-1.9 check the submitter's tokens on a revert as on a run (nomad/job_endpoint.go@v1.9.7 Revert).
const submitTokens = { VAULT_TOKEN: secret(check.optional('DEPLOY_VAULT_SUBMIT_TOKEN')), CONSUL_HTTP_TOKEN: secret(check.optional('DEPLOY_CONSUL_SUBMIT_TOKEN')) }
const wanted = args[0]
if (args.length > 1) check.problem(`give one version, not ${args.length} arguments (${args.join(' ')})`)
if (wanted !== undefined && !/^\d+$/.test(wanted))
  check.problem(`version ${JSON.stringify(wanted)} must be a whole number: one of the versions listed by nomad job history ${JOB}`)
check.done()
report({ job: JOB })

if (dryRun) {
  console.log([nomad.exportLine, `nomad job history ${JOB}`,
    wanted === undefined ? '# then, with the version to go back to: nomad job revert -detach cedra-storefront VERSION' : `nomad job revert -detach ${JOB} ${shq(wanted)}`,
    `# then follow the deployment: nomad job deployments -latest ${JOB}`].join('\n'))
  exit(EXIT.done)
}

// Plan: the job's versions (reading them also proves the cluster answers and accepts the token)
step(`Read the history of ${JOB}`)
const { server } = await nomadVersions(nomad)
if (!atLeast(server, '1.10')) nomadWithTokens(nomad, submitTokens)
const history = await nomad.$`nomad job history -json ${JOB}`
if (!history.ok) {
  // command/meta.go@v1.6.10 and @v2.0.5: `No job(s) with prefix or ID "x" found` (capital ID).
  if (/No job\(s\) with prefix or ID/.test(history.stderr)) refuse([`${JOB} is not deployed on ${nomad.addr}: there is nothing to revert`])
  const { message, code } = nomadError(nomad, history)
  if (code !== EXIT.refused) fail(`nomad job history: ${message}`)
  refuse([`nomad job history: ${message}`])
}
const versions = (JSON.parse(history.stdout) as Version[]).sort((a, b) => b.Version - a.Version)
const current = versions[0]
if (wanted === undefined) {
  printHistory(versions)
  refuse([`give the version to go back to: npx tsx deploy/revert_storefront.mts <version> (the current one is ${current.Version})`])
}
const target = Number(wanted)
if (target === current.Version) {
  printHistory(versions)
  refuse([`version ${target} is the current version of ${JOB}: nothing to revert; give an earlier one (history above)`])
}
if (!versions.some((v) => v.Version === target)) {
  printHistory(versions)
  refuse([`${JOB} has no version ${target} (history above)`])
}
if (planOnly) {
  const line = `--plan: a revert would register the specification of version ${target} of ${JOB} again, as a new version, replacing version ${current.Version}`
  report({ outcome: 'planned', message: line, changes: true, version: current.Version })
  console.log(line)
  console.log('Nothing was changed (--plan reads the cluster only).')
  exit(EXIT.done)
}

// --- point of no return ---
report({ acted: true })
step(`Revert ${JOB} from version ${current.Version} to version ${target}`)
const reverted = await nomad.$`nomad job revert -detach ${JOB} ${String(target)}`
if (!reverted.ok) {
  const problem = flowProblem(reverted.stderr, 'token', server)
  fail(`nomad job revert: ${problem ? `${problem}; Nomad registered nothing` : nomadError(nomad, reverted).message}`)
}
// The version this revert registered: the first after the modify index read above (none: unchanged).
const version = (await versionAfter(nomad, JOB, current.JobModifyIndex)) ?? current.Version
if (version === current.Version) {
  // Nomad registers no new version when the old specification is the current one.
  const line = `${JOB} version ${current.Version} already has the specification of version ${target}: Nomad registered nothing new`
  report({ outcome: 'unchanged', message: line, version: current.Version })
  console.log(line)
  exit(EXIT.done)
}
step(`Follow the deployment of ${JOB} version ${version} (version ${target} again)`)
report({ version })
const result = await followDeployment(nomad, JOB, version, timeout)

// Report
reportOutcome(result)
if (result.outcome === 'canary') {
  report({ next: ['npx tsx deploy/promote_storefront.mts', `npx tsx deploy/revert_storefront.mts ${current.Version}`] })
  console.log(`\nCheck the canary (nomad alloc logs -f -job ${JOB}; its /api/health), then either`)
  console.log(`  ${'promote it to every instance:'.padEnd(31)}npx tsx deploy/promote_storefront.mts`)
  console.log(`  ${`or go back to version ${current.Version}:`.padEnd(31)}npx tsx deploy/revert_storefront.mts ${current.Version}`)
  console.log(`The same with the nomad CLI:\n  nomad job promote ${JOB}\n  nomad job revert ${JOB} ${current.Version}`)
}
if (result.outcome === 'failed' || result.outcome === 'timeout') process.exitCode = EXIT.failed
console.log(`
Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${result.deployment ? `\n  nomad deployment status ${result.deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB}
  nomad job history ${JOB}`)

// ---------------------------------------------------------------------------------------------

/** The job's versions, newest first, as a table on stdout. */
function printHistory(list: Version[]) {
  const rows = list.map((v) => [
    String(v.Version),
    v.Stable ? 'yes' : 'no',
    new Date(v.SubmitTime / 1e6).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    (v.TaskGroups ?? []).flatMap((g) => g.Tasks ?? []).map((t) => t.Config?.image).filter(Boolean).join(' ') || '-',
    v === list[0] ? '(current)' : '',
  ])
  const header = ['VERSION', 'STABLE', 'SUBMITTED', 'IMAGE', '']
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  for (const r of [header, ...rows]) console.log(r.map((c, i) => c.padEnd(width[i])).join('  ').trimEnd())
}
