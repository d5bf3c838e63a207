#!/usr/bin/env node
// Test double of the vault CLI (1.15) for the KV secrets engine, faithful to
// ../shared/reference/nomad-vault-cli.md and to hashicorp/vault's command/kv_*.go:
// flags before the path (Go `flag`: the first non-flag ends the flags, so a flag after the path is
// DATA, or "format must be key=value"), KV v2 versions with check-and-set, `kv put` replacing the
// whole secret, `kv patch` merging (404 on a missing path), DATA as k=v, k=@file, k=-, a bare `-`
// (a JSON object on stdin) and @file.json, the preflight mount lookup that answers 403 for a bad
// token, and every API error exiting 2.
// State lives in $STUB_STATE/vault.json; every call is appended to $STUB_STATE/calls.jsonl.
//
// Knobs in the state file (tests set them with setState(..., 'vault')):
//   mode: "ok" | "forbidden" (403 on everything) | "unreachable" | "readonly" (reads ok, writes 403) | "hang"
//   slow: { "kv put": 3 } — that subcommand waits so many seconds before it acts (a slow server)
//   token: "x" — the only token accepted (default: any non-empty token; none at all is always refused)
//   mounts: { "secret/": 2 } — KV mounts and their version (default: secret/ as KV v2)
//   noPatch: true — the token lacks the "patch" capability (kv patch warns and falls back to read+write)
//   raceAfterGet: { key: value } — right after the next successful `kv get`, another writer adds a version
//   requireCa: true — an https VAULT_ADDR fails the TLS handshake unless VAULT_CACERT names an existing file
//   fail: ["kv put", ...] — these subcommands' requests fail as on a cluster without an active node (500)
//   barrier: { "kv get": 2 } — a call of that subcommand waits until that many calls of it have arrived,
//            so that concurrent writers all read the same version
// Like the server, the double applies one call at a time: a call takes a lock file before it reads
// the state it acts on (after any barrier or hang) and writes it back atomically (rename).
// The secrets: secrets["secret/data/cedra/prod"] = { versions: [{ data, created_time }] } (version n = index n-1).
import { randomUUID } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import path from 'node:path'
import { barrier, err, hang, lock, logCall, out, readState, slowDown, writeState } from './common.mjs'

const load = () => readState('vault', (s) => {
  s.mode ??= 'ok'
  s.mounts ??= { 'secret/': 2 }
  s.secrets ??= {}
  return s
})
// The knobs first; the state is read again under the lock (below) before the call acts on it.
let state = load()
const save = () => writeState('vault', state)

const argv = process.argv.slice(2)
const stdin = readStdinIfAny()
logCall('vault', argv, ['VAULT_ADDR', 'VAULT_TOKEN', 'VAULT_CACERT', 'VAULT_CAPATH', 'VAULT_NAMESPACE', 'VAULT_FORMAT',
  'NOMAD_TOKEN', 'CONSUL_HTTP_TOKEN', 'REVALIDATE_SECRET', 'SESSION_SECRET', 'VALKEY_PASSWORD'], stdin)

const die = (msg, code = 2) => { err(msg); process.exit(code) }

// Go flag kinds: 0 bool, 1 string/int, 2 repeatable.
const HTTP = { address: 1, 'agent-address': 1, 'ca-cert': 1, 'ca-path': 1, 'client-cert': 1, 'client-key': 1, namespace: 1, ns: 1,
  'tls-server-name': 1, 'tls-skip-verify': 0, 'disable-redirects': 0, 'wrap-ttl': 1, 'policy-override': 0, header: 2, mfa: 2,
  'non-interactive': 0, 'output-curl-string': 0, 'output-policy': 0, 'unlock-key': 1 }
const OUTPUT = { field: 1, format: 1 }
const COMMANDS = {
  'kv get': { ...HTTP, ...OUTPUT, mount: 1, version: 1 },
  'kv put': { ...HTTP, ...OUTPUT, mount: 1, cas: 1 },
  'kv patch': { ...HTTP, ...OUTPUT, mount: 1, cas: 1, method: 1, 'remove-data': 2 },
}
const INTS = ['cas', 'version']

if (['version', '-version', '--version', '-v'].includes(argv[0])) { out('Vault v1.15.6 (615cf6f1dce9aa91bc2035ce33b9f689952218f0), built 2024-02-28T17:07:34Z'); process.exit(0) }
const cmd = `${argv[0]} ${argv[1]}`
const spec = COMMANDS[cmd]
if (!spec) die(`Unknown command: vault ${argv.join(' ')} (not in this test double)`, 127)
const { flags, args } = parseFlags(argv.slice(2), spec)

const format = flags.format ?? process.env.VAULT_FORMAT ?? 'table'
if (!['table', 'json', 'yaml', 'raw', 'pretty'].includes(format)) die(`Invalid output format: ${format}`, 1)

