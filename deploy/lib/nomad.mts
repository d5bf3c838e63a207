// The Nomad connection: NOMAD_* variables checked (TLS files parsed by tls.mts) and handed to the
// local nomad CLI through its environment, never as flags; nomad's errors in words a person can act on.
import path from 'node:path'
import { $, type ProcessOutput } from 'zx'
import { childEnv, EXIT, fail, MAX_SECONDS, refuse, report, secret, shq, type Checks } from './env.mts'
import { checkTls } from './tls.mts'

const TLS_VARS = ['NOMAD_CACERT', 'NOMAD_CLIENT_CERT', 'NOMAD_CLIENT_KEY', 'NOMAD_TLS_SERVER_NAME'] as const
// Nomad 1.6-1.9 `job run/plan/validate/revert` read VAULT_TOKEN / CONSUL_HTTP_TOKEN from the environment and
// attach them to the job (command/job_run.go@v1.9.7 L267-289): childEnv never hands ours over (only
// NOMAD_TOKEN is allowed); the submitter tokens a legacy cluster may demand are given on purpose, in
// variables of their own (nomadWithTokens). The operator's colour and hint switches are replaced below.
const NEVER_TO_NOMAD = ['NOMAD_CLI_FORCE_COLOR', 'NOMAD_CLI_SHOW_HINTS']

export type Nomad = ReturnType<typeof nomadConnection>

/** Check the NOMAD_* configuration and the nomad CLI; return what runs nomad with it. */
export function nomadConnection(check: Checks) {
  const { addr, https } = check.address('NOMAD_ADDR', 'https://host:4646')
  const token = https ? check.needSecret('NOMAD_TOKEN') : check.optional('NOMAD_TOKEN')
  secret(token)
  check.optional('NOMAD_NAMESPACE')
  check.optional('NOMAD_REGION')
  const limit = check.seconds('DEPLOY_COMMAND_TIMEOUT', 60)
  check.tool('nomad', 'install the Nomad CLI 1.6+: https://developer.hashicorp.com/nomad/install')

  const env = nomadEnv(check)
  if (https) {
    const ca = check.localPath('NOMAD_CACERT', 'certs/ca.pem')!
    const cert = check.localPath('NOMAD_CLIENT_CERT')
    const key = check.localPath('NOMAD_CLIENT_KEY')
    check.optional('NOMAD_TLS_SERVER_NAME')
    checkTls(check, { ca, cert, key })
    Object.assign(env, { NOMAD_CACERT: ca, NOMAD_CLIENT_CERT: cert, NOMAD_CLIENT_KEY: key })
  } else {
    const set = TLS_VARS.filter((n) => process.env[n] !== undefined)
    if (set.length) check.problem(`NOMAD_ADDR is http:// but ${set.join(', ')} ${set.length > 1 ? 'are' : 'is'} set: use https:// or unset them`)
  }
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]
  const nomad = $({ env, timeout: `${limit}s`, nothrow: true })
  const shown = ['NOMAD_ADDR', ...TLS_VARS, 'NOMAD_NAMESPACE', 'NOMAD_REGION'].filter((n) => env[n])
  return {
    addr,
    limit,
    /** What runs there, once learnt by nomadVersions() (the first step that talks to the cluster). */
    versions: undefined as Versions | undefined,
    /** zx shell with the nomad environment and the time limit; results are checked by the caller (nothrow). */
    $: nomad,
    env,
    /** One copy-pasteable line that sets the same environment (the token as a reference). */
    exportLine: `export ${shown.map((n) => `${n}=${shq(env[n]!)}`).join(' ')}${token || https ? ' NOMAD_TOKEN="$NOMAD_TOKEN"' : ''}`,
  }
}

/** Why a nomad call failed, in words a person can act on; the exit code it deserves. */
export function nomadError(nomad: Nomad, out: ProcessOutput): { message: string; code: number } {
  const err = (out.stderr.trim() || out.stdout.trim()).split('\n').filter(Boolean)
  const text = err.join(' ')
  if (/\b403\b|Permission denied|ACL token not found/i.test(text))
    return { code: EXIT.refused, message: `Nomad at ${nomad.addr} refused the token (403): check NOMAD_TOKEN and its ACL policy (${err[0]})` }
  if (/x509|certificate|tls:/i.test(text))
    return { code: EXIT.refused, message: `TLS handshake with Nomad at ${nomad.addr} failed: check NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_TLS_SERVER_NAME (${err[0]})` }
  if (timedOut(out, nomad.limit))
    return { code: EXIT.failed, message: `cannot reach Nomad at ${nomad.addr}: a connection problem (${noAnswer(nomad.limit)})` }
  if (/dial tcp|connection refused|no such host|i\/o timeout|deadline exceeded|network is unreachable/i.test(text) || out.signal)
    return { code: EXIT.failed, message: `cannot reach Nomad at ${nomad.addr}: a connection problem (${err[0] ?? out.signal})` }
  return { code: EXIT.failed, message: `nomad exited ${out.exitCode}: ${err.slice(-3).join(' | ')}` }
}

