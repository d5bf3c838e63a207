#!/usr/bin/env -S npx tsx
// put_storefront_secrets: store the CEDRA storefront's secrets in Vault KV v2 (revalidate_secret, session_secret, valkey_password).
//
// Usage: npx tsx deploy/put_storefront_secrets.mts [--dry-run] [--env-file PATH]
//
// Reads the secret at STOREFRONT_VAULT_PATH (`vault kv get`), sets the three keys in what it holds
// (every other key stored there survives) and writes the result as a new version with
// `vault kv put -cas=<version read>`: a change made by someone else in between stops the write
// instead of being overwritten. Each value comes from its variable; else the value already stored
// is kept; else a hidden prompt asks for it at a terminal (stdin and stderr, CI unset; 5 minutes at
// most; a TAB or control character refused; an empty answer for the Valkey password
// generates one). Without a terminal the Valkey password is generated and the two others are
// refused. The values reach vault as one JSON object on stdin: never in argv, never printed. When
// Vault already holds these values, nothing is written. jobs/valkey.nomad and the storefront read
// valkey_password from there: when it changes, Nomad re-renders their templates and restarts them.
//
// Needs: vault CLI; a token whose policy allows read, create and update on <mount>/data/<path>.
// Reads: VAULT_ADDR, VAULT_TOKEN (secret), VAULT_CACERT (optional CA file, relative to the repository root),
//        STOREFRONT_VAULT_PATH (default secret/cedra/prod, the KV path as the vault CLI takes it),
//        STOREFRONT_VAULT_MOUNT (default: the first segment of STOREFRONT_VAULT_PATH; name a nested KV v2
//          mount such as team/kv: the vault commands then run as -mount=team/kv cedra/prod),
//        REVALIDATE_SECRET, SESSION_SECRET (secrets), VALKEY_PASSWORD (secret; at least 16 characters
//        of A-Z a-z 0-9 . _ ~ -, as it goes into Valkey's config file and a redis:// URL),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each vault command may take).
// Options:
//   --dry-run         print the commands a real run would execute; run nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or unchanged), 1 a step failed, 2 refused before changing anything.
import { randomBytes } from 'node:crypto'
import { $, type ProcessOutput } from 'zx'
import { askHidden, canPrompt, type Checks, childEnv, exit, EXIT, fail, refuse, report, secret, shq, start, step } from './lib/env.mts'
import { noAnswer, timedOut } from './lib/nomad.mts'
import { readCerts } from './lib/tls.mts'

const KEYS = [
  { key: 'revalidate_secret', env: 'REVALIDATE_SECRET', generate: false },
  { key: 'session_secret', env: 'SESSION_SECRET', generate: false },
  { key: 'valkey_password', env: 'VALKEY_PASSWORD', generate: true },
] as const
const PASSWORD_RULE = "must be at least 16 characters of A-Z a-z 0-9 . _ ~ - (it goes into Valkey's config file and a redis:// URL); unset it to have one generated"

// Check
const { check, dryRun } = start(import.meta.url)
const vault = vaultConnection(check)
const where = check.kvPath('STOREFRONT_VAULT_PATH', 'secret/cedra/prod', check.optional('STOREFRONT_VAULT_MOUNT'))
const given: Record<string, string | undefined> = {}
for (const { key, env } of KEYS) given[key] = secret(check.optional(env))
if (given.valkey_password && !passwordOk(given.valkey_password)) check.problem(`VALKEY_PASSWORD ${PASSWORD_RULE}`)
check.tool('vault', 'install the Vault CLI: https://developer.hashicorp.com/vault/install')
check.done()
report({ vaultPath: where.path })

if (dryRun) {
  console.log([
    vault.exportLine,
    `vault kv get -format=json ${where.args.join(' ')}`,
    `# set ${KEYS.map((k) => k.key).join(', ')} in the data read (other keys kept), then write it back as one JSON`,
    '# object on stdin, check-and-set against the version read (0 when nothing is stored yet):',
    `vault kv put -format=json -cas="$VERSION_READ" ${where.args.join(' ')} - <<<"$DATA_READ_WITH_NEW_VALUES_AS_JSON"`,
  ].join('\n'))
  exit(EXIT.done)
}