// Argument counts come before the client is even built (exit 1).
if (args.length < 1) die(`Not enough arguments (expected ${cmd === 'kv get' ? '1' : '>1'}, got 0)`, 1)
if (cmd === 'kv get' && args.length > 1) die(`Too many arguments (expected 1, got ${args.length})`, 1)
if (cmd === 'kv put' && args.length === 1) die('Must supply data', 1)
if (cmd === 'kv patch' && args.length === 1 && !flags['remove-data']) die('Must supply data', 1)

// The client: TLS files are loaded before any request (exit 2).
const addr = (flags.address ?? process.env.VAULT_ADDR ?? 'https://127.0.0.1:8200').replace(/\/$/, '')
const caCert = flags['ca-cert'] ?? process.env.VAULT_CACERT
if (caCert && !existsSync(caCert)) die(`Error loading CA File: open ${caCert}: no such file or directory`)

// DATA is parsed before the first request (exit 1), as kvbuilder does.
let data
if (cmd !== 'kv get') {
  try { data = parseData(args.slice(1)) } catch (e) { die(`Failed to parse K=V data: ${e.message}`, 1) }
}

await barrier('vault', cmd, state.barrier?.[cmd])
await slowDown(cmd, state.slow?.[cmd])
if (state.mode === 'hang') await hang()
lock('vault')
state = load()

// Preflight: GET /v1/sys/internal/ui/mounts/<path> finds the mount and its KV version.
const mountFlag = flags.mount !== undefined && flags.mount !== ''
const given = sanitize(args[0])
const lookup = mountFlag ? sanitize(flags.mount) : given
request('GET', `sys/internal/ui/mounts/${lookup}`)
const mount = Object.keys(state.mounts).filter((m) => `${lookup}/`.startsWith(m)).sort((a, b) => b.length - a.length)[0]
if (!mount) apiError('GET', `sys/internal/ui/mounts/${lookup}`, 403, [`preflight capability check returned 403, please ensure client's policies grant access to path "${lookup}/"`])
const v2 = state.mounts[mount] === 2
const partial = mountFlag ? `${mount.replace(/\/$/, '')}/${given}` : given
const rest = partial.slice(mount.length)
const fullPath = v2 ? `${mount}data/${rest}` : partial
if (state.fail?.includes(cmd)) {
  const method = { 'kv get': 'GET', 'kv put': 'PUT', 'kv patch': 'PATCH' }[cmd]
  apiError(method, fullPath, 500, ['local node not active but active cluster node not found'], method === 'GET' ? '' : `Error writing data to ${fullPath}: `)
}

switch (cmd) {
  case 'kv get': kvGet(); break
  case 'kv put': kvPut(); break
  case 'kv patch': kvPatch(); break
}
save()

// ------------------------------------------------------------------------------------------------

function parseFlags(list, known) {
  const flags = {}
  let i = 0
  for (; i < list.length; i++) {
    const a = list[i]
    if (a === '--') { i++; break }
    if (!a.startsWith('-') || a === '-') break
    let [name, value] = a.replace(/^--?/, '').split(/=(.*)/s)
    if (!(name in known)) die(`flag provided but not defined: -${name}`, 1)
    if (known[name] === 0) {
      if (value !== undefined && !['true', 'false', '1', '0', 't', 'f', 'TRUE', 'FALSE'].includes(value)) die(`invalid boolean value "${value}" for -${name}: parse error`, 1)
      flags[name] = value === undefined || ['true', '1', 't', 'TRUE'].includes(value)
      continue
    }
    if (value === undefined) {
      if (i + 1 >= list.length) die(`flag needs an argument: -${name}`, 1)
      value = list[++i]
    }
    if (INTS.includes(name) && !/^-?\d+$/.test(value)) die(`invalid value "${value}" for flag -${name}: parse error`, 1)
    if (known[name] === 2) (flags[name] ??= []).push(value)
    else flags[name] = INTS.includes(name) ? Number(value) : value
  }
  return { flags, args: list.slice(i) }
}





function readStdinIfAny() {
  // Only DATA reads stdin (a bare "-" or "k=-"); reading an open terminal would block.
  const a = process.argv.slice(2)
  if (!(a[0] === 'kv' && ['put', 'patch'].includes(a[1]) && a.slice(2).some((x) => x === '-' || /^[^=]+=-$/.test(x)))) return undefined
  try { return readFileSync(0, 'utf8') } catch { return '' }
}


function sanitize(p) {
  return p.replace(/^\/+|\/+$/g, '')
}

