#!/usr/bin/env -S npx tsx
// deploy_valkey: deploy Valkey 8.0, the storefront's shared ISR cache (jobs/valkey.nomad), with the local nomad CLI.
//
// Usage: npx tsx deploy/deploy_valkey.mts [--dry-run] [--plan] [--timeout 10m] [--env-file PATH]
//
// Runs `nomad job plan` (shows the diff, proves the cluster accepts the token), then
// `nomad job run -check-index N -detach`, and follows the deployment to its outcome. When the plan
// shows no change at all, nothing is run. The job needs, before its first deploy:
//   - the host volume "valkey_data" on a client: deploy/deploy_valkey_volume.mts creates the directory
//     and prints the client block to add by hand (no script changes the Nomad configuration);
//   - valkey_password in Vault at STOREFRONT_VAULT_PATH: deploy/put_storefront_secrets.mts.
// The job reads the password from Vault itself (a template); this script never sees it, and never
// hands VAULT_TOKEN to nomad. The cluster's version decides how the job reaches Vault (workload
// identity and a role on 1.10+, legacy policies on 1.6): a mismatch is refused before the run. The Vault path given to the job comes from STOREFRONT_VAULT_PATH, the
// setting put_storefront_secrets writes to, so the two cannot drift.
// Releases: from the plan to the end the run holds the job's lock (Nomad 1.7+: a concurrent deploy of
// valkey is refused, exit 2, naming who holds it; DEPLOY_LOCK_WAIT waits instead). A deployment
// followed to successful is tagged valkey-<kit commit> (this repository's commit; Nomad 1.9+; the kit's
// tags beyond the last DEPLOY_KEEP_RELEASES are unset) and every outcome is written to the release
// record, the Nomad Variable nomad/jobs/valkey/releases (nomad var get -item history nomad/jobs/valkey/releases).
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        STOREFRONT_VAULT_PATH (default secret/cedra/prod), STOREFRONT_VAULT_MOUNT (default: its first
//          segment; name a nested KV v2 mount such as team/kv), VALKEY_DATA_DIR (default /opt/valkey_data,
//          only shown in the host_volume reminder),
//        DEPLOY_VAULT_AUTH (optional: identity or token; unset: identity on Nomad 1.10+, token on 1.6,
//          token on 1.7-1.9 unless set), STOREFRONT_VAULT_ROLE (default cedra-storefront: the Vault role
//          of the workload identity), DEPLOY_VAULT_SUBMIT_TOKEN and DEPLOY_CONSUL_SUBMIT_TOKEN (optional
//          secrets, Nomad 1.6-1.9 only: the submitter tokens a cluster without allow_unauthenticated demands),
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
import { exit, root, start, step } from './lib/env.mts'
import { deployPlanned, planCommands, planJob, reportPlan } from './lib/deployment.mts'
import { chooseFlow, vaultSettings } from './lib/identity.mts'
import { nomadConnection, nomadVersions, timeoutSeconds } from './lib/nomad.mts'
import { lockJob } from './lib/lock.mts'
import { concludeKitRelease, keepReleases, kitCommit, kitReleaseCommands, lockWait } from './lib/release.mts'
import { volumeReminder } from './lib/volume.mts'

const JOB = 'valkey'
const FILE = path.join(root, 'jobs/valkey.nomad')

// Check
const { check, dryRun, planOnly, flags } = start(import.meta.url, { options: { timeout: { type: 'string' } }, plan: true })
const nomad = nomadConnection(check)
const secretPath = check.kvPath('STOREFRONT_VAULT_PATH', 'secret/cedra/prod', check.optional('STOREFRONT_VAULT_MOUNT'))
const dataDir = check.remotePath('VALKEY_DATA_DIR', '/opt/valkey_data')
const vaultAuth = vaultSettings(check)
const timeout = timeoutSeconds(flags.timeout, check)
const keep = keepReleases(check)
const wait = lockWait(check)
check.done()
const vars: Record<string, string> = { vault_secret: secretPath.api }
const needs = `Valkey needs the host volume "valkey_data" on a client (deploy/deploy_valkey_volume.mts) and valkey_password in Vault at ${secretPath.path} (deploy/put_storefront_secrets.mts)`

if (dryRun) {
  console.log(`# ${needs}`)
  console.log('# vault_auth: identity on Nomad 1.10+ (workload identity); token on 1.6 (legacy policies); on 1.7-1.9 DEPLOY_VAULT_AUTH, default token')
  const dryVault = { vault_auth: vaultAuth.auth ?? 'identity', ...(vaultAuth.auth !== 'token' ? { vault_role: vaultAuth.role } : {}) }
  console.log(planCommands(nomad, FILE, { ...vars, ...dryVault }).join('\n'))
  console.log(`# then follow the deployment: nomad job deployments -latest ${JOB}`)
  console.log(kitReleaseCommands(JOB, 'valkey', FILE, await kitCommit(root)).join('\n'))
  exit(0)
}

// Plan
console.error(`note: ${needs}`)
step(`Ask Nomad at ${nomad.addr} which version it runs`)
const { flow, vars: flowVars } = chooseFlow(nomad, await nomadVersions(nomad), vaultAuth)
Object.assign(vars, flowVars)
// From here to the end of the run no other deploy of the job can start (a --plan changes nothing: no lock).
if (!planOnly) await lockJob(nomad, JOB, 'deploy_valkey.mts', wait)
step(`Plan ${JOB} (password from Vault at ${secretPath.api})`)
const plan = await planJob(nomad, JOB, FILE, vars, flow)
if (planOnly) reportPlan(plan)

// --- point of no return ---
const result = await deployPlanned(nomad, plan, timeout)
await concludeKitRelease(nomad, JOB, 'valkey', FILE, result, keep)

// Report
console.log(`
Before the first deploy (both one-time, neither applied by this script):
  - valkey_password in Vault at ${secretPath.path}: npx tsx deploy/put_storefront_secrets.mts
${volumeReminder(nomad, 'valkey_data', dataDir, 'deploy/deploy_valkey_volume.mts')}
${flow === 'identity' && plan.created ? `${vaultSetupSteps(vaultAuth.role, secretPath.api)}
` : ''}A deployment that stays pending usually lacks one of them: see nomad job status ${JOB} ("missing compatible host volumes")
or the alloc's events ("Missing: vault.read(${secretPath.api})").

Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${result.deployment ? `\n  nomad deployment status ${result.deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB} valkey
  nomad alloc logs -f -job ${JOB} exporter
  consul catalog nodes -service=valkey
  nomad job history ${JOB}`)

// ---------------------------------------------------------------------------------------------

/** The one-time Vault side of workload identity, printed for a person (no script applies it). */
function vaultSetupSteps(role: string, api: string): string {
  return `One-time Vault setup for workload identity (by hand, once per cluster; no script applies it):
  nomad setup vault -check          # Nomad 1.7.3+: what is missing on the Nomad and Vault side
  nomad setup vault                 # or by hand: a JWT auth method at jwt-nomad, bound_audiences "vault.io"
  # then a role for these jobs, and its policy:
  vault policy write ${role} - <<'EOF'
path "${api}" { capabilities = ["read"] }
EOF
  vault write auth/jwt-nomad/role/${role} - <<'EOF'
{"role_type": "jwt", "bound_audiences": ["vault.io"], "bound_claims": {"nomad_job_id": ["cedra-storefront", "valkey"]},
 "user_claim": "/nomad_job_id", "user_claim_json_pointer": true, "token_type": "service",
 "claim_mappings": {"nomad_namespace": "nomad_namespace", "nomad_job_id": "nomad_job_id", "nomad_task": "nomad_task"},
 "token_policies": ["${role}"], "token_period": "30m"}
EOF
  # and on every Nomad server, in its vault block: default_identity { aud = ["vault.io"] ttl = "1h" }`
}
