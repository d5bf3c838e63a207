#!/usr/bin/env node
// Test double of the nomad CLI and its cluster, at the version the test names (state.version: "1.6.10",
// "1.9.7", "1.10.5", "2.0.5"; default 2.0.5; state.cliVersion for a local CLI of another version).
// Each version-dependent behaviour names the source it imitates (path@tag in hashicorp/nomad).
// Faithful to ../shared/reference/nomad-vault-cli.md (corrected) and:
// flags before positional arguments (Go `flag`), plan exit codes 0/1/255 and its trailer,
// -check-index semantics, Nomad Variables with check-and-set, job versions, deployments that go
// running -> successful, or canary -> waiting for promotion -> successful, or -> failed (auto-revert).
// Deployments as Nomad runs them: the first version of a job places no canary; a canary waits for
// promotion unless the job's auto_promote is true; an unchanged specification registers no new
// version; a failed deployment with auto_revert registers the latest STABLE version again, as a new
// version with its own (canary-less, in-place) deployment. `job revert` places a canary like a deploy.
// A job keeps 6 versions without a tag (nomad/state/state_store.go@v2.0.5 upsertJobVersion; tagged ones
// are not counted; the newest stable one is kept; all count at 1.6.10): `job history`, `job inspect
// -version` and `job revert` no longer know the pruned ones (their deployments and allocations stay).
// `job history -json` / `job inspect -json` print api.Job: Meta (the job-level meta block, null without
// one), each task's Driver and Config (image, command), Stable, Version, SubmitTime, JobModifyIndex and,
// from a 1.9 CLI, VersionTag. 1.9.0+: `job tag apply [-name] [-description] [-version] <job>`, `job tag
// unset -name N <job>`, `job revert <job> <tag>`. 1.7.0+: `var lock [-ttl] [-delay] [-early-return]
// [-shell=false] [-verbose] [-max-retry] [-backoff] <path> [@spec.json] child...` runs its child while
// it holds the lock (renewed every 0.7 x TTL; expired 2 x TTL after the last renewal, then held LockDelay
// more). Older CLIs print the parent command's help (exit 1) for these, as the real one does.
// State lives in $STUB_STATE/nomad.json; every call is appended to $STUB_STATE/calls.jsonl.
// jobs[name].versions: [{ version, stable, submitTime, jobModifyIndex, meta, taskSpecs, versionTag?:
//   { Name, Description, TaggedTime }, ... }] in version order (find one by its number: versionOf);
//   jobs[name].pruned: the versions pruned from the history (the copy the allocations keep).
// vars[path].Lock: { ID, TTL, LockDelay } (Go duration strings); varLocks[path]: { ID, pid, ttlMs,
//   delayMs, expiresAt } — the servers' timer (nomad/locks.go@v2.0.5), renewed by the holder.
//
// Knobs in the state file (tests set them with setState):
//   mode: "ok" | "forbidden" (403) | "unreachable" | "hang"
//   outcome: "successful" | "failed" — how the next deployment ends (default successful); read again
//            by `job promote` for the rest of a canary deployment
//   polls: how many status reads a deployment stays "running" before it moves on (default 2)
//   inplace: true — a changed job plans as an in-place update (exit 0, "+/- Job")
//   raceAfterPlan: true — another deploy registers the job right after this plan (concurrency)
//   raceAfterRun: true — another deploy registers a newer version right after this run's
//   token: "x" — the only token the cluster accepts (403 for any other)
//   placement: "missing compatible host volumes" — plan reports the scheduler cannot place the job
//   fail: ["job inspect", ...] — these subcommands fail as on a cluster that lost its leader (500)
//   barrier: { "job plan": 2 } — a call of that subcommand waits until that many calls of it have
//            arrived, so that concurrent deploys all read the same state (e.g. the same modify index)
//   slow: { "var put": 3 } — that subcommand waits so many seconds before it acts (a slow server)
//   signalAfter: { cmd: "job plan", signal: "SIGTERM", pid: N } — that call, as it ends, signals N
//   version / cliVersion: see above
//   nodeRead: false — the token may not read the servers (server members answers 403)
//   tokenManagement: true — the `token` is a management token: it sees a variable's Lock (readerView)
//   vaultDefaultIdentity: true — (1.7-1.9) the servers set vault.default_identity (workload identity)
//   vaultAllowUnauthenticated: false — (1.6-1.9) a submitter must give a Vault token (VAULT_TOKEN)
//   consulAllowUnauthenticated: false — (1.6-1.9) a submitter must give a Consul token (CONSUL_HTTP_TOKEN) to job run/revert
//   vaultDefaultRole: true — (1.10+) the client's create_from_role / the auth method's default_role
//            grants the secret to a vault block without a role (default: no such role)
//   consulACL: true — (1.10+) Consul ACLs on: a template that reads Consul gets nothing without a
//            consul block in its group or task (#25298)
//   failureLog: "text" — what a failing task writes to stderr (test/stubs/nomad-allocs.mjs)
//   nodes, hostVolumes, volumeReadyAfter, namespaces — the clients and dynamic host volumes
//            (test/stubs/nomad-nodes.mjs; default: one node, node-1, that can run everything)
// Allocations (placed by deployments; `job allocs`, `alloc status`, `alloc logs`): nomad-allocs.mjs.
// Nodes, the scheduler's choice of a node, `node status`, `volume register`, `volume status`: nomad-nodes.mjs.
// A job no node can take: the plan says "Failed to place"; `job run` registers it and its deployment
// stays "running" with nothing placed (its evaluation is blocked; Nomad starts no progress deadline
// before a first placement: nomad/state/state_store.go@v2.0.5 L6022-6033); each status read tries
// again, as the blocked evaluation does when a node or a volume changes.
// Like the server, the double applies one call at a time: a call takes a lock file before it reads
// the state it acts on (after any barrier or hang) and writes it back atomically (rename).
import { spawn } from 'node:child_process'
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { barrier, err, hang, lock, logCall, out, readState, signalAfter, slowDown, unlock, writeState } from './common.mjs'
import { allocations, versionAt } from './nomad-allocs.mjs'
import { dryRunLines, evalExpr, evaluation, fingerprintVolumes, hclItems, metricsLines, nodeCommands, placementSpec } from './nomad-nodes.mjs'

const load = () => readState('nomad', (s) => {
  s.index ??= 10
  s.jobs ??= {}
  s.vars ??= {}
  s.mode ??= 'ok'
  expireLocks(s)
  return s
})
// The knobs first; the state is read again under the lock (below) before the call acts on it.
let state = load()
const save = () => writeState('nomad', state)

const VERSION = state.version ?? '2.0.5'
const CLI = state.cliVersion ?? VERSION
/** Is "1.10.5" at least "1.10"? */
const atLeast = (v, w) => { const a = v.split('.').map(Number), b = w.split('.').map(Number); for (let i = 0; i < b.length; i++) if ((a[i] ?? 0) !== b[i]) return (a[i] ?? 0) > b[i]; return true }
const server = (w) => atLeast(VERSION, w)
const cli = (w) => atLeast(CLI, w)

const argv = process.argv.slice(2)
const stdin = readStdinIfAny()
logCall('nomad', argv, ['NOMAD_ADDR', 'NOMAD_TOKEN', 'NOMAD_CACERT', 'NOMAD_CLIENT_CERT', 'NOMAD_CLIENT_KEY',
  'NOMAD_TLS_SERVER_NAME', 'NOMAD_NAMESPACE', 'NOMAD_REGION', 'VAULT_TOKEN', 'CONSUL_HTTP_TOKEN'], stdin)

const die = (msg, code = 1) => { err(msg); process.exit(code) }
let blockedMonitor = false

const GLOBAL = { address: 1, token: 1, region: 1, namespace: 1, 'ca-cert': 1, 'ca-path': 1, 'client-cert': 1, 'client-key': 1, 'tls-server-name': 1, 'tls-skip-verify': 0, insecure: 0, 'no-color': 0, 'force-color': 0 }
// Flags per CLI version: -vault-token / -consul-token leave run, plan and validate in 1.10.0, and
// revert's -vault-token in 1.10.0, its -consul-token in 1.11.3 (command/job_*.go at those tags);
// -hcl1 leaves in 1.9.0.
const tokens = (...names) => Object.fromEntries(names.map((n) => [n, 1]))
const COMMANDS = {
  'job run': { detach: 0, verbose: 0, output: 0, 'policy-override': 0, 'preserve-counts': 0, json: 0, 'hcl2-strict': 0, 'check-index': 1, 'consul-namespace': 1, 'vault-namespace': 1, var: 2, 'var-file': 2, 'eval-priority': 1, ...(cli('1.10') ? {} : tokens('consul-token', 'vault-token')), ...(cli('1.9') ? {} : { hcl1: 0 }) },
  'job plan': { diff: 0, 'policy-override': 0, verbose: 0, json: 0, 'hcl2-strict': 0, 'vault-namespace': 1, var: 2, 'var-file': 2, ...(cli('1.10') ? {} : tokens('vault-token')), ...(cli('1.9') ? {} : { hcl1: 0 }), ...(cli('2.0.5') ? { 'json-output': 0, t: 1 } : {}) },
  'job validate': { json: 0, 'hcl2-strict': 0, 'vault-namespace': 1, var: 2, 'var-file': 2, ...(cli('1.10') ? {} : tokens('vault-token')), ...(cli('1.9') ? {} : { hcl1: 0 }) },
  'job promote': { group: 2, detach: 0, verbose: 0 },
  'job revert': { detach: 0, verbose: 0, ...(cli('1.10') ? {} : tokens('vault-token')), ...(cli('1.11.3') ? {} : tokens('consul-token')) },
  'server members': { detailed: 0, verbose: 0, json: 0, t: 1 },
  'job status': { short: 0, evals: 0, 'all-allocs': 0, verbose: 0 },
  'job history': { p: 0, full: 0, json: 0, version: 1, t: 1 },
  'job inspect': { json: 0, t: 1, version: 1 },
  'job deployments': { json: 0, t: 1, latest: 0, verbose: 0, all: 0 },
  // -ui: 1.10.0 (command/deployment_status.go@v1.10.0, command/alloc_status.go@v1.10.0).
  'deployment status': { verbose: 0, json: 0, monitor: 0, wait: 1, t: 1, ...(cli('1.10') ? { ui: 0 } : {}) },
  // command/node_status.go: the same flags at v1.6.10 and v1.9.7; -ui from 1.10.0.
  'node status': { short: 0, os: 0, quiet: 0, verbose: 0, allocs: 0, self: 0, stats: 0, json: 0, t: 1, filter: 1, 'per-page': 1, 'page-token': 1, ...(cli('1.10') ? { ui: 0 } : {}) },
  // command/volume_register.go: no flag of its own at v1.9.7 (and v1.6.10); -id and -policy-override from 1.10.0.
  'volume register': cli('1.10') ? { id: 1, 'policy-override': 0 } : {},
  // command/volume_status.go: -type, -short, -verbose, -json, -t at v1.6.10 and v1.9.7; -node and -node-pool from 1.10.0.
  'volume status': { type: 1, short: 0, verbose: 0, json: 0, t: 1, ...(cli('1.10') ? { node: 1, 'node-pool': 1 } : {}) },
  // command/job_allocs.go: the same four flags at v1.6.10, v1.9.7, v1.10.5, v2.0.5.
  'job allocs': { all: 0, json: 0, t: 1, verbose: 0 },
  'alloc status': { short: 0, verbose: 0, stats: 0, json: 0, t: 1, ...(cli('1.10') ? { ui: 0 } : {}) },
  // command/alloc_logs.go: -tail is a bool, -n/-c integers; -group (with -job) from 1.10.0 (#25568).
  'alloc logs': { verbose: 0, job: 0, tail: 0, f: 0, stderr: 0, stdout: 0, n: 1, c: 1, task: 1, ...(cli('1.10') ? { group: 1 } : {}) },
  'var get': { item: 1, out: 1, template: 1 },
  'var put': { 'check-index': 1, force: 0, in: 1, out: 1, template: 1, verbose: 0 },
  'var list': { 'per-page': 1, 'page-token': 1, filter: 1, out: 1, template: 1 },
  // command/job_tag_apply.go, job_tag_unset.go: from 1.9.0 (absent at v1.8.4), the same flags at v1.9.7 and v2.0.5.
  ...(cli('1.9') ? { 'job tag apply': { name: 1, description: 1, version: 1 }, 'job tag unset': { name: 1 } } : {}),
  // command/var_lock.go: from 1.7.0 (absent at v1.6.10), unchanged up to v2.0.5; -out is declared but unused.
  ...(cli('1.7') ? { 'var lock': { verbose: 0, ttl: 1, delay: 1, shell: 0, 'early-return': 0, 'max-retry': 1, backoff: 1, out: 1 } } : {}),
}