/** kvbuilder: k=v, k=@file, k=\@literal, k=- (all of stdin), a bare - or @file (one JSON object), repeats become lists. */
function parseData(list) {
  const result = {}
  let stdinUsed = false
  const json = (text, raw) => {
    let obj
    try { obj = JSON.parse(text) } catch (e) { throw new Error(`invalid key/value pair ${JSON.stringify(raw)}: ${text.trim() === '' ? 'EOF' : `invalid character: ${e.message}`}`) }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`invalid key/value pair ${JSON.stringify(raw)}: json: cannot unmarshal ${Array.isArray(obj) ? 'array' : typeof obj} into Go value of type map[string]interface {}`)
    Object.assign(result, obj)
  }
  for (const raw of list) {
    if (raw === '') continue
    const eq = raw.indexOf('=')
    if (eq < 0) {
      if (raw === '-') {
        if (stdinUsed) throw new Error(`invalid key/value pair "-": stdin already consumed`)
        stdinUsed = true
        json(stdin ?? '', raw)
        continue
      }
      if (raw.startsWith('@')) {
        if (!existsSync(raw.slice(1))) throw new Error(`invalid key/value pair ${JSON.stringify(raw)}: open ${raw.slice(1)}: no such file or directory`)
        json(readFileSync(raw.slice(1), 'utf8'), raw)
        continue
      }
      throw new Error(`invalid key/value pair ${JSON.stringify(raw)}: format must be key=value`)
    }
    const key = raw.slice(0, eq)
    let value = raw.slice(eq + 1)
    if (value.startsWith('@')) {
      if (!existsSync(value.slice(1))) throw new Error(`invalid key/value pair ${JSON.stringify(raw)}: error reading file: open ${value.slice(1)}: no such file or directory`)
      value = readFileSync(value.slice(1), 'utf8')
    } else if (value.startsWith('\\@')) value = value.slice(1)
    else if (value === '-') {
      if (stdinUsed) throw new Error(`invalid key/value pair ${JSON.stringify(raw)}: stdin already consumed`)
      stdinUsed = true
      value = stdin ?? ''
    }
    if (key in result) result[key] = [].concat(result[key], value)
    else result[key] = value
  }
  return result
}

/** One API request: connection, TLS and token are checked on every one, as the server does. */
function request(method, apiPath, { write = false } = {}) {
  const url = `${addr}/v1/${apiPath}`
  if (state.mode === 'unreachable') die(`${cap(method)} "${url}": dial tcp 10.9.8.7:8200: connect: connection refused`)
  if (addr.startsWith('https://') && state.requireCa && !(caCert && existsSync(caCert)))
    die(`${cap(method)} "${url}": tls: failed to verify certificate: x509: certificate signed by unknown authority`)
  const token = process.env.VAULT_TOKEN ?? readTokenFile()
  if (!token || state.mode === 'forbidden' || (state.token !== undefined && token !== state.token)) apiError(method, apiPath, 403, ['permission denied'])
  if (write && state.mode === 'readonly') apiError(method, apiPath, 403, ['1 error occurred:\n\t* permission denied\n'])
}

function readTokenFile() {
  const f = path.join(process.env.HOME ?? homedir(), '.vault-token')
  return existsSync(f) ? readFileSync(f, 'utf8').trim() : undefined
}

function cap(m) {
  return m[0] + m.slice(1).toLowerCase()
}

/** api.ResponseError as the CLI prints it; `prefix` is the command's own "Error writing data to …: ". */
function responseError(method, apiPath, code, errors) {
  return `Error making API request.\n\nURL: ${method} ${addr}/v1/${apiPath}\nCode: ${code}. Errors:\n\n${errors.map((e) => `* ${e}`).join('\n')}`
}
function apiError(method, apiPath, code, errors, prefix = '') {
  die(prefix + responseError(method, apiPath, code, errors))
}

function secretAt(p) {
  return state.secrets[p]
}

function metadataOf(s, n) {
  const v = s.versions[n - 1]
  return { created_time: v.created_time, custom_metadata: null, deletion_time: '', destroyed: false, version: n }
}

function envelope(data) {
  return { request_id: randomUUID(), lease_id: '', lease_duration: 0, renewable: false, data, warnings: null, mount_type: 'kv' }
}

function table(title, rows) {
  const width = Math.max(3, ...Object.keys(rows).map((k) => k.length)) + 4
  const bar = '='.repeat(Math.max(1, Math.floor((width + 5 - title.length) / 2)))
  return [`${bar} ${title} ${bar}`, `${'Key'.padEnd(width)}Value`, `${'---'.padEnd(width)}-----`,
    ...Object.entries(rows).map(([k, v]) => `${k.padEnd(width)}${v === null ? '<nil>' : v === '' ? 'n/a' : typeof v === 'object' ? JSON.stringify(v) : v}`)].join('\n')
}