/**
 * Did a command end because its time limit stopped it? zx kills the tree with SIGTERM: the shell in
 * between reports either the signal or 143, after at least the limit.
 */
export function timedOut(out: ProcessOutput, limitSeconds: number): boolean {
  return (out.signal === 'SIGTERM' || out.exitCode === 143) && out.duration >= limitSeconds * 1000 - 250
}
export const noAnswer = (limitSeconds: number) => `no answer within DEPLOY_COMMAND_TIMEOUT=${limitSeconds}s; stopped with its process tree`

/** Stop with nomad's reason: exit 2 when the configuration is at fault and nothing changed, else 1. */
export function nomadFailed(nomad: Nomad, what: string, out: ProcessOutput, changed: boolean): never {
  const { message, code } = nomadError(nomad, out)
  if (changed || code !== EXIT.refused) fail(`${what}: ${message}`)
  refuse([`${what}: ${message}`])
}

/** A path as a person at this terminal would type it: relative when under the current directory. */
export function shown(file: string): string {
  const rel = path.relative(process.cwd(), file)
  return rel && !rel.startsWith('..') ? rel : file
}

/** --timeout of a script that follows a deployment (and the poll interval it follows it with). */
export function timeoutSeconds(flag: string | boolean | undefined, check: Checks, fallback = 600): number {
  const poll = check.seconds('DEPLOY_POLL_SECONDS', 5)
  let timeout = fallback
  if (flag !== undefined) {
    const m = String(flag).match(/^(\d+)(s|m)?$/)
    if (!m || Number(m[1]) === 0) {
      check.problem(`--timeout ${flag}: give a positive duration such as 300, 300s or 10m`)
      return fallback
    }
    timeout = Number(m[1]) * (m[2] === 'm' ? 60 : 1)
    if (timeout > MAX_SECONDS) check.problem(`--timeout ${flag} is more than ${MAX_SECONDS} seconds (24 days), the longest wait a timer can hold`)
  }
  // Polled less often than the whole wait, a deployment would be "still running" at its first look.
  if (poll > timeout) check.problem(`DEPLOY_POLL_SECONDS=${poll} is longer than the --timeout of ${timeout}s: poll more often, or wait longer`)
  return timeout
}

/**
 * The nomad CLI's environment, unbendable by the operator's shell:
 * - colour off in our pipes whatever NOMAD_CLI_FORCE_COLOR says (NOMAD_CLI_NO_COLOR wins: command/meta.go@v2.0.5 SetupUi);
 * - no UI hints (1.10+ appends "==> View ... in the Web UI" and asks the agent for its config first:
 *   command/meta.go@v2.0.5 uiHintsDisabled); NOMAD_CLI_SHOW_HINTS=false turns both off;
 * - no NOMAD_VAR_<name>: the job parser reads one for every declared variable (jobspec2), which would
 *   silently change what is planned; the scripts pass every job variable themselves;
 * - NOMAD_SKIP_VERIFY and NOMAD_CAPATH (api/api.go) would undo or widen the TLS checks: refused;
 * - NOMAD_HTTP_AUTH holds credentials: passed on (a proxy may need it), never printed.
 */
function nomadEnv(check: Checks): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = childEnv(['NOMAD_TOKEN', 'NOMAD_HTTP_AUTH'])
  for (const name of NEVER_TO_NOMAD) delete env[name]
  const vars = Object.keys(env).filter((k) => k.startsWith('NOMAD_VAR_'))
  for (const k of vars) delete env[k]
  if (vars.length) check.warn(`ignored: ${vars.join(', ')} (the job parser would read ${vars.length > 1 ? 'them' : 'it'}; the scripts pass every job variable themselves)`)
  const skip = process.env.NOMAD_SKIP_VERIFY
  if (skip !== undefined && !/^(|0|f|false|FALSE|False)$/.test(skip))
    check.problem(`NOMAD_SKIP_VERIFY=${skip} would turn off TLS verification: the kit always verifies Nomad's certificate; unset it and fix NOMAD_CACERT / NOMAD_TLS_SERVER_NAME instead`)
  delete env.NOMAD_SKIP_VERIFY
  if (process.env.NOMAD_CAPATH !== undefined)
    check.problem('NOMAD_CAPATH is set: the kit trusts only the CA it checks, NOMAD_CACERT; put that CA in a file and unset NOMAD_CAPATH')
  const auth = process.env.NOMAD_HTTP_AUTH
  secret(auth)
  secret(auth?.split(':').slice(1).join(':'))
  Object.assign(env, { NOMAD_CLI_NO_COLOR: '1', NOMAD_CLI_SHOW_HINTS: 'false' })
  return env
}

// ---------------------------------------------------------------------------------------------
// Versions: which Nomad the kit talks to, learnt once per run.

