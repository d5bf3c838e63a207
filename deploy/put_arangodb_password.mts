#!/usr/bin/env -S npx tsx
// put_arangodb_password: store the ArangoDB root password in the Nomad Variable that jobs/arangodb.nomad reads.
//
// Usage: npx tsx deploy/put_arangodb_password.mts [--dry-run] [--plan] [--env-file PATH]
//
// Writes the item root_password of the Nomad Variable nomad/jobs/arangodb-agent-economique and keeps
// every other item stored there: it reads the variable, merges, and writes with
// `nomad var put -check-index N` (0 when new), so a concurrent write stops it instead of being lost.
// The value comes from ARANGO_ROOT_PASSWORD; else, at a terminal (stdin and stderr, CI unset), from a
// hidden prompt (typed twice; 5 minutes at most; a TAB or control character refused);
// else (cron, CI) a new one is generated with node:crypto, but only when none is stored yet: a stored
// password is then kept. The value reaches nomad on stdin, never in argv, and is never printed, not
// even a generated one. An identical value is not written again. Read it back (needs variables:read):
//   nomad var get -item root_password nomad/jobs/arangodb-agent-economique
// ArangoDB uses it only when it initialises an empty data directory: changing it later does not change
// the password of an existing database.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); the TLS files when NOMAD_ADDR is https
//        (see certs/README.md); a token with variables read and write on nomad/jobs/arangodb-agent-economique.
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION,
//        ARANGO_ROOT_PASSWORD (secret; optional: prompted for at a terminal, else generated if none is stored),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            read the Variable and say what a run would write; change nothing, ask nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (stored, unchanged or kept), 1 a step failed (e.g. a concurrent write), 2 refused before changing anything.
import { randomBytes } from 'node:crypto'
import type { ProcessOutput } from 'zx'
import { askHidden, canPrompt, EXIT, exit, fail, refuse, report, secret, start, step } from './lib/env.mts'
import { nomadConnection, nomadError, nomadVersions } from './lib/nomad.mts'

const VAR_PATH = 'nomad/jobs/arangodb-agent-economique'
const ITEM = 'root_password'
const READ_BACK = `nomad var get -item ${ITEM} ${VAR_PATH}`

// Check
const { check, dryRun, planOnly } = start(import.meta.url, { plan: true })
const given = secret(check.optional('ARANGO_ROOT_PASSWORD'))
delete process.env.ARANGO_ROOT_PASSWORD // nomad needs it on stdin only, not in its environment
const nomad = nomadConnection(check)
check.done()
report({ variable: VAR_PATH })

if (dryRun) {
  console.log([
    nomad.exportLine,
    `nomad var get -out json ${VAR_PATH}`,
    `# stdin: {"Path":"${VAR_PATH}","Items":{<the other items read, kept>,"${ITEM}":"$ARANGO_ROOT_PASSWORD"}}`,
    `nomad var put -check-index "$MODIFY_INDEX_FROM_GET" -in=json -out=none -`,
  ].join('\n'))
  if (!given) console.log('# ARANGO_ROOT_PASSWORD is not set: a real run asks at a terminal; without one it generates a password if none is stored, else keeps the stored one')
  exit(EXIT.done)
}

// Read what is stored (the other items must survive the write)
step(`Read the Nomad Variable ${VAR_PATH}`)
await nomadVersions(nomad)
// A 403 reads "Variable not found" up to Nomad 1.11.1 (api/variables.go); from 1.11.2 it is a 403
// error, refused below. Before, a token that may not read fails at the write instead (check-and-set).
const read = await nomad.$`nomad var get -out json ${VAR_PATH}`
let items: Record<string, string> = {}
let index = 0
if (read.ok) {
  try {
    const v = JSON.parse(read.stdout)
    items = v.Items ?? {}
    index = Number(v.ModifyIndex)
  } catch {
    fail(`nomad var get printed no variable JSON for ${VAR_PATH}`)
  }
  for (const value of Object.values(items)) secret(value)
  console.error(`    found: modify index ${index}, items: ${Object.keys(items).sort().join(', ') || '(none)'}`)
} else if (/Variable not found/.test(read.stderr)) {
  console.error('    not stored yet')
} else nomadStop(`nomad var get ${VAR_PATH}`, read)
const stored = items[ITEM]

