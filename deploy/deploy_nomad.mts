#!/usr/bin/env -S npx tsx
// deploy_nomad: deploy the Agent Economique job (jobs/agent.nomad, raw_exec) with the local nomad CLI.
//
// Usage: npx tsx deploy/deploy_nomad.mts [--dry-run] [--plan] [--timeout 10m] [--env-file PATH]
//
// Runs `nomad job plan` (shows the diff, proves the cluster accepts the token), then
// `nomad job run -check-index N -detach`, and follows the deployment to its outcome. When the plan
// shows no change at all, nothing is run. The binary path handed to the job comes from the same
// settings deploy_binary.mts uploads to, and so do the clients it may run on: the Nomad nodes of
// DEPLOY_SSH_HOST / DEPLOY_SSH_HOSTS (matched by address or name as deploy_binary matches them, each
// checked ready, eligible, with a healthy raw_exec driver), passed as -var nodes (a constraint in the
// job). Prints the raw_exec plugin block to add by hand to the client configuration; never changes
// the Nomad configuration.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https
//        (see certs/README.md).
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        AGENT_REMOTE_DIR (default /root/data), AGENT_BINARY_NAME (default agent),
//        DEPLOY_SSH_HOST or DEPLOY_SSH_HOSTS (required: the hosts deploy_binary uploads to; no ssh here),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            ask the cluster what a deploy would do (the real nomad job plan); change nothing
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or already up to date), 1 a step failed, 2 refused before changing anything.
import path from 'node:path'
import { exit, root, start, step } from './lib/env.mts'
import { deployPlanned, planCommands, planJob, reportPlan } from './lib/deployment.mts'
import { nomadConnection, nomadVersions, timeoutSeconds } from './lib/nomad.mts'
import { clientNodes } from './lib/nodes.mts'
import { sshHosts } from './lib/ssh.mts'

const JOB = 'agent-economique'
const FILE = path.join(root, 'jobs/agent.nomad')

// Check
const { check, dryRun, planOnly, flags } = start(import.meta.url, { options: { timeout: { type: 'string' } }, plan: true })
const nomad = nomadConnection(check)
const dir = check.remotePath('AGENT_REMOTE_DIR', '/root/data')
const name = check.remoteName('AGENT_BINARY_NAME', 'agent')
const hosts = sshHosts(check)
const timeout = timeoutSeconds(flags.timeout, check)
check.done()
const vars = { binary_path: `${dir}/${name}`, nodes: '$NODE_IDS' }

if (dryRun) {
  console.log(`# NODE_IDS: the IDs of the Nomad nodes of ${hosts.join(', ')}, comma-separated (nomad node status -json: the node whose Address, or else Name, is the host)`)
  console.log(planCommands(nomad, FILE, vars).join('\n'))
  console.log(`# then follow the deployment: nomad job deployments -latest ${JOB}`)
  exit(0)
}

// The clients that hold the binary: the job is constrained to them
step(`Ask Nomad at ${nomad.addr} which clients ${hosts.join(', ')} are`)
await nomadVersions(nomad)
vars.nodes = [...(await clientNodes(nomad, hosts, 'raw_exec')).values()].map((n) => n.ID).join(',')

// Plan
step(`Plan ${JOB} (binary ${vars.binary_path} on ${hosts.join(', ')})`)
const plan = await planJob(nomad, JOB, FILE, vars)
if (planOnly) reportPlan(plan)

// --- point of no return ---
const result = await deployPlanned(nomad, plan, timeout)

// Report
console.log(`
The raw_exec driver must be enabled on the client (a manual, one-time change; no script applies it):
  /etc/nomad.d/nomad.hcl:   plugin "raw_exec" { config { enabled = true } }
  then: sudo systemctl restart nomad

Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${result.deployment ? `\n  nomad deployment status ${result.deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB}
  nomad job history ${JOB}`)