export type Versions = { cli: string; server: string; serverKnown: boolean }

/** Nomad releases, their support, and what changed for this kit (DEPLOYMENT_GUIDE.md, "Supported versions"). */
const SUPPORT = { current: '2.0', lts: '1.10', oldest: '1.6', ltsEnds: '2027-04-30' }

/** "1.10.5" >= "1.10"? Compares major.minor[.patch] numerically. */
export function atLeast(version: string, wanted: string): boolean {
  const a = version.split('.').map(Number)
  const b = wanted.split('.').map(Number)
  for (let i = 0; i < b.length; i++) if ((a[i] ?? 0) !== b[i]) return (a[i] ?? 0) > b[i]
  return true
}

/**
 * The local CLI's version (`nomad version`, no network: command/version.go@v2.0.5 prints
 * "Nomad v2.0.5" then BuildDate and Revision) and the servers' (`nomad server members -json`, the
 * "build" tag of each alive server: nomad/status_endpoint.go@v2.0.5 Members; the oldest wins, as it
 * decides what the cluster accepts during an upgrade). Reading the members needs node:read; without
 * it the CLI's version stands in for the server's, with a warning. Said once on stderr.
 */
export async function nomadVersions(nomad: Nomad): Promise<Versions> {
  if (nomad.versions) return nomad.versions
  const cliOut = await nomad.$`nomad version`
  const cli = cliOut.stdout.match(/^Nomad v(\d+\.\d+\.\d+)/m)?.[1]
  if (!cliOut.ok || !cli) fail(`nomad version printed no version (${(cliOut.stderr || cliOut.stdout).trim().split('\n')[0] ?? ''}): is this the Nomad CLI?`)
  const members = await nomad.$`nomad server members -json`
  let server: string | undefined
  if (members.ok) {
    try {
      const builds = (JSON.parse(members.stdout) as { Status: string; Tags?: Record<string, string> }[])
        .filter((m) => m.Status === 'alive').map((m) => m.Tags?.build?.match(/^\d+\.\d+\.\d+/)?.[0]).filter((b): b is string => Boolean(b))
      server = builds.sort((a, b) => (atLeast(a, b) ? 1 : -1))[0]
    } catch {
      /* not JSON: treated as unknown below */
    }
  } else {
    const { code, message } = nomadError(nomad, members)
    // A token without node:read cannot list the servers; anything else (unreachable, TLS) stops here.
    if (!/\b403\b|Permission denied/i.test(`${members.stderr}${members.stdout}`)) {
      if (code === EXIT.refused) refuse([`nomad server members: ${message}`])
      fail(`nomad server members: ${message}`)
    }
  }
  const v: Versions = { cli: cli!, server: server ?? cli!, serverKnown: Boolean(server) }
  nomad.versions = v
  report({ nomad: { address: nomad.addr, server: v.server, cli: v.cli } })
  const where = `Nomad ${v.server} at ${nomad.addr}${v.serverKnown ? '' : ' (assumed from the CLI)'}, CLI ${v.cli}`
  console.error(`    ${where}`)
  if (!v.serverKnown) console.error(`warning: could not read the servers' version (nomad server members needs node:read): assuming the CLI's, ${v.cli}; grant node:read to know for sure`)
  if (!atLeast(v.server, SUPPORT.lts))
    console.error(`warning: Nomad ${v.server} is out of support (versions before ${SUPPORT.lts}.0 are; ${SUPPORT.lts} is the last LTS, to ${SUPPORT.ltsEnds}, and ${SUPPORT.current} the current line): the kit still deploys to it; plan the upgrade (DEPLOYMENT_GUIDE.md, "Upgrade to Nomad 2.0")`)
  if (!atLeast(v.server, SUPPORT.oldest)) refuse([`Nomad ${v.server} is older than ${SUPPORT.oldest}, the oldest this kit knows: upgrade the cluster`])
  const minor = (x: string) => x.split('.').slice(0, 2).join('.')
  if (v.serverKnown && minor(v.cli) !== minor(v.server))
    console.error(`warning: the local nomad CLI is ${v.cli} and the servers run ${v.server}: use the CLI of the servers' version (the CLI parses the job file)`)
  return v
}

/**
 * Hand the legacy submitter tokens to nomad (Nomad 1.6-1.9 `job plan/run/revert` read VAULT_TOKEN and
 * CONSUL_HTTP_TOKEN: command/job_run.go@v1.9.7 L267-289): in its environment, never argv.
 */
export function nomadWithTokens(nomad: Nomad, tokens: { VAULT_TOKEN?: string; CONSUL_HTTP_TOKEN?: string }) {
  const given = Object.fromEntries(Object.entries(tokens).filter(([, v]) => v)) as Record<string, string>
  if (!Object.keys(given).length) return
  nomad.env = { ...nomad.env, ...given }
  nomad.$ = $({ env: nomad.env, timeout: `${nomad.limit}s`, nothrow: true })
}