// command/version.go@v2.0.5 (same at v1.6.10): FullVersionNumber(true).
// fail: ["version"] — a broken CLI install (the binary cannot run: the shell says so, 126).
if (argv[0] === 'version' && state.fail?.includes('version')) die(`${process.argv[1]}: cannot execute binary file: Exec format error`, 126)
if (argv[0] === 'version' || argv[0] === '-version' || argv[0] === '--version') { out(`Nomad v${CLI}\nBuildDate 2026-08-12T10:00:00Z\nRevision 0123456789abcdef0123456789abcdef01234567`); process.exit(0) }
// Nested commands: mitchellh/cli v1.1.5 (go.mod@v1.6.10 .. v1.9.x; hashicorp/cli v1.1.7 at v2.0.5, the same
// code) cli.go processArgs takes the longest known command among the words before the first flag.
let cmd = `${argv[0]} ${argv[1]}`
let words = 2
if (cmd === 'job tag' && cli('1.9') && ['apply', 'unset'].includes(argv[2])) { cmd = `job tag ${argv[2]}`; words = 3 }
// A parent command whose Run returns cli.RunResultHelp (command/job.go, var.go@v1.6.10; job_tag.go@v2.0.5):
// cli.go Run prints its help and immediate subcommands (commandHelp, defaultHelpTemplate) to the
// ErrorWriter, which main.go leaves unset so that it is the HelpWriter, os.Stdout; exit 1.
if (cmd === 'job tag') parentHelp(cli('1.9') ? 'job tag' : 'job')
if (cmd === 'var lock' && !cli('1.7')) parentHelp('var')
const spec = COMMANDS[cmd]
if (!spec) die(`Unknown command: ${argv.join(' ')} (not in this test double)`, 127)
const errCode = cmd === 'job plan' ? 255 : 1
const { flags, args } = parseFlags(argv.slice(words), { ...GLOBAL, ...spec })
const allocs = allocations({ state: () => state, cli, flags, args, die, out, hint, findJob, version: VERSION })
const nodes = nodeCommands({ state: () => state, version: VERSION, cli, server, flags, args, die, out, err, hint, stdin, addr: process.env.NOMAD_ADDR ?? 'http://127.0.0.1:4646',
  readFile: (f) => readFileSync(f, 'utf8'), nowNs: () => Date.now() * 1e6, nextIndex: () => ++state.index, uuid: randomUUID,
  allocsOf: (nodeID) => allocs.onNode(nodeID), allocStub: (a) => allocs.listStub(a) })
// The node and volume commands print their API errors as the real CLI does (command/node_status.go, volume_*.go@v2.0.5).
const NEW_API = ['node status', 'volume register', 'volume status', 'job tag apply', 'job tag unset']

// Connection: the real CLI fails on every API call when it cannot talk to the server.
const addr = process.env.NOMAD_ADDR ?? 'http://127.0.0.1:4646'
const api = `${addr}/v1/${{ 'node status': args.length || flags.self ? 'nodes?prefix=' + (args[0] ?? '') : 'nodes', 'volume register': 'volume/host/register', 'volume status': 'volumes?type=host' }[cmd] ?? cmd.replace(' ', '/')}`
const method = cmd === 'volume register' ? 'Put' : 'Get'
await barrier('nomad', cmd, state.barrier?.[cmd])
await slowDown(cmd, state.slow?.[cmd])
if (state.mode === 'hang') await hang()
signalAfter(cmd, state.signalAfter)
// `var lock` talks to the servers several times (acquire, renew, release) while its child runs.
if (cmd === 'var lock') {
  // An acquire the server refuses: command/var_lock.go@v2.0.5 prints "Lock error:" and the LockLeaser's
  // error (api/locks.go@v2.0.5 start: "locks: %w", in a go-multierror list), exit 1, without running the
  // child. A 500 or 429 is retried 5 times first (api/retry.go@v2.0.5 retryPut: 1+2+4+8+16 s); the
  // double answers at once. A 403 or a connection error is not retried.
  const lockFail = (why) => die(`Lock error:1 error occurred:\n\t* locks: ${why}\n\n`)
  const vpath = (args[0] ?? '').replace(/^\/+|\/+$/g, '')
  if (state.mode === 'unreachable') lockFail(`Put "${addr}/v1/var/${vpath}?lock-acquire": dial tcp 10.9.8.7:4646: connect: connection refused`)
  if (state.mode === 'forbidden' || (state.token && process.env.NOMAD_TOKEN !== state.token)) lockFail('Unexpected response code: 403 (Permission denied)')
  if (state.fail?.includes(cmd)) lockFail('Unexpected response code: 500 (No cluster leader)')
  await varLock()
}
lock('nomad')
state = load()
const lead = NEW_API.includes(cmd) ? '' : 'Error: '
if (state.mode === 'unreachable') die(`${lead}${errPrefix()}: ${method} "${api}": dial tcp 10.9.8.7:4646: connect: connection refused`, errCode)
// api/api.go: NOMAD_SKIP_VERIFY turns verification off (the kit must never let it).
const skipVerify = /^(1|t|T|true|TRUE|True)$/.test(process.env.NOMAD_SKIP_VERIFY ?? '')
if (addr.startsWith('https://') && !skipVerify && !(process.env.NOMAD_CACERT && existsSync(process.env.NOMAD_CACERT)))
  die(`${lead}${errPrefix()}: ${method} "${api}": tls: failed to verify certificate: x509: certificate signed by unknown authority`, errCode)
if (state.mode === 'forbidden' || (state.token && process.env.NOMAD_TOKEN !== state.token)) {
  // api/variables.go: Variables.Read reports a 403 as not found up to 1.11.1; from 1.11.2 it is an error.
  if (cmd === 'var get' && !cli('1.11.2')) die('Variable not found')
  die(`${lead}${errPrefix()}: Unexpected response code: 403 (Permission denied)`, errCode)
}
// (a three-word command fails under its own name or its first two words: fail: ["job tag"])
if (state.fail?.includes(cmd) || state.fail?.includes(cmd.split(' ').slice(0, 2).join(' '))) die(`${errPrefix()}: Unexpected response code: 500 (No cluster leader)`, errCode)
// nomad/status_endpoint.go@v2.0.5 Members: node:read (ACL) needed.
if (cmd === 'server members' && state.nodeRead === false) die('Error querying servers: Unexpected response code: 403 (Permission denied)')
// nomad/node_endpoint.go@v2.0.5 List / GetNode: node:read too.
if (cmd === 'node status' && state.nodeRead === false) die(`${errPrefix()}: Unexpected response code: 403 (Permission denied)`)

switch (cmd) {
  case 'job plan': plan(); break
  case 'job run': run(); break
  case 'job validate': admission(parseJobFile(one('<path>'))); out('Job validation successful'); break
  case 'job inspect': inspect(); break
  case 'job status': status(); break
  case 'job history': history(); break
  case 'job deployments': deployments(); break
  case 'job promote': promote(); break
  case 'job revert': revert(); break
  case 'deployment status': deploymentStatus(); break
  case 'server members': members(); break
  case 'node status': nodes.nodeStatus(); break
  case 'volume register': nodes.volumeRegister(); break
  case 'volume status': nodes.volumeStatus(); break
  case 'job allocs': allocs.jobAllocs(); break
  case 'alloc status': allocs.allocStatus(); break
  case 'alloc logs': allocs.allocLogs(); break
  case 'var get': varGet(); break
  case 'var put': varPut(); break
  case 'var list': out(JSON.stringify(Object.values(state.vars).map(({ Items, ...meta }) => readerView(meta)), null, 2)); break
  case 'job tag apply': tagApply(); break
  case 'job tag unset': tagUnset(); break
}
fingerprintVolumes(state)
save()
if (blockedMonitor) {
  // An attached `job run` monitors a deployment that never ends (command/monitor.go@v2.0.5 L288-303): it waits, as the real CLI does.
  unlock('nomad')
  await hang()
}

// ------------------------------------------------------------------------------------------------

/**
 * The servers' admission of a job for Vault (Job.Register, Job.Plan and Job.Validate run it first,
 * before the ACL and -check-index checks): the warnings, or the error as the CLI shows it.
 * - 1.10+: no token flow; `policies` accepted and silently dropped (command/agent/job_endpoint.go@v1.10.0).
 * - 1.7-1.9: nomad/job_endpoint_hooks.go@v1.9.7 validateVaultIdentity: with vault.default_identity,
 *   policies are ignored with a warning; without it, a block with no policies is an error.
 * - 1.6-1.9: nomad/job_endpoint_hook_vault.go@v1.9.7: a submitter Vault token is needed when
 *   allow_unauthenticated = false (and, from 1.7.3, no default_identity); giving one warns from 1.7.
 */
function admission(job) {
  const warnings = []
  const error = (msg) => die(`${errPrefix()}: Unexpected response code: 500 (1 error occurred:\n\t* ${msg}\n\n)`, errCode)
  if (server('1.10') || !job.vault.length) return warnings
  const identity = server('1.7') && state.vaultDefaultIdentity
  for (const b of job.vault) {
    if (identity) { if (b.policies) warnings.push(`Task ${job.task} has a Vault block with policies but uses workload identity to authenticate with Vault, policies will be ignored`) }
    else if (!b.policies) error(`Task ${job.task} has a Vault block with an empty list of policies`)
  }
  const needToken = state.vaultAllowUnauthenticated === false && !(server('1.7.3') && identity)
  if (needToken && !process.env.VAULT_TOKEN) error('Vault used in the job but missing Vault token')
  if (process.env.VAULT_TOKEN && server('1.7')) warnings.push('Setting a Vault token when submitting a job is deprecated and will be removed in Nomad 1.9. Migrate your Vault configuration to use workload identity')
  return warnings
}