// Read what is stored (a read changes nothing; its refusal is a refusal)
step(`Read ${where.path} from Vault at ${vault.addr}`)
const stored = await readSecret()
console.error(`    ${stored.version ? `version ${stored.version}, keys: ${Object.keys(stored.data).join(', ') || '(none)'}` : 'nothing stored yet'}`)

// Plan: where each value comes from
const values: Record<string, { value: string; how: string }> = {}
const missing: string[] = []
for (const { key, env, generate } of KEYS) {
  const kept = stored.data[key]
  if (given[key] !== undefined) values[key] = { value: given[key]!, how: `from ${env}` }
  else if (kept !== undefined) values[key] = { value: String(kept), how: 'kept' }
  else if (canPrompt()) {
    const typed = await askHidden(`${key} for ${where.path}${generate ? ' (empty: generate one)' : ''}: `)
    if (typed) values[key] = { value: typed, how: 'typed' }
    else if (generate) values[key] = { value: generated(), how: 'generated' }
    else missing.push(`${key}: nothing was typed (or set ${env})`)
  } else if (generate) values[key] = { value: generated(), how: 'generated' }
  else missing.push(`${env} is not set and ${where.path} holds no ${key}: set it (from your secret store), or run at a terminal to be prompted`)
}
if (values.valkey_password?.how === 'typed' && !passwordOk(values.valkey_password.value)) missing.push(`the typed valkey_password ${PASSWORD_RULE}`)
if (missing.length) refuse(missing)

const merged: Record<string, unknown> = { ...stored.data }
const changes: string[] = []
for (const { key } of KEYS) {
  if (stored.data[key] === values[key].value) continue
  merged[key] = values[key].value
  changes.push(`${key} (${stored.data[key] === undefined ? 'new' : 'changed'}, ${values[key].how})`)
}
const others = Object.keys(stored.data).filter((k) => !KEYS.some((x) => x.key === k))
if (!changes.length) {
  const line = `${where.path} is unchanged: version ${stored.version} already holds these values; nothing was written`
  report({ outcome: 'unchanged', message: line, version: stored.version })
  console.log(line)
  exit(EXIT.done)
}

// --- point of no return ---
report({ acted: true })
step(`Write version ${stored.version + 1} of ${where.path} (check-and-set against version ${stored.version})`)
const out = await vault.$({ input: JSON.stringify(merged) })`vault kv put -format=json -cas=${stored.version} ${where.args} -`
if (!out.ok) {
  if (/check-and-set parameter did not match/.test(out.stderr))
    fail(`${where.path} changed in Vault since it was read (version ${stored.version}): nothing was overwritten; run again to merge into the new version`)
  fail(`vault kv put ${where.path}: ${vaultError(out).message}`)
}
const version = writtenVersion(out) ?? stored.version + 1

// Report
const line = `${where.path}: version ${version} written: ${changes.join(', ')}${others.length ? `; other keys kept: ${others.join(', ')}` : ''}`
report({ outcome: 'done', message: line, version, next: ['npx tsx deploy/deploy_valkey.mts'] })
console.log(line)
if (changes.some((c) => c.startsWith('valkey_password')) && stored.version)
  console.log('valkey_password changed: Nomad re-renders the Valkey and storefront templates and restarts those tasks.')
console.log(`
Useful commands:
  vault kv metadata get ${where.args.join(' ')}${version > 1 ? `\n  vault kv rollback -version=${version - 1} ${where.args.join(' ')}` : ''}
  npx tsx deploy/deploy_valkey.mts`)

// ---------------------------------------------------------------------------------------------