if (planOnly) {
  report({ outcome: 'planned', changes: given === undefined ? stored === undefined : given !== stored })
  console.log(`--plan: ${given === undefined
    ? stored === undefined ? `${VAR_PATH} holds no ${ITEM}: a run would ask at a terminal, else generate one, and write it` : `${VAR_PATH} holds ${ITEM}: a run without ARANGO_ROOT_PASSWORD keeps it (at a terminal it asks for a new one)`
    : given === stored ? `${ITEM} in ${VAR_PATH} is already ARANGO_ROOT_PASSWORD: a run would write nothing` : `a run would write ${ITEM} (${stored === undefined ? 'new' : 'changed'}) to ${VAR_PATH}, keeping its other items`}`)
  console.log('Nothing was changed (--plan reads the cluster only).')
  exit(EXIT.done)
}

// Choose the value
let password: string
let source: string
if (given) {
  password = given
  source = 'from ARANGO_ROOT_PASSWORD'
} else if (canPrompt()) {
  password = await askTwice()
  source = 'typed at the prompt'
} else if (stored !== undefined) {
  const line = `ARANGO_ROOT_PASSWORD is not set and there is no terminal to ask: the root password stored in ${VAR_PATH} is kept; nothing was written (modify index ${index})`
  report({ outcome: 'unchanged', message: line })
  console.log(line)
  exit(EXIT.done)
} else {
  password = secret(randomBytes(32).toString('base64url'))!
  source = 'generated (32 random bytes, base64url), since none was given or stored'
}

if (password === stored) {
  const line = `${ITEM} in ${VAR_PATH} is already that password: unchanged, nothing was written (modify index ${index})`
  report({ outcome: 'unchanged', message: line })
  console.log(line)
  exit(EXIT.done)
}

// --- point of no return ---
report({ acted: true })
step(`Write ${ITEM} to ${VAR_PATH} (check-index ${index})`)
const spec = JSON.stringify({ Path: VAR_PATH, Items: { ...items, [ITEM]: password } })
const put = await nomad.$({ input: spec })`nomad var put -check-index ${index} -in=json -out=none -`
if (!put.ok) {
  if (/Check-and-Set conflict/i.test(put.stderr))
    fail(`${VAR_PATH} was changed by someone else since it was read (modify index ${index}): nothing was written; run again to merge with the new version (if this repeats, check that NOMAD_TOKEN may read variables: Nomad 1.x reports an unreadable variable as not found)`)
  nomadStop('nomad var put', put)
}
const written = put.stdout.match(/with modify index (\d+)/)?.[1] ?? '?'

// Report
const kept = Object.keys(items).filter((k) => k !== ITEM).sort()
report({ outcome: 'done', message: `stored the ArangoDB root password (${source}) in ${VAR_PATH}, item ${ITEM} (modify index ${written})`, next: ['npx tsx deploy/deploy_arangodb.mts'] })
console.log(`Stored the ArangoDB root password (${source}) in the Nomad Variable ${VAR_PATH}, item ${ITEM} (modify index ${written})${kept.length ? `; other items kept: ${kept.join(', ')}` : ''}.
It is never printed. To read it (needs variables:read on that path):
  ${READ_BACK}
ArangoDB uses it only when it initialises an empty data directory; for an existing database change it in ArangoDB as well.
Next: npx tsx deploy/deploy_arangodb.mts`)

// ---------------------------------------------------------------------------------------------

/** A nomad call that failed: exit 2 when the cluster refused us (nothing changed), else 1. */
function nomadStop(what: string, out: ProcessOutput): never {
  const { message, code } = nomadError(nomad, out)
  if (code === EXIT.refused) refuse([`${what}: ${message}`])
  fail(`${what}: ${message}`)
}

/** The hidden prompt: typed twice, compared; refused (exit 2, nothing written) when empty or different. */
async function askTwice(): Promise<string> {
  const first = await askHidden(`ArangoDB root password for ${VAR_PATH} (not echoed): `)
  if (!first) refuse(['no password typed: nothing was written'])
  if (/[\x00-\x1f\x7f]/.test(first)) refuse(['the password typed holds a control character: nothing was written'])
  const again = await askHidden('Type it again: ')
  if (again !== first) refuse(['the two passwords typed differ: nothing was written'])
  return first
}