/**
 * 1.6-1.9 Job.Register (run, and revert through it): the submitter's Consul token, checked AFTER
 * -check-index (nomad/job_endpoint.go@v1.9.7 L249-269 checkConsulToken; gone in 1.10.0), for a job
 * with a Consul service or any template (nomad/consul.go ConsulUsages).
 */
function consulSubmitter(job) {
  if (server('1.10') || state.consulAllowUnauthenticated !== false) return
  if ((job.templates || /^\s*service\s*{/m.test(job.text)) && !process.env.CONSUL_HTTP_TOKEN)
    die(`${errPrefix()}: Unexpected response code: 500 (job-submitter consul token denied: missing consul token)`)
}

/** Why the allocations of this job fail at run time on this cluster (the deployment then fails), if they do. */
function runtimeProblem(job) {
  if (!server('1.10')) return undefined
  // 1.10+: a vault block without a role logs in with the client's create_from_role or the auth
  // method's default_role (nomad/structs/config/vault.go@v2.0.5); none here grants the secret.
  if ((job.vault ?? []).some((b) => !b.role) && !state.vaultDefaultRole) return 'vault'
  // #25298 (nomad/job_endpoint_hook_implicit_identities.go@v1.10.0): no consul block, no Consul
  // identity for the template; with Consul ACLs on, `range service` renders nothing.
  if (job.consulTemplate && !job.consulBlock && state.consulACL) return 'consul'
  return undefined
}

/** helper/warning.go@v1.9.7 MergeMultierrorWarnings. */
function warningText(list) {
  return `${list.length === 1 ? '1 warning:' : `${list.length} warnings:`}\n${list.map((w) => `\n* ${w}`).join('')}`
}

/** 1.10+ UI hints on stderr (command/meta.go@v2.0.5 showUIPath), unless NOMAD_CLI_SHOW_HINTS parses as false. */
function hint(description, route) {
  if (!cli('1.10')) return
  const v = process.env.NOMAD_CLI_SHOW_HINTS
  if (v !== undefined && /^(0|f|F|false|FALSE|False)$/.test(v)) return
  err(`\n\n==> ${description}: ${addr}/ui/${route}`)
}

/** `nomad server members -json` (command/server_members.go@v2.0.5): every server, its "build" tag. */
function members() {
  if (!flags.json) return out(`Name              Address   Port  Status  Leader  Raft Version  Build     Datacenter  Region\nserver-1.global  10.0.0.1  4648  alive   true    3             ${VERSION}  dc1         global`)
  out(JSON.stringify([{ Name: 'server-1.global', Addr: '10.0.0.1', Port: 4648, Status: 'alive', ProtocolMin: 1, ProtocolMax: 5, ProtocolCur: 2, DelegateMin: 2, DelegateMax: 5, DelegateCur: 4,
    Tags: { build: VERSION, dc: 'dc1', region: 'global', role: 'nomad', raft_vsn: '3', rpc_addr: '10.0.0.1', port: '4647' } }], null, 4))
}

function errPrefix() {
  return { 'job plan': 'Error during plan', 'job run': 'Error submitting job', 'var put': 'Error creating variable', 'var get': 'Error retrieving variable',
    'job inspect': 'Error inspecting job', 'job deployments': 'Error retrieving deployments', 'job history': 'Error retrieving job versions',
    'job promote': 'Error retrieving job', 'job revert': 'Error retrieving job versions',
    // command/job_allocs.go@v2.0.5 reads the job first (2.0.3+), @v1.6.10 the allocations only.
    'job allocs': cli('2.0.3') ? 'Error querying job' : 'Error retrieving allocations', 'alloc status': 'Error querying allocation', 'alloc logs': 'Error querying allocation',
    // command/node_status.go@v2.0.5 (the same at v1.6.10); command/volume_register_host.go, volume_status_host.go@v2.0.5 and volume_status_csi.go@v1.9.7.
    'node status': args.length || flags.self ? 'Error querying node info' : 'Error querying node status', 'volume register': 'Error registering volume',
    'volume status': !cli('1.10') || flags.type === 'csi' ? 'Error querying volumes' : args.length ? 'Error listing host volumes: error querying volumes' : 'Error querying host volumes',
    // command/meta.go@v2.0.5 jobIDByPrefix, the first call of job_tag_apply.go / job_tag_unset.go.
    'job tag apply': `Error querying job prefix "${args.at(-1)}"`, 'job tag unset': `Error querying job prefix "${args.at(-1)}"` }[cmd] ?? 'Error querying'
}





function parseFlags(list, known) {
  const flags = {}
  let i = 0
  for (; i < list.length; i++) {
    const a = list[i]
    if (a === '--') { i++; break }
    if (!a.startsWith('-') || a === '-') break
    let [name, value] = a.replace(/^--?/, '').split(/=(.*)/s)
    if (!(name in known)) { err(`flag provided but not defined: -${name}`); out(`Usage: nomad ${cmd} [options] ...`); process.exit(errCode) }
    if (known[name] === 0) { flags[name] = value === undefined ? true : value !== 'false'; continue }
    if (value === undefined) {
      if (i + 1 >= list.length) die(`flag needs an argument: -${name}`, errCode)
      value = list[++i]
    }
    if (known[name] === 2) (flags[name] ??= []).push(value)
    else flags[name] = value
  }
  return { flags, args: list.slice(i) }
}

function one(what) {
  if (args.length !== 1) die(`This command takes one argument: ${what}\nFor additional help try 'nomad ${cmd} -help'`, errCode)
  return args[0]
}

function readStdinIfAny() {
  // Only the commands that take stdin read it; reading a TTY or an open pipe would block.
  const a = process.argv.slice(2)
  const volume = a[0] === 'volume' && a[1] === 'register' && a.at(-1) === '-'
  if (!volume && !(a[0] === 'var' && a[1] === 'put' && (a.includes('-') || a.some((x) => /^[^-][^=]*=-$/.test(x))))) return undefined
  try { return readFileSync(0, 'utf8') } catch { return '' }
}


/** Enough of HCL2 to be strict about what matters here: job name, declared variables, canary, groups. */
function parseJobFile(file) {
  let text
  if (file === '-') text = readFileSync(0, 'utf8')
  else if (!existsSync(file)) die(`Error getting job struct: Error getting jobfile from "${file}": stat ${file}: no such file or directory`, errCode)
  else text = readFileSync(file, 'utf8')
  const job = text.match(/^job\s+"([^"]+)"\s*{/m)
  if (!job) die(`Error getting job struct: Error parsing job file from ${file}:\n${file}:1,1-1: Missing job block`, errCode)
  if ((text.match(/{/g) ?? []).length !== (text.match(/}/g) ?? []).length) die(`Error getting job struct: Error parsing job file from ${file}:\n${file}: Unclosed configuration block`, errCode)
  const declared = new Map([...text.matchAll(/^variable\s+"([^"]+)"\s*{([\s\S]*?)^}/gm)].map((m) => [m[1], m[2]]))
  const vars = {}
  for (const v of flags.var ?? []) {
    const [k, val] = v.split(/=(.*)/s)
    if (val === undefined) die(`Error parsing -var: ${v}: must be key=value`, errCode)
    if (!declared.has(k)) die(`Error getting job struct: Error parsing job file from ${file}:\n<value for var.${k}>:1,1-1: Undefined -var variable; A "${k}" variable was passed in, but was not found in known variables. To declare variable "${k}", place this block in one of your ".nomad.hcl" file.`, errCode)
    vars[k] = val
  }
  // jobspec2: a declared variable not given by -var is read from NOMAD_VAR_<name>.
  for (const k of declared.keys()) if (!(k in vars) && process.env[`NOMAD_VAR_${k}`] !== undefined) vars[k] = process.env[`NOMAD_VAR_${k}`]
  for (const [k, body] of declared) if (!(k in vars) && !/\bdefault\s*=/.test(body))
    die(`Error getting job struct: Error parsing job file from ${file}:\n${file}: Unset variable "${k}"; A used variable must be set or have a default value`, errCode)
  const groups = [...text.matchAll(/^\s*group\s+"([^"]+)"/gm)].map((m) => m[1])
  // The attributes the double acts on: a literal, or var.X (as given, else its default).
  const valueOf = (k) => (k in vars ? vars[k] : declared.get(k)?.match(/\bdefault\s*=\s*"?([^"\s]*)"?/)?.[1])
  const attr = (name, fallback) => {
    const v = text.match(new RegExp(`^\\s*${name}\\s*=\\s*(\\S+)`, 'm'))?.[1]
    const ref = v?.match(/^var\.(\w+)$/)
    return (ref ? valueOf(ref[1]) : v) ?? fallback
  }
  const canary = Number(attr('canary', 0))
  const count = Number(attr('count', 1))
  const autoPromote = String(attr('auto_promote', false)) === 'true'
  const autoRevert = String(attr('auto_revert', false)) === 'true'
  const image = text.match(/^\s*image\s*=\s*"([^"]*)"/m)?.[1].replace(/\$\{var\.(\w+)\}/g, (_, k) => valueOf(k) ?? '')
  const key = createHash('sha256').update(text).update(JSON.stringify(Object.entries(vars).sort())).digest('hex')
  const vault = vaultBlocks(text, valueOf)
  // api/tasks.go@v1.6.10: Vault has no Role (it comes in 1.7.0); HCL2 then says (jobspec2, hcl/v2 gohcl):
  if (vault.some((b) => b.role) && !cli('1.7')) {
    const line = text.split('\n').findIndex((l) => /^\s*role\s*=/.test(l)) + 1
    die(`Error getting job struct: Error parsing job file from ${file}:\n${file}:${line},11-15: Unsupported argument; An argument named "role" is not expected here.`, errCode)
  }
  const task = text.match(/^\s*task\s+"([^"]+)"/m)?.[1] ?? 'main'
  // For the allocations: every task (each group runs them all here), the restart block (defaults:
  // nomad/structs/structs.go@v2.0.5 DefaultServiceJobRestartPolicy), the Vault path a template reads.
  const tasks = [...text.matchAll(/^\s*task\s+"([^"]+)"/gm)].map((m) => m[1])
  const rb = text.match(/^\s*restart\s*{([^}]*)}/m)?.[1] ?? ''
  const r = (k) => rb.match(new RegExp(`^\\s*${k}\\s*=\\s*"?([^"\\s]+)"?`, 'm'))?.[1]
  const restart = { attempts: Number(r('attempts') ?? 2), interval: r('interval') ?? '30m', delay: r('delay') ?? '15s', mode: r('mode') ?? 'fail' }
  const secret = text.match(/with secret "([^"]+)"/)?.[1].replace(/\$\{var\.(\w+)\}/g, (_, k) => valueOf(k) ?? '')
  const consulBlock = /^\s*consul\s*{/m.test(text)
  const templates = /^\s*template\s*{/m.test(text)
  const consulTemplate = /{{\s*range\s+service\s+"/.test(text)
  // What the scheduler reads (nomad-nodes.mjs placementSpec): a variable typed list(...) given by
  // -var or NOMAD_VAR_ is an HCL expression; others are strings; else the default's expression.
  const typed = (k) => {
    const items = hclItems(declared.get(k) ?? '')
    const type = items.find((x) => x.kind === 'attr' && x.name === 'type')?.expr ?? 'string'
    if (k in vars) return /^(list|set|tuple)\b/.test(type) ? evalExpr(vars[k], () => undefined) : vars[k]
    const d = items.find((x) => x.kind === 'attr' && x.name === 'default')
    return d ? evalExpr(d.expr, () => undefined) : undefined
  }
  const sched = placementSpec(text, file, typed, (m) => die(m.startsWith('test double') ? m : `Error getting job struct: Error parsing job file from ${file}:\n${m}`, errCode))
  const { meta, taskSpecs } = jobMetaAndTasks(text, typed)
  return { meta, taskSpecs, name: job[1], vars, groups: groups.length ? groups : ['main'], canary, count, autoPromote, autoRevert, image, key, text, vault, task, consulBlock, templates, consulTemplate,
    tasks: tasks.length ? tasks : [task], restart, secret, sched }
}

/**
 * The job-level `meta { k = expr }` block (api.Job Meta, map[string]string: a number or a bool becomes
 * its text), null without one or with an empty one (nomad/structs/structs.go@v2.0.5 Job.Canonicalize:
 * `if len(j.Meta) == 0 { j.Meta = nil }`); and each group's tasks with their driver and the config the
 * scripts read: a docker task's image, a raw_exec (or exec) task's command.
 */
function jobMetaAndTasks(text, valueOf) {
  const jobBlock = hclItems(text).find((b) => b.kind === 'block' && b.type === 'job')
  if (!jobBlock) return { meta: null, taskSpecs: {} }
  const items = hclItems(jobBlock.body)
  const blocks = (list, type) => list.filter((x) => x.kind === 'block' && x.type === type)
  const attrs = (body) => Object.fromEntries(hclItems(body).filter((x) => x.kind === 'attr').map((x) => [x.name, x.expr]))
  const value = (expr) => { const v = evalExpr(expr, valueOf); return v === undefined ? undefined : Array.isArray(v) ? v : String(v) }
  let meta = null
  for (const b of blocks(items, 'meta')) for (const [k, expr] of Object.entries(attrs(b.body))) {
    const v = value(expr)
    if (v === undefined) die(`test double: the expression ${expr} (meta.${k}) is not supported`, errCode)
    ;(meta ??= {})[k] = v
  }
  const taskSpecs = {}
  for (const g of blocks(items, 'group')) {
    taskSpecs[g.labels[0]] = blocks(hclItems(g.body), 'task').map((t) => {
      const ti = hclItems(t.body)
      const driver = value(attrs(t.body).driver ?? '""') ?? ''
      const conf = blocks(ti, 'config')[0]
      const ca = conf ? attrs(conf.body) : {}
      const config = {}
      for (const k of ['image', 'command']) if (ca[k] !== undefined) { const v = value(ca[k]); if (v !== undefined) config[k] = v }
      return { Name: t.labels[0], Driver: driver, Config: config }
    })
  }
  return { meta, taskSpecs }
}

/**
 * The vault blocks the job really has: static ones, and `dynamic "vault"` blocks whose for_each is
 * `var.X == "Y" ? [...] : []` (the form our jobs use), expanded as dynblock does: a block with no
 * instance is never decoded (hcl/v2 ext/dynblock, used by jobspec2/types.config.go@v1.6.10).
 */
function vaultBlocks(text, valueOf) {
  const blocks = []
  for (const m of text.matchAll(/^(\s*)(dynamic\s+"vault"|vault)\s*{([\s\S]*?)^\1}/gm)) {
    const body = m[3]
    if (m[2].startsWith('dynamic')) {
      const cond = body.match(/for_each\s*=\s*var\.(\w+)\s*==\s*"([^"]*)"\s*\?/)
      if (!cond) die(`test double: unsupported for_each in dynamic "vault": ${body}`, errCode)
      if (valueOf(cond[1]) !== cond[2]) continue
    }
    blocks.push({ role: /^\s*role\s*=/m.test(body), policies: /^\s*policies\s*=/m.test(body) })
  }
  return blocks
}

function current(name) {
  const j = state.jobs[name]
  return j && j.versions[j.versions.length - 1]
}

/**
 * A tracked version of the job by its number (j.versions is kept in version order; pruned ones are
 * gone from it, so the index is not the number).
 */
function versionOf(j, n) {
  return j.versions.find((v) => v.version === n)
}

/**
 * nomad/state/state_store.go@v2.0.5 upsertJobVersion (run when a version is registered, and again when
 * a tag is applied or unset): JobTrackedVersions = 6 (nomad/structs/structs.go JobDefaultTrackedVersions)
 * versions WITHOUT a VersionTag are kept (jobVersionByID(includeTagged=false)); beyond that the oldest one
 * is deleted, unless it is the newest stable one (all[6]), which is swapped with all[5]. One deletion per
 * call. @v1.6.10: the same, with every version counted (no tags).
 */
function trackVersions(j) {
  const all = j.versions.filter((v) => !(server('1.9') && v.versionTag)).sort((a, b) => b.version - a.version)
  const max = 6
  if (all.length <= max) return
  const stableIdx = all.findIndex((v) => v.stable)
  if (stableIdx === max) [all[max - 1], all[max]] = [all[max], all[max - 1]]
  const d = all[max]
  j.versions = j.versions.filter((v) => v !== d)
  // The allocations keep their own copy of the job (structs.Allocation.Job): versionAt() finds it there.
  ;(j.pruned ??= []).push(d)
}

function plan() {
  const file = one('<path>')
  const job = parseJobFile(file)
  const warnings = admission(job)
  const cur = current(job.name)
  const existing = state.jobs[job.name]
  let marker, exit, updates
  if (!cur) { marker = '+ '; exit = 1; updates = `${job.count} create` }
  else if (cur.key === job.key) { marker = ''; exit = 0; updates = `${job.count} ignore` }
  else if (state.inplace) { marker = '+/- '; exit = 0; updates = `${job.count} in-place update` }
  else { marker = '+/- '; exit = 1; updates = job.canary ? `${job.canary} canary, ${job.count} ignore` : `${job.count} create/destroy update` }
  const lines = [`${marker}Job: "${job.name}"`]
  for (const g of job.groups) lines.push(`${marker}Task Group: "${g}" (${updates})`)
  // command/meta.go@v2.0.5 SetupUi: colour when stdout is a terminal or NOMAD_CLI_FORCE_COLOR is set
  // (any non-empty value), unless NOMAD_CLI_NO_COLOR is (it wins); the diff is then in ANSI bold/colours.
  const colour = Boolean(process.env.NOMAD_CLI_FORCE_COLOR) && !process.env.NOMAD_CLI_NO_COLOR
  // The scheduler's dry run (nomad-allocs.mjs dryRun over nomad-nodes.mjs): what the run would place, and what it could not.
  const failures = planFailures(job, cur)
  // placement: "<constraint>" — an override: every group fails on that one constraint, on every node the job could use.
  if (state.placement) {
    const evaluated = Math.max(1, evaluation({ state, version: VERSION, spec: job.sched ?? { datacenters: ['*'], nodePool: 'default', constraints: [], groups: {} } }).candidates().length)
    for (const g of job.groups) failures[g] = { NodesEvaluated: evaluated, NodesAvailable: {}, ClassFiltered: {}, ConstraintFiltered: { [state.placement]: evaluated }, NodesExhausted: 0, CoalescedFailures: job.count - 1 }
  }
  lines.push('', 'Scheduler dry-run:', ...dryRunLines(failures, colour && cli('1.11.2')), '')
  // command/job_plan.go@v1.9.7 L318-322: server warnings on stdout after the dry-run (helper/warning.go format).
  if (warnings.length) lines.push(`Job Warnings:\n${warningText(warnings)}`, '')
  const runArgs = (flags.var ?? []).map((v) => `-var=${JSON.stringify(v)} `).join('')
  lines.push(`Job Modify Index: ${existing ? existing.modifyIndex : 0}`,
    'To submit the job with version verification run:', '', `nomad job run -check-index ${existing ? existing.modifyIndex : 0} ${runArgs}${file}`, '',
    'When running the job with the check-index flag, the job will only be run if the', 'job modify index given matches the server-side version. If the index has',
    'changed, another user has modified the job and the plan\'s results are', 'potentially invalid.')
  out(colour ? lines.map((l) => (l ? `\x1b[1m${l}\x1b[0m` : l)).join('\n') : lines.join('\n'))
  process.exitCode = exit
  if (state.raceAfterPlan) { delete state.raceAfterPlan; register(job.name, { ...job, key: 'someone-else' }) }
}

/** The version record a job file would register (for the plan's dry run). */
function planVersion(job) {
  return { key: job.key, count: job.count, groups: job.groups, sched: job.sched, tasks: job.tasks, task: job.task, image: job.image, restart: job.restart, secret: job.secret }
}
/** The deployment a registration would create (for the plan's dry run). */
function planDeployment(job, canary, version) {
  return { ID: 'plan', JobID: job.name, JobVersion: version, stub: {},
    TaskGroups: Object.fromEntries(job.groups.map((g) => [g, { Promoted: false, DesiredCanaries: canary, DesiredTotal: job.count, PlacedCanaries: [] }])) }
}
/**
 * What the scheduler could not place if this job file were run: a new or changed specification is
 * placed as register() would (canaries for a changed one, as the plan's annotations say); an
 * unchanged one places what its latest deployment still lacks.
 */
function planFailures(job, cur) {
  const j = state.jobs[job.name]
  if (cur && cur.key === job.key) {
    const d = latestDeployment(job.name)
    return d?.stub.blocked ? allocs.dryRun(j, versionAt(j, d.JobVersion), d, { fillOnly: true }) : {}
  }
  const stable = j && [...j.versions].reverse().find((v) => v.stable)
  const canary = cur && stable?.key !== job.key ? job.canary : 0
  return allocs.dryRun(j, planVersion(job), planDeployment(job, canary, cur ? cur.version + 1 : 0))
}

/**
 * A new job version and its deployment; null when the specification is unchanged (Nomad's Job.Register
 * then creates an evaluation only). `rollback`: the auto-revert of a failed deployment, whose old
 * allocations are updated in place (no canary) and which succeeds.
 */
function register(name, job, extra = {}, { rollback = false } = {}) {
  const j = (state.jobs[name] ??= { versions: [], deployments: [], modifyIndex: 0 })
  const prev = j.versions[j.versions.length - 1]
  if (prev && prev.key === job.key) return null
  const version = prev ? prev.version + 1 : 0
  // nomad/job_endpoint.go@v2.0.5 Revert: the copy of an old version loses its VersionTag and is not stable.
  const record = { version, key: job.key, text: job.text, vars: job.vars, canary: job.canary, count: job.count, groups: job.groups,
    autoPromote: job.autoPromote, autoRevert: job.autoRevert, image: job.image, submitTime: Date.now() * 1e6, stable: false,
    vault: job.vault, task: job.task, consulBlock: job.consulBlock, templates: job.templates, consulTemplate: job.consulTemplate,
    tasks: job.tasks, restart: job.restart, secret: job.secret, sched: job.sched, meta: job.meta ?? null, taskSpecs: job.taskSpecs, ...extra }
  delete record.versionTag
  j.versions.push(record)
  j.modifyIndex = ++state.index
  record.jobModifyIndex = j.modifyIndex
  trackVersions(j)
  // Canaries are placed only when an earlier version runs (the first deployment has none).
  // Canaries are placed only for a destructive update of what runs: a version whose specification is
  // the latest stable one (a revert to what the other instances run) is updated in place.
  const stable = [...j.versions].reverse().find((v) => v.stable && v.version < version)
  const canary = prev && !rollback && stable?.key !== job.key ? job.canary : 0
  const problem = rollback ? undefined : runtimeProblem(job)
  const ending = rollback ? 'successful' : problem ? 'failed' : (state.outcome ?? 'successful')
  // An earlier deployment still running is cancelled by the new one.
  for (const old of j.deployments) if (old.Status === 'running') Object.assign(old, { Status: 'cancelled', StatusDescription: 'Cancelled due to newer version of job' })
  const d = {
    ID: randomUUID(), JobID: name, JobVersion: version, Namespace: 'default',
    // scheduler/reconciler/reconcile_cluster.go@v2.0.5 (scheduler/reconcile.go@v1.6.10): a deployment
    // that requires promotion says whether Nomad will promote it by itself.
    Status: 'running', StatusDescription: !canary ? 'Deployment is running' : job.autoPromote ? 'Deployment is running pending automatic promotion' : 'Deployment is running but requires manual promotion',
    TaskGroups: Object.fromEntries(job.groups.map((g) => [g, { AutoRevert: Boolean(job.autoRevert), AutoPromote: Boolean(job.autoPromote), Promoted: false, DesiredCanaries: canary, DesiredTotal: job.count, PlacedAllocs: 0, HealthyAllocs: 0, UnhealthyAllocs: 0, PlacedCanaries: [] }])),
    stub: { polls: 0, ending, problem },
  }
  j.deployments.push(d)
  d.stub.failures = allocs.place(j, d, record)
  if (!d.stub.blocked) delete d.stub.failures
  return d
}

function detachedOutput() {
  out(`Job registration successful\nEvaluation ID: ${randomUUID()}`)
}

function run() {
  const file = one('<path>')
  const job = parseJobFile(file)
  const existing = state.jobs[job.name]
  const n = Number(flags['check-index'])
  if (flags['check-index'] !== undefined && (!Number.isInteger(n) || n < 0)) die(`Error parsing check-index value "${flags['check-index']}": strconv.ParseUint: parsing "${flags['check-index']}": invalid syntax`)
  const warnings = admission(job)
  if (flags['check-index'] !== undefined) {
    // command/job_run.go@v1.6.10 / @v2.0.5: the "(Enforcing job modify index ...)" part of the error,
    // then "Job not updated", exit 1 (nomad/job_endpoint.go RegisterEnforceIndexErrPrefix).
    if (n === 0 && existing) die('Enforcing job modify index 0: job already exists\nJob not updated')
    if (n !== 0 && !existing) die(`Enforcing job modify index ${n}: job does not exist\nJob not updated`)
    if (existing && n !== existing.modifyIndex) die(`Enforcing job modify index ${n}: job exists with conflicting job modify index: ${existing.modifyIndex}\nJob not updated`)
  }
  consulSubmitter(job)
  const d = register(job.name, job)
  // raceAfterRun: someone else's deploy registers a newer version right after this one (before the script reads anything back).
  if (state.raceAfterRun) { delete state.raceAfterRun; register(job.name, { ...job, key: 'someone-else-after-run' }) }
  if (warnings.length) out(`Job Warnings:\n${warningText(warnings)}\n`)
  hint('View this job in the Web UI', `jobs/${job.name}@default`)
  // An unchanged specification: Job.Register still creates an evaluation, which places what is missing.
  const latest = latestDeployment(job.name)
  if (!d && latest?.Status === 'running' && latest.stub.blocked) allocs.unblock(latest)
  if (flags.detach) return detachedOutput()
  if (!d) return out(`==> 2024-01-01T00:00:00Z: Monitoring evaluation "${randomUUID().slice(0, 8)}"\n    Evaluation status changed: "pending" -> "complete"`)
  const evalID = randomUUID().slice(0, 8)
  if (d.stub.blocked) {
    // command/monitor.go@v2.0.5 L244-270: the failures, the blocked evaluation; then the deployment, which does not end.
    out([`==> 2024-01-01T00:00:00Z: Monitoring evaluation "${evalID}"`, `==> 2024-01-01T00:00:00Z: Evaluation "${evalID}" finished with status "complete" but failed to place all allocations:`,
      ...Object.entries(d.stub.failures ?? {}).flatMap(([g, m]) => [`    2024-01-01T00:00:00Z: Task Group "${g}" (failed to place ${m.CoalescedFailures + 1} allocation${m.CoalescedFailures > 0 ? 's' : ''}):`, ...metricsLines(m, '      ', false)]),
      `    2024-01-01T00:00:00Z: Evaluation "${randomUUID().slice(0, 8)}" waiting for additional capacity to place remainder`,
      `==> 2024-01-01T00:00:00Z: Monitoring deployment "${d.ID.slice(0, 8)}"`].join('\n'))
    blockedMonitor = true
    return
  }
  out(`==> 2024-01-01T00:00:00Z: Monitoring evaluation "${evalID}"\n==> 2024-01-01T00:00:00Z: Monitoring deployment "${d.ID.slice(0, 8)}"`)
  while (d.Status === 'running' && !d.StatusDescription.includes('manual promotion')) advance(d)
  out(`    ID          = ${d.ID.slice(0, 8)}\n    Job Version = ${d.JobVersion}\n    Status      = ${d.Status}\n    Description = ${d.StatusDescription}`)
  if (d.Status === 'failed') process.exitCode = 1
}

/** One status read moves a running deployment along its scripted path. */
function advance(d) {
  if (d.Status !== 'running') return
  // A blocked deployment: the scheduler tries again; until all is placed, only what was placed starts (no progress deadline before a placement).
  if (d.stub.blocked) {
    if (!allocs.unblock(d)) return allocs.progress(d, d.stub.problem)
    delete d.stub.failures
    d.stub.polls = 0
  }
  d.stub.polls++
  const groups = Object.values(d.TaskGroups)
  const canaryWait = groups.some((g) => g.DesiredCanaries > 0 && !g.Promoted)
  if (d.stub.polls < (state.polls ?? 2)) {
    for (const g of groups) g.PlacedAllocs = Math.max(g.PlacedAllocs, canaryWait ? g.DesiredCanaries : 1)
    allocs.progress(d, d.stub.problem)
    return
  }
  if (d.stub.ending === 'failed') {
    d.Status = 'failed'
    for (const g of groups) { g.UnhealthyAllocs = 1; g.HealthyAllocs = 0 }
    d.StatusDescription = 'Failed due to unhealthy allocations'
    allocs.failed(d, d.stub.problem)
    if (groups.some((g) => g.AutoRevert)) {
      // Auto-revert goes back to the latest STABLE version, registered again as a new version.
      const j = state.jobs[d.JobID]
      const target = [...j.versions].reverse().find((v) => v.version < d.JobVersion && v.stable)
      if (!target) d.StatusDescription += ' - no stable job version to auto revert to'
      else {
        d.StatusDescription += ` - rolling back to job version ${target.version}`
        register(d.JobID, target, { stable: false }, { rollback: true })
      }
    }
    return
  }
  if (canaryWait) {
    const waiting = groups.filter((g) => g.DesiredCanaries > 0 && !g.Promoted)
    // Healthy canaries of an auto_promote job are promoted on the next step, by Nomad itself.
    if (waiting.every((g) => g.AutoPromote && g.HealthyAllocs >= g.DesiredCanaries)) {
      for (const g of waiting) g.Promoted = true
      d.StatusDescription = 'Deployment is running'
      d.stub.polls = 0
      allocs.promoted(d)
      return
    }
    // PlacedCanaries: the canaries' allocation IDs, set when they were placed (nomad-allocs.mjs place).
    for (const g of groups) { g.HealthyAllocs = g.DesiredCanaries; g.PlacedAllocs = g.DesiredCanaries }
    allocs.healthy(d, { canariesOnly: true })
    return
  }
  d.Status = 'successful'
  d.StatusDescription = 'Deployment completed successfully'
  for (const g of groups) { g.HealthyAllocs = g.DesiredTotal; g.PlacedAllocs = g.DesiredTotal }
  allocs.healthy(d)
  const v = versionOf(state.jobs[d.JobID], d.JobVersion)
  if (v) v.stable = true
}

/** command/meta.go@v1.6.10 and @v2.0.5 (JobIDByPrefix): capital ID. */
function noJob(name) {
  die(`No job(s) with prefix or ID "${name}" found`)
}

/** command/meta.go@v2.0.5 JobIDByPrefix: the job of that ID, else the only one it prefixes. */
function findJob(prefix) {
  if (state.jobs[prefix]) return prefix
  const matches = Object.keys(state.jobs).filter((n) => n.startsWith(prefix))
  if (matches.length === 1) return matches[0]
  if (!matches.length) noJob(prefix)
  die(`Prefix "${prefix}" matched multiple jobs\n\n${matches.join('\n')}`)
}

function inspect() {
  const name = one('<job>')
  const cur = current(name)
  if (!cur) noJob(name)
  // command/job_inspect.go@v2.0.5 (and @v1.6.10) getJob: the version among Jobs().Versions, else this error.
  if (flags.version !== undefined && !/^\d+$/.test(flags.version)) die(`Error parsing version value "${flags.version}": strconv.ParseUint: parsing "${flags.version}": invalid syntax`)
  const v = flags.version !== undefined ? versionOf(state.jobs[name], Number(flags.version)) : cur
  if (!v) die(`Error inspecting job: job "${name}" with version ${flags.version} couldn't be found`)
  if (flags.t === '{{.Version}}') return out(String(v.version))
  if (flags.t !== undefined) die(`template not supported by the test double: ${flags.t}`)
  const job = apiJob(name, v)
  out(JSON.stringify(flags.json ? job : { Job: job }, null, 4))
}

/**
 * api.Job as the CLI prints it (the fields scripts read): Meta (null for a nil map), Stable, Version,
 * SubmitTime, JobModifyIndex (of the version's registration: nomad/state/state_store.go@v2.0.5
 * upsertJobImpl sets it, then upsertJobVersion stores the version), VersionTag (api/jobs.go@v2.0.5
 * JobVersionTag {Name, Description, TaggedTime}; the field is absent from api.Job before 1.9.0:
 * api/jobs.go@v1.6.10, @v1.8.4), and the task groups with each task's driver and image or command.
 */
function apiJob(name, v) {
  const tg = (g) => v.taskSpecs?.[g] ?? (v.image ? [{ Name: g, Driver: 'docker', Config: { image: v.image } }] : [])
  return { ID: name, Name: name, Meta: v.meta ?? null, TaskGroups: v.groups.map((g) => ({ Name: g, Count: v.count, Tasks: tg(g) })),
    Stable: v.stable, Version: v.version, SubmitTime: v.submitTime, JobModifyIndex: v.jobModifyIndex ?? 0,
    ...(cli('1.9') ? { VersionTag: v.versionTag ?? null } : {}) }
}

function latestDeployment(name) {
  const j = state.jobs[name]
  return j?.deployments[j.deployments.length - 1]
}

/** What the CLI prints: api.Deployment, whose DeploymentState has no AutoPromote in any release (api/deployments.go@v1.6.10, @v2.0.5). */
function publicDeployment(d) {
  const { stub, ...rest } = d
  return { ...rest, TaskGroups: Object.fromEntries(Object.entries(d.TaskGroups).map(([g, { AutoPromote, ...tg }]) => [g, tg])) }
}

function status() {
  if (args.length === 0) return out(Object.keys(state.jobs).map((n) => `${n}  service  50  running`).join('\n') || 'No running jobs')
  const name = one('<job>')
  const cur = current(name)
  if (!cur) noJob(name)
  const d = latestDeployment(name)
  out([`ID            = ${name}`, `Name          = ${name}`, 'Type          = service', 'Priority      = 50', 'Datacenters   = dc1', 'Namespace     = default', 'Status        = running',
    '', 'Latest Deployment', `ID          = ${d.ID.slice(0, 8)}`, `Status      = ${d.Status}`, `Description = ${d.StatusDescription}`].join('\n'))
}

function history() {
  const name = one('<job>')
  const j = state.jobs[name]
  if (!j) noJob(name)
  const versions = [...j.versions].reverse()
  // -json prints whole jobs; the double keeps the fields scripts read, and the task's image.
  // Each stored version keeps the JobModifyIndex of its registration (nomad/state/state_store.go@v2.0.5 upsertJobImpl: JobModifyIndex = index, then upsertJobVersion).
  if (flags.json) return out(JSON.stringify(versions.map((v) => apiJob(name, v)), null, 4))
  // command/job_history.go@v2.0.5 formatJobVersion: Tag Name, and Tag Description when not empty (columnize, " = ").
  out(versions.map((v) => {
    const rows = [['Version', v.version], ['Stable', v.stable], ['Submit Date', '2024-01-01T00:00:00Z']]
    if (cli('1.9') && v.versionTag) { rows.push(['Tag Name', v.versionTag.Name]); if (v.versionTag.Description) rows.push(['Tag Description', v.versionTag.Description]) }
    const w = Math.max(...rows.map(([k]) => k.length))
    return rows.map(([k, x]) => `${k.padEnd(w)} = ${x}`).join('\n')
  }).join('\n\n'))
}

function deployments() {
  const name = one('<job>')
  const j = state.jobs[name]
  if (!j) noJob(name)
  for (const d of j.deployments) advance(d)
  if (flags.latest) {
    const d = latestDeployment(name)
    if (flags.json) return out(JSON.stringify(d ? publicDeployment(d) : null, null, 4))
    return out(d ? `ID          = ${d.ID.slice(0, 8)}\nJob ID      = ${name}\nJob Version = ${d.JobVersion}\nStatus      = ${d.Status}\nDescription = ${d.StatusDescription}` : 'No deployments found')
  }
  const list = [...j.deployments].reverse().map(publicDeployment)
  if (flags.json) return out(JSON.stringify(list, null, 4))
  out(['ID        Job ID  Job Version  Status  Description', ...list.map((d) => `${d.ID.slice(0, 8)}  ${name}  ${d.JobVersion}  ${d.Status}  ${d.StatusDescription}`)].join('\n'))
}

function deploymentStatus() {
  const id = one('<deployment id>')
  const d = Object.values(state.jobs).flatMap((j) => j.deployments).find((x) => x.ID.startsWith(id))
  if (!d) die(`No deployment(s) with prefix or id "${id}" found`)
  if (!flags.monitor) advance(d)
  if (flags.json) return out(JSON.stringify(publicDeployment(d), null, 4))
  out(`ID          = ${d.ID.slice(0, 8)}\nJob ID      = ${d.JobID}\nJob Version = ${d.JobVersion}\nStatus      = ${d.Status}\nDescription = ${d.StatusDescription}`)
}

function promote() {
  const name = one('<job id>')
  if (!state.jobs[name]) noJob(name)
  const d = latestDeployment(name)
  // command/job_promote.go: only a job without any deployment gets this message; the server
  // answers for the others (a terminal deployment, no canary, canaries not healthy yet).
  if (!d) die(`Job "${name}" has no deployment to promote`)
  const fail = (why) => die(`Error promoting deployment "${d.ID}" for job "${name}": Unexpected response code: 500 (${why})`)
  if (d.Status !== 'running') fail("can't promote terminal deployment")
  const canaries = Object.entries(d.TaskGroups).filter(([, tg]) => tg.DesiredCanaries > 0)
  // A deployment without canaries: the server promotes nothing and answers OK (nomad/state/state_store.go@v2.0.5).
  for (const [g, tg] of canaries)
    if (tg.HealthyAllocs < tg.DesiredCanaries) fail(`rpc error: 1 error occurred:\n\t* Task group "${g}" has ${tg.HealthyAllocs}/${tg.DesiredCanaries} healthy allocations\n\n`)
  for (const [, tg] of canaries) tg.Promoted = true
  d.StatusDescription = 'Deployment is running'
  d.stub.polls = 0
  d.stub.ending = state.outcome ?? 'successful'
  allocs.promoted(d)
  if (flags.detach) return out(`Evaluation ID: ${randomUUID()}`)
  out(`==> Monitoring evaluation "${randomUUID().slice(0, 8)}"`)
}

/**
 * command/job_revert.go@v1.6.10: the version must parse as a number. @v1.9.7 and @v2.0.5: a number, else
 * a tag name, looked up with api/jobs.go VersionByTag (Jobs().Versions, then the version whose VersionTag
 * has that name) BEFORE the job's prefix. The server's errors (nomad/job_endpoint.go@v2.0.5 Revert) are
 * printed after "Error retrieving job versions: ", as every Revert error is.
 */
function revert() {
  if (args.length !== 2) die(`This command takes two arguments: <job> <${cli('1.9') ? 'version|tag' : 'version'}>\nFor additional help try 'nomad job revert -help'`)
  const [name, raw] = args
  let n
  if (/^\d+$/.test(raw)) n = Number(raw)
  else if (!cli('1.9')) die(`Failed to parse job-version flag: strconv.ParseUint: parsing "${raw}": invalid syntax`)
  else {
    // command/agent/job_endpoint.go@v2.0.5 jobVersions: 404 "job versions not found" for an unknown job.
    if (!state.jobs[name]) die('Error retrieving job versions: Unexpected response code: 404 (job versions not found)')
    const tagged = state.jobs[name].versions.find((v) => v.versionTag?.Name === raw)
    if (!tagged) die(`Error retrieving job versions: version tag ${raw} not found for job ${name}`)
    n = tagged.version
  }
  const j = state.jobs[name]
  if (!j) noJob(name)
  const cur = current(name)
  if (n === cur.version) die(`Error retrieving job versions: Unexpected response code: 500 (can't revert to current version)`)
  const old = versionOf(j, n)
  if (!old) die(`Error retrieving job versions: Unexpected response code: 500 (job "${name}" in namespace "default" at version ${n} not found)`)
  // nomad/job_endpoint.go@v1.9.7 Revert: the old version goes through Register with the submitter's tokens.
  if (old.vault) admission(old)
  if (old.vault) consulSubmitter(old)
  // Reverting to a version whose specification is the current one registers nothing new.
  register(name, old, { revertedFrom: n })
  if (flags.detach) return detachedOutput()
  out(`==> Monitoring evaluation "${randomUUID().slice(0, 8)}"`)
}

// ----- Nomad Variables --------------------------------------------------------------------------

function varGet() {
  const p = one('<path>')
  const v = state.vars[p]
  const fmt = flags.out ?? 'json'
  if (fmt !== 'go-template' && flags.template !== undefined) die("The '-template' flag is only valid when using 'go-template' formatting")
  if (fmt === 'go-template' && !flags.template) die("A template must be supplied using '-template' when using go-template formatting")
  if (!['go-template', 'hcl', 'json', 'none', 'table'].includes(fmt)) die('Invalid value for "-out"; valid values are [go-template, hcl, json, none, table]')
  if (!v) die('Variable not found')
  if (flags.item !== undefined) {
    if (!(flags.item in v.Items)) { err('panic: runtime error: invalid memory address or nil pointer dereference'); process.exit(2) }
    return process.stdout.write(v.Items[flags.item])
  }
  if (fmt === 'none') return
  if (fmt === 'go-template') return out(varTemplate(v, flags.template))
  out(JSON.stringify(readerView(v), null, 2))
  hint('View variable details', `variables/var/${p}@default`)
}

/** The few Go templates scripts use on a variable: top-level fields, and a range over .Items (sorted keys). */
function varTemplate(v, tmpl) {
  let text = tmpl.replace(/{{\s*range \$(\w+), \$(\w+) := \.Items\s*}}([\s\S]*?){{\s*end\s*}}/g, (_, k, val, body) =>
    Object.keys(v.Items).sort().map((key) => body.replaceAll(`{{$${k}}}`, key).replaceAll(`{{$${val}}}`, v.Items[key])).join(''))
  text = text.replace(/{{\s*\.(Namespace|Path|CreateIndex|ModifyIndex|CreateTime|ModifyTime)\s*}}/g, (_, f) => String(v[f]))
  if (text.includes('{{')) die(`template not supported by the test double: ${tmpl}`)
  return text
}

function varPut() {
  if (!args.length) die('Not enough arguments (expected >1, got 0)')
  let p, items = {}, specIndex
  if (args[0] === '-' || args[0].startsWith('@')) {
    const text = args[0] === '-' ? stdin : readFileSync(args[0].slice(1), 'utf8')
    if ((flags.in ?? 'json') !== 'json') die('test double: only -in=json specs are supported')
    let spec
    try { spec = JSON.parse(text) } catch (e) { die(`Error parsing variable specification: ${e.message}`) }
    p = spec.Path
    items = spec.Items ?? {}
    specIndex = spec.ModifyIndex
  } else {
    p = args[0]
    let usedStdin = false
    for (const kv of args.slice(1)) {
      const [k, v] = kv.split(/=(.*)/s)
      if (v === undefined) die(`Error parsing arguments: ${kv}: expected key=value`)
      if (v === '-') {
        if (usedStdin) die('Error parsing arguments: stdin can only be used once')
        usedStdin = true
        items[k] = stdin
      } else if (v.startsWith('@')) items[k] = readFileSync(v.slice(1), 'utf8')
      else if (v === '') delete items[k]
      else items[k] = v
    }
  }
  if (!p || !/^[a-zA-Z0-9-_~/]{1,128}$/.test(p)) die(`Error creating variable: invalid path "${p}"`)
  if (!Object.keys(items).length) die('Error creating variable: Unexpected response code: 400 (variable missing required Items object)')
  const existing = state.vars[p]
  const serverIndex = existing ? existing.ModifyIndex : 0
  if (!flags.force) {
    const given = flags['check-index'] !== undefined ? Number(flags['check-index']) : (specIndex ?? 0)
    if (given !== serverIndex) die(`Check-and-Set conflict\n\n  Your provided check-index (${given}) does not match the server-side index (${serverIndex}).\n  The server-side item was modified since you last read it. To overwrite it\n  anyway, add the -force or -check-index=${serverIndex} flag before the positional arguments.`)
  }
  // A locked variable (nomad/state/state_store_variables.go@v2.0.5 varSetTxn): a write without its lock ID
  // is a conflict whose variable is a zero value (ModifyIndex 0). Not modelled: the same with -force (a 409
  // the CLI prints as an unexpected response).
  if (existing?.Lock && !flags.force) {
    const given = flags['check-index'] !== undefined ? Number(flags['check-index']) : (specIndex ?? 0)
    die(`Check-and-Set conflict\n\n  Your provided check-index (${given}) does not match the server-side index (0).\n  The server-side item was modified since you last read it. To overwrite it\n  anyway, add the -force or -check-index=0 flag before the positional arguments.`)
  }
  const now = Date.now() * 1e6
  const index = ++state.index
  state.vars[p] = { Namespace: 'default', Path: p, CreateIndex: existing?.CreateIndex ?? index, ModifyIndex: index, CreateTime: existing?.CreateTime ?? now, ModifyTime: now, Items: items }
  const fmt = flags.out ?? (process.stdout.isTTY ? 'none' : 'json')
  if (fmt === 'json') out(JSON.stringify(state.vars[p], null, 2))
  else if (fmt !== 'none') out(`Namespace = default\nPath = ${p}\n${Object.entries(items).map(([k, v]) => `${k} = ${v}`).join('\n')}`)
  if (fmt === 'none') out(`Created variable "${p}" with modify index ${index}`)
  hint('View variable details', `variables/var/${p}@default`)
}

// ----- Job version tags (1.9.0+) ----------------------------------------------------------------

/**
 * `nomad job tag apply [-name N] [-description D] [-version V] <job>`: command/job_tag_apply.go@v2.0.5
 * (the same at v1.9.0 and v1.9.7). Without -version: the current job's version (Jobs().Info). The server:
 * nomad/job_endpoint.go@v2.0.5 TagVersion sets TaggedTime, nomad/state/state_store.go@v2.0.5
 * updateJobVersionTagImpl: the name may not be on another version; the version's tag is REPLACED
 * (versionCopy.VersionTag = tag); the current job too if it is that version; then upsertJobVersion.
 * Its errors come back as a 500 (command/agent/http.go errCodeFromHandler) printed by the CLI.
 */
function tagApply() {
  if (args.length !== 1) die(`This command takes one argument: <job>\nFor additional help try 'nomad job tag apply -help'`)
  const job = args[0]
  if (job === '') die(`A job name is required\nFor additional help try 'nomad job tag apply -help'`)
  const name = flags.name ?? ''
  if (name === '') die(`A version tag name is required\nFor additional help try 'nomad job tag apply -help'`)
  const id = findJob(job.trim())
  const j = state.jobs[id]
  let n
  if (flags.version === undefined || flags.version === '') {
    // Jobs().Info(job) with the argument as given (not the resolved ID).
    if (!state.jobs[job]) die('Error retrieving job versions: Unexpected response code: 404 (job not found)')
    n = current(job).version
  } else if (!/^\d+$/.test(flags.version)) die(`Error parsing version: strconv.ParseUint: parsing "${flags.version}": invalid syntax`)
  else n = Number(flags.version)
  const fail = (msg) => die(`Error tagging job version: Unexpected response code: 500 (${msg})`)
  for (const v of j.versions) if (v.versionTag?.Name === name && v.version !== n) fail(`tag "${name}" already exists on a different version of job "${id}"`)
  const v = versionOf(j, n)
  if (!v) fail(`job "${id}" version ${n} not found`)
  v.versionTag = { Name: name, Description: flags.description ?? '', TaggedTime: Date.now() * 1e6 }
  ++state.index
  trackVersions(j)
  out(`Job version ${n} tagged with name "${name}"`)
}

/**
 * `nomad job tag unset -name N <job>`: command/job_tag_unset.go@v2.0.5 (its error, too, says "tagging");
 * nomad/state/state_store.go@v2.0.5 unsetJobVersionTagImpl: "tag %q not found on job %q"; the version
 * goes back to the untagged ones and upsertJobVersion may prune it at once.
 */
function tagUnset() {
  if (args.length !== 1) die(`This command takes one argument: <job>\nFor additional help try 'nomad job tag unset -help'`)
  const job = args[0]
  if (job === '') die(`A job name is required\nFor additional help try 'nomad job tag unset -help'`)
  const name = flags.name ?? ''
  if (name === '') die(`A version tag name is required\nFor additional help try 'nomad job tag unset -help'`)
  const id = findJob(job.trim())
  const j = state.jobs[id]
  const v = j.versions.find((x) => x.versionTag?.Name === name)
  if (!v) die(`Error tagging job version: Unexpected response code: 500 (tag "${name}" not found on job "${id}")`)
  delete v.versionTag
  ++state.index
  trackVersions(j)
  out(`Tag "${name}" removed from job "${job}"`)
}

/**
 * The help of a parent command that has no Run of its own (cli.RunResultHelp), with its immediate
 * subcommands and their synopses, as mitchellh/cli v1.1.5 cli.go commandHelp prints it, to stdout, exit 1.
 * Help and synopses: command/job.go, var.go and each subcommand's Synopsis() at v1.6.10 (job action
 * from 1.7.0: command/job_action.go@v1.7.0); command/job_tag.go, job_tag_apply.go, job_tag_unset.go@v2.0.5.
 */
function parentHelp(parent) {
  const JOB = `Usage: nomad job <subcommand> [options] [args]

  This command groups subcommands for interacting with jobs.

  Run a new job or update an existing job:

      $ nomad job run <path>

  Plan the run of a job to determine what changes would occur:

      $ nomad job plan <path>

  Stop a running job:

      $ nomad job stop <name>

  Examine the status of a running job:

      $ nomad job status <name>

  Please see the individual subcommand help for detailed usage information.`
  const JOB_SUBS = [...(cli('1.7') ? [['action', 'Run a pre-defined action from a Nomad task']] : []), ['allocs', 'List allocations for a job'], ['deployments', 'List deployments for a job'],
    ['dispatch', 'Dispatch an instance of a parameterized job'], ['eval', 'Force an evaluation for the job'], ['history', 'Display all tracked versions of a job'],
    ['init', 'Create an example job file'], ['inspect', 'Inspect a submitted job'], ['periodic', 'Interact with periodic jobs'],
    ['plan', 'Dry-run a job update to determine its effects'], ['promote', "Promote a job's canaries"], ['restart', 'Restart or reschedule allocations for a job'],
    ['revert', 'Revert to a prior version of the job'], ['run', 'Run a new job or update an existing job'], ['scale', 'Change the count of a Nomad job group'],
    ['scaling-events', 'Display the most recent scaling events for a job'], ['status', 'Display status information about a job'], ['stop', 'Stop a running job'],
    ['validate', 'Checks if a given job specification is valid']]
  const VAR = `Usage: nomad var <subcommand> [options] [args]

  This command groups subcommands for interacting with variables. Variables
  allow operators to provide credentials and otherwise sensitive material to
  Nomad jobs at runtime via the template block or directly through
  the Nomad API and CLI.

  Users can create new variables; list, inspect, and delete existing
  variables, and more. For a full guide on variables see:
  https://www.nomadproject.io/docs/concepts/variables

  Create a variable specification file:

      $ nomad var init

  Upsert a variable:

      $ nomad var put <path>

  Examine a variable:

      $ nomad var get <path>

  List existing variables:

      $ nomad var list <prefix>

  Purge a variable:

      $ nomad var purge <path>

  Please see the individual subcommand help for detailed usage information.`
  const VAR_SUBS = [['get', 'Read a variable'], ['init', 'Create an example variable specification file'], ['list', 'List variable metadata'], ['purge', 'Purge a variable'], ['put', 'Create or update a variable']]
  const TAG = `Usage: nomad job tag <subcommand> [options] [args]

  This command is used to manage tags for job versions. It has subcommands
  for applying and unsetting tags.

For more information on a specific subcommand, run:
  nomad job tag <subcommand> -h`
  const TAG_SUBS = [['apply', 'Save a job version to prevent it from being garbage-collected and allow it to be diffed and reverted by name.'], ['unset', 'Remove a tag from a job version.']]
  const [help, subs] = { job: [JOB, JOB_SUBS], var: [VAR, VAR_SUBS], 'job tag': [TAG, TAG_SUBS] }[parent]
  // defaultHelpTemplate: each name padded to the longest subcommand (NameAligned), four spaces, the synopsis.
  const w = Math.max(...subs.map(([n]) => n.length))
  process.stdout.write(`${help}\n\nSubcommands:\n${subs.map(([n, syn]) => `    ${n.padEnd(w)}    ${syn}`).join('\n')}\n`)
  process.exit(1)
}

// ----- Variable locks (1.7.0+) ------------------------------------------------------------------

/**
 * What a reader of a locked variable sees: nomad/variables_endpoint.go@v2.0.5 Read and List drop Lock
 * unless the caller is a management token (acl/acl.go IsManagement: true when ACLs are off). Here ACLs
 * are on when the `token` knob is set; that token is not a management one unless tokenManagement: true.
 */
function readerView(v) {
  if (!v.Lock || !state.token || state.tokenManagement) return v
  const { Lock, ...rest } = v
  return rest
}

/**
 * The servers' lock timers (nomad/locks.go@v2.0.5): a lock not renewed within 2 x TTL
 * (CreateVariableLockTTLTimer, RenewTTLTimer: "Adjust the given TTL by multiplier of 2") expires; the
 * variable keeps its Lock for LockDelay more (time.AfterFunc(LockDelay, invalidateVariableLock)), then
 * the lock is released as by its holder (VarLockRelease: Items kept, new ModifyIndex).
 * state.varLocks[path] = { ID, pid, ttlMs, delayMs, expiresAt } (ms since the epoch).
 */
function expireLocks(s) {
  for (const [p, l] of Object.entries(s.varLocks ?? {})) {
    if (Date.now() < l.expiresAt + l.delayMs) continue
    const v = s.vars?.[p]
    if (v?.Lock?.ID === l.ID) { delete v.Lock; v.ModifyIndex = ++s.index }
    delete s.varLocks[p]
  }
}

/** time.ParseDuration, as far as flags need it: its value in ms, or Go's error text. */
function parseDuration(x) {
  const units = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 }
  if (x === '0') return 0
  const m = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$/.exec(x)
  if (!m) {
    if (/^[-+]?(\d+(\.\d*)?|\.\d+)$/.test(x)) throw new Error(`time: missing unit in duration "${x}"`)
    throw new Error(`time: invalid duration "${x}"`)
  }
  let ms = 0
  for (const [, n, u] of x.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * units[u]
  return m[1] === '-' ? -ms : ms
}

/** time.Duration.String() for whole milliseconds: "2s", "1m30s", "1.5s", "500ms", "1h0m0s". */
function goDuration(ms) {
  if (ms === 0) return '0s'
  if (ms < 1000) return `${ms}ms`
  const h = Math.floor(ms / 3600000), mi = Math.floor((ms % 3600000) / 60000), sec = (ms % 60000) / 1000
  const secs = `${Number.isInteger(sec) ? sec : sec.toFixed(3).replace(/0+$/, '')}s`
  return h ? `${h}h${mi}m${secs}` : mi ? `${mi}m${secs}` : secs
}

/**
 * `nomad var lock [-ttl D] [-delay D] [-early-return] [-shell=false] [-verbose] [-max-retry N] [-backoff D]
 * <path> [@spec.json] child args...`: command/var_lock.go@v2.0.5 (unchanged since v1.7.0) over
 * api/locks.go@v2.0.5 LockLeaser. After a random delay (< 100ms) it acquires the lock (PUT ?lock-acquire);
 * held by someone else (409): with -early-return it exits 0 without running the child (start: `return
 * nil`), else it tries again every waitPeriod (1.1 x TTL, or -backoff), for ever. Holding it, it runs the
 * child (-shell=false: exec'd directly, `subprocess`; else `$SHELL -c "args joined"`, /bin/sh without
 * SHELL: `script`) with stdin/stdout/stderr inherited, SIGINT/SIGTERM forwarded (forwardSignals), and
 * renews the lease every 0.7 x TTL (lockLeaseRenewalFactor). When the child ends, the lock is released;
 * a child that failed: "Lock error:" + a go-multierror of "locks: error executing protected function
 * <exec error>", exit 1.
 * The server (nomad/state/state_store_variables.go@v2.0.5 VarLockAcquire): a variable with any Lock
 * (held, or expired but in its LockDelay) is a conflict; otherwise the variable is written WHOLE ("this
 * method overwrites the variable, data included"): its Items become the spec's (none: {}), with
 * Lock {ID, TTL, LockDelay} (TTL and LockDelay as time.Duration strings; defaults 15s: structs/variables.go).
 * VarLockRelease keeps the Items. Reads: readerView().
 */
async function varLock() {
  unlock('nomad')
  process.setMaxListeners(0)
  const say = (m) => { if (flags.verbose) err(m) }
  const fail = (m) => die(m)
  if (args.length < 2) fail(`Not enough arguments (expected >2, got ${args.length})`)
  let rest = args
  let p = '', contents
  const readSpec = (file, what) => {
    // command/var_put.go@v2.0.5 setParserForFileArg: the format from the extension.
    if (!/\.(json|hcl)$/.test(file)) fail(`Unable to determine format of ${file}; Use the -in flag to specify it.`)
    if (file.endsWith('.hcl')) fail('test double: only .json variable specifications are supported')
    try { return readFileSync(file.replace(/^@/, ''), 'utf8') } catch (e) { fail(`${what} "${file.replace(/^@/, '')}": ${e.code === 'ENOENT' ? `open ${file.replace(/^@/, '')}: no such file or directory` : e.message}`) }
  }
  if (rest[0].startsWith('@')) {
    say(`Reading whole variable specification from "${rest[0].slice(1)}"`)
    contents = readSpec(rest[0].slice(1), 'Error reading')
  } else {
    // command/var_put.go sanitizePath: no leading or trailing slash.
    p = rest[0].replace(/^\/+|\/+$/g, '')
    say(`Writing to path "${p}"`)
  }
  rest = rest.slice(1)
  if (rest[0].startsWith('@')) {
    say(`Creating variable "${p}" from specification file "${rest[0]}"`)
    contents = readSpec(rest[0], 'error reading')
    rest = rest.slice(1)
  }
  // command/var_put.go@v2.0.5 makeVariable: a JSON api.Variable; Items default to {}; the path argument wins.
  let sv = { Path: p, Items: {} }
  if (contents !== undefined) {
    try { sv = JSON.parse(contents) } catch (e) { fail(`Failed to parse variable data: error unmarshaling json: ${e.message}`) }
    sv.Items ??= {}
    if (p) sv.Path = p
  }
  if (!sv.Lock) {
    if (flags.ttl === undefined && flags.delay === undefined) say('Using defaults for the lock')
    sv.Lock = { TTL: '15s', LockDelay: '15s' }
  }
  if (flags.ttl !== undefined) {
    say(`Using TTL for the lock of ${flags.ttl}`)
    try { parseDuration(flags.ttl) } catch (e) { fail(`Invalid TTL: ${e.message}`) }
    sv.Lock.TTL = flags.ttl
  }
  if (flags.delay !== undefined) {
    say(`Using delay for the lock of ${flags.delay}`)
    // var_lock.go@v2.0.5 parses c.ttl here, not the delay: -delay without -ttl fails on "".
    try { parseDuration(flags.ttl ?? '') } catch (e) { fail(`Invalid Lock Delay: ${e.message}`) }
    sv.Lock.LockDelay = flags.delay
  }
  if (!sv.Path) fail("Error initializing lock handler: variable's path can't be empty")
  let ttlMs
  try { ttlMs = parseDuration(sv.Lock.TTL) } catch (e) { fail(`Error initializing lock handler: ${e.message}`) }
  // nomad/structs/variables.go@v2.0.5 VariableLock.Canonicalize: a zero TTL or delay is the default 15s.
  const delayMs = parseDuration(sv.Lock.LockDelay ?? '0') || 15000
  ttlMs ||= 15000
  if (flags['early-return']) say('Setting up early return')
  let waitMs = ttlMs * 1.1
  if (flags.backoff !== undefined) {
    try { waitMs = parseDuration(flags.backoff) } catch (e) { die(`invalid value "${flags.backoff}" for flag -backoff: parse error`) }
    if (waitMs) say('Setting up backoff period')
    else waitMs = ttlMs * 1.1
  }
  const child = rest
  // cli.Ui Error: the message and a newline (the multierror text ends with two of its own).
  const lockError = (errors) => { err(`Lock error:${errors.length === 1 ? `1 error occurred:\n\t* ${errors[0]}\n\n` : `${errors.length} errors occurred:\n\t${errors.map((e) => `* ${e}`).join('\n\t')}\n\n`}\n`); process.exit(1) }
  const apiUrl = (op) => `${addr}/v1/var/${sv.Path}?${op}`
  /** One request to the servers, under the state lock (connection and ACL first, as for every call). */
  const call = (op, fn) => {
    lock('nomad')
    state = load()
    try {
      if (state.mode === 'unreachable') return { error: `Put "${apiUrl(op)}": dial tcp 10.9.8.7:4646: connect: connection refused` }
      if (state.mode === 'forbidden' || (state.token && process.env.NOMAD_TOKEN !== state.token)) return { error: 'Unexpected response code: 403 (Permission denied)' }
      const r = fn()
      save()
      return r
    } finally { unlock('nomad') }
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
  let myID
  const acquire = () => call('lock-acquire', () => {
    const v = state.vars[sv.Path]
    if (v?.Lock) return { conflict: true }
    const ID = randomUUID()
    const index = ++state.index
    const now = Date.now() * 1e6
    state.vars[sv.Path] = { Namespace: 'default', Path: sv.Path, CreateIndex: v?.CreateIndex ?? index, ModifyIndex: index, CreateTime: v?.CreateTime ?? now, ModifyTime: now,
      Items: sv.Items, Lock: { ID, TTL: goDuration(ttlMs), LockDelay: goDuration(delayMs) } }
    ;(state.varLocks ??= {})[sv.Path] = { ID, pid: process.pid, ttlMs, delayMs, expiresAt: Date.now() + 2 * ttlMs }
    return { ID }
  })
  const renew = () => call('lock-renew', () => {
    const l = state.varLocks?.[sv.Path]
    // nomad/variables_endpoint.go@v2.0.5 RenewLock: another lock, or none, or an expired timer: 409.
    if (state.vars[sv.Path]?.Lock?.ID !== myID || !l || l.ID !== myID || Date.now() >= l.expiresAt) return { conflict: true }
    l.expiresAt = Date.now() + 2 * ttlMs
    return {}
  })
  const release = () => call('lock-release', () => {
    const v = state.vars[sv.Path]
    // VarLockRelease: no variable (500 "variable not found"), no lock or another one (409).
    if (!v) return { error: 'Unexpected response code: 500 (variable not found)' }
    if (!v.Lock || v.Lock.ID !== myID) return { conflict: true }
    delete v.Lock
    v.ModifyIndex = ++state.index
    v.ModifyTime = Date.now() * 1e6
    delete state.varLocks[sv.Path]
    return {}
  })

  await sleep(Math.floor(Math.random() * 100))
  say('Attempting to acquire lock')
  for (;;) {
    const r = acquire()
    if (r.error) lockError([`locks: ${r.error}`])
    if (r.ID) { myID = r.ID; break }
    if (flags['early-return']) process.exit(0)
    await sleep(waitMs)
  }
  say(`Variable locked, ready to execute: ${child.join(' ')}`)
  const renewer = setInterval(() => { if (renew().conflict || renew.stopped) { clearInterval(renewer); renew.stopped = true } }, ttlMs * 0.7)
  const result = await new Promise((resolve) => {
    let cp
    if (!flags.shell && flags.shell !== undefined) {
      if (!child.length) return resolve('need an executable to run')
      cp = spawn(child[0], child.slice(1), { stdio: 'inherit' })
    } else cp = spawn(process.env.SHELL || '/bin/sh', ['-c', child.join(' ')], { stdio: 'inherit' })
    const forward = (sig) => { try { cp.kill(sig) } catch {} }
    process.on('SIGINT', forward)
    process.on('SIGTERM', forward)
    // os/exec: a program not found is an error of Start; ExitError: "exit status N", or "signal: <name>".
    cp.on('error', (e) => resolve(e.code === 'ENOENT' ? `exec: "${child[0]}": executable file not found in $PATH` : e.message))
    const NAMES = { SIGTERM: 'terminated', SIGINT: 'interrupt', SIGKILL: 'killed', SIGHUP: 'hangup', SIGQUIT: 'quit', SIGUSR1: 'user defined signal 1', SIGUSR2: 'user defined signal 2', SIGPIPE: 'broken pipe', SIGABRT: 'aborted' }
    cp.on('exit', (code, signal) => resolve(signal ? `signal: ${NAMES[signal] ?? signal}` : code ? `exit status ${code}` : null))
  })
  clearInterval(renewer)
  const errors = []
  if (result) errors.push(`locks: error executing protected function ${result}`)
  const rel = release()
  if (rel.conflict) errors.push('lock release: release conflict conflicting operation over lock')
  else if (rel.error) errors.push(`lock release: ${rel.error}`)
  if (errors.length) lockError(errors)
  say('Releasing the lock')
  process.exit(0)
}