/** Check VAULT_ADDR, VAULT_TOKEN and VAULT_CACERT; return what runs vault with them. */
function vaultConnection(check: Checks) {
  const { addr, https } = check.address('VAULT_ADDR', 'https://host:8200')
  secret(check.needSecret('VAULT_TOKEN'))
  const ca = check.localPath('VAULT_CACERT')
  if (ca && !https) check.problem('VAULT_ADDR is http:// but VAULT_CACERT is set: use https:// or unset it')
  else if (ca) readCerts(check, 'VAULT_CACERT', ca)
  // vault gets VAULT_TOKEN and no other secret (the values go on stdin).
  const env: Record<string, string | undefined> = childEnv(['VAULT_TOKEN'])
  if (ca) env.VAULT_CACERT = ca
  const limit = check.seconds('DEPLOY_COMMAND_TIMEOUT', 60)
  return {
    addr,
    limit,
    $: $({ env, timeout: `${limit}s`, nothrow: true }),
    exportLine: `export VAULT_ADDR=${shq(addr)}${ca ? ` VAULT_CACERT=${shq(ca)}` : ''} VAULT_TOKEN="$VAULT_TOKEN"`,
  }
}
function passwordOk(value: string) {
  return /^[A-Za-z0-9._~-]{16,}$/.test(value)
}

function generated(): string {
  return secret(randomBytes(32).toString('base64url'))!
}

/** `vault kv get -format=json`: the version and data stored, or version 0 when nothing is. */
async function readSecret(): Promise<{ version: number; data: Record<string, unknown> }> {
  const out = await vault.$`vault kv get -format=json ${where.args}`
  if (!out.ok) {
    // "No value found at <path>" (exit 2): nothing stored yet. KV v2 names the API path, with /data/.
    const none = out.stderr.match(/^No value found at (\S+)/m)
    if (none && none[1] !== where.api) refuse([`${where.path} is not in a KV version 2 mount ${where.mount} (vault reads it as ${none[1]}): this script needs KV v2 for versions and check-and-set`])
    if (none) return { version: 0, data: {} }
    const { message, code } = vaultError(out)
    if (code !== EXIT.refused) fail(`vault kv get ${where.path}: ${message}`)
    refuse([`vault kv get ${where.path}: ${message}`])
  }
  let parsed
  try {
    parsed = JSON.parse(out.stdout)
  } catch {
    fail(`vault kv get -format=json ${where.path} did not print JSON`) // its output holds secrets: never shown
  }
  const meta = parsed?.data?.metadata
  if (typeof meta?.version !== 'number') refuse([`${where.path} is not in a KV version 2 mount (no version metadata): this script needs KV v2 for versions and check-and-set`])
  const data = (parsed.data.data ?? {}) as Record<string, unknown> // null when the latest version was deleted
  for (const v of Object.values(data)) if (typeof v === 'string') secret(v)
  return { version: meta.version, data }
}

function writtenVersion(out: ProcessOutput): number | undefined {
  try {
    return JSON.parse(out.stdout)?.data?.version
  } catch {
    return undefined
  }
}

/** Why a vault call failed, in words a person can act on; the exit code it deserves above the point of no return. */
function vaultError(out: ProcessOutput): { message: string; code: number } {
  const text = out.stderr.trim()
  const lines = text.split('\n').filter(Boolean)
  const reason = text.match(/^\* (.+)$/m)?.[1] ?? lines.at(-1) ?? 'no message'
  if (/^Code: 403\./m.test(text))
    return { code: EXIT.refused, message: `Vault at ${vault.addr} refused the token (403): check VAULT_TOKEN and that its policy allows read, create and update on ${where.api}, and that ${where.mount} is the KV mount (STOREFRONT_VAULT_MOUNT; a nested mount such as team/kv must be named) (${reason})` }
  if (/x509|certificate|tls:|CA File/i.test(text))
    return { code: EXIT.refused, message: `TLS with Vault at ${vault.addr} failed: check VAULT_CACERT and VAULT_ADDR (${reason})` }
  if (timedOut(out, vault.limit)) return { code: EXIT.failed, message: `cannot reach Vault at ${vault.addr}: a connection problem (${noAnswer(vault.limit)})` }
  if (/dial tcp|connection refused|no such host|i\/o timeout|deadline exceeded|network is unreachable/i.test(text) || out.signal)
    return { code: EXIT.failed, message: `cannot reach Vault at ${vault.addr}: a connection problem (${reason})` }
  return { code: EXIT.failed, message: `vault exited ${out.exitCode}: ${lines.slice(-3).join(' | ') || 'no message'}` }
}