function printRaw(value) {
  if (value === undefined || value === null) die(`Field "${flags.field}" not present in secret`, 1)
  process.stdout.write(typeof value === 'object' ? JSON.stringify(value) : String(value))
}

function kvGet() {
  request('GET', fullPath)
  const s = secretAt(fullPath)
  const n = flags.version ? Number(flags.version) : s?.versions.length
  if (!s || !n || !s.versions[n - 1]) die(`No value found at ${fullPath}`)
  const secretData = v2 ? { data: s.versions[n - 1].data, metadata: metadataOf(s, n) } : s.versions[n - 1].data
  if (flags.field !== undefined) printRaw(v2 ? secretData.data[flags.field] : secretData[flags.field])
  else if (format === 'json') out(JSON.stringify(envelope(secretData), null, 2))
  else {
    const parts = [`${'='.repeat(6)} Secret Path ${'='.repeat(6)}`, fullPath, '']
    if (v2) parts.push(table('Metadata', secretData.metadata), '', table('Data', secretData.data))
    else parts.push(table('Data', secretData))
    out(parts.join('\n'))
  }
  if (state.raceAfterGet) {
    const extra = state.raceAfterGet
    delete state.raceAfterGet
    const latest = s.versions[s.versions.length - 1].data
    s.versions.push({ data: { ...latest, ...extra }, created_time: new Date().toISOString(), by: 'someone-else' })
  }
}

/** Write a new version after the KV v2 check-and-set rules: cas=0 only creates, cas=N needs version N. */
function write(method, newData, cas, prefix) {
  const s = secretAt(fullPath)
  const current = s ? s.versions.length : 0
  if (cas !== undefined && cas !== current)
    apiError(method, fullPath, 400, ['check-and-set parameter did not match the current version'], prefix)
  const target = (state.secrets[fullPath] ??= { versions: [] })
  if (!v2) target.versions = []
  target.versions.push({ data: newData, created_time: new Date().toISOString() })
  return v2 ? metadataOf(target, target.versions.length) : null
}

function printWritten(meta) {
  if (!meta) return format === 'table' ? out(`Success! Data written to: ${fullPath}`) : undefined
  if (flags.field !== undefined) return printRaw(meta[flags.field])
  if (format === 'json') return out(JSON.stringify(envelope(meta), null, 2))
  out([`${'='.repeat(6)} Secret Path ${'='.repeat(6)}`, fullPath, '', table('Metadata', meta)].join('\n'))
}

function kvPut() {
  const prefix = `Error writing data to ${fullPath}: `
  request('PUT', fullPath, { write: true })
  // -cas defaults to -1 (not sent); it only applies to KV v2.
  const cas = v2 && flags.cas !== undefined && flags.cas > -1 ? flags.cas : undefined
  printWritten(write('PUT', data, cas, prefix))
}

function kvPatch() {
  if (!v2) die('K/V engine mount must be version 2 for patch support')
  const prefix = `Error writing data to ${fullPath}: `
  for (const k of flags['remove-data'] ?? []) data[k] = null
  const method = flags.method ?? ''
  if (!['', 'patch', 'rw'].includes(method)) die(`Unsupported method provided to -method flag: ${method}`)
  const s = secretAt(fullPath)
  let cas = flags.cas > 0 ? flags.cas : undefined // -cas=0 or unset: the patch is allowed
  if (method !== 'rw') {
    const denied = state.mode === 'readonly' || state.noPatch
    if (!denied || method === 'patch') {
      request('PATCH', fullPath, { write: true })
      if (state.noPatch) apiError('PATCH', fullPath, 403, ['1 error occurred:\n\t* permission denied\n'], prefix)
      if (!s) apiError('PATCH', fullPath, 404, [], prefix)
      return printWritten(write('PATCH', mergePatch(s.versions[s.versions.length - 1].data, data), cas, prefix))
    }
    err(`WARNING! Data was written to ${fullPath} but we recommend that you add the "patch" capability to your ACL policy in order to use HTTP PATCH in the future.`)
  }
  // Read, merge locally, write with the version just read as cas (any -cas given is ignored here).
  request('GET', fullPath)
  if (!s) die(`No value found at ${fullPath}`)
  const merged = { ...s.versions[s.versions.length - 1].data }
  for (const [k, v] of Object.entries(data)) merged[k] = v
  request('PUT', fullPath, { write: true })
  printWritten(write('PUT', merged, s.versions.length, prefix))
}

/** JSON merge patch (RFC 7386): objects merge recursively, null removes a key. */
function mergePatch(target, patch) {
  const result = { ...target }
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete result[k]
    else if (typeof v === 'object' && !Array.isArray(v) && typeof result[k] === 'object' && result[k] !== null && !Array.isArray(result[k])) result[k] = mergePatch(result[k], v)
    else result[k] = v
  }
  return result
}
