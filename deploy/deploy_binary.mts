#!/usr/bin/env -S npx tsx
// deploy_binary: build the Agent Economique Go binary for the server(s) and upload it atomically over ssh.
//
// Usage: npx tsx deploy/deploy_binary.mts [--dry-run] [--env-file PATH]
//
// Builds the Go module in AGENT_SOURCE_DIR for AGENT_GOOS/AGENT_GOARCH whatever the laptop is (CGO off,
// reproducible: -trimpath -buildvcs=false -ldflags "-s -w -buildid=") into a local temporary directory.
// First it asks Nomad which client each host is (its node, matched by address or else name, as
// deploy_nomad matches them to pin the job) and refuses a host that is not a ready, eligible client
// with a healthy raw_exec driver, before any upload. Then, over ONE ssh connection per host, it reads
// the sha256 of the live binary AGENT_REMOTE_DIR/AGENT_BINARY_NAME on each host (all before building):
// the same, it sends nothing and says "unchanged". Otherwise it uploads to a temporary name in that
// directory (created if missing; uploads of killed runs idle for 10 minutes are removed), verifies the
// sha256 on the server, keeps the live binary as <name>.previous (a hard link) and renames the upload
// over the live path. The live file is never opened for writing: a running agent keeps running.
// One run at a time installs into the directory (a lock there, .<name>.lock; a second run is refused
// with the holder's name; a lock left by a killed run expires after 15 minutes).
// It does not (re)start the Nomad job: see the commands it prints.
//
// Needs: go, ssh (OpenSSH client), nomad CLI 1.6+ (the servers' version; 2.0 is current); on the
//        server: sh, uname, sha256sum, mkdir, find, cat, chmod, ln, mv.
// Reads: DEPLOY_SSH_HOST (one host) or DEPLOY_SSH_HOSTS (several, separated by spaces or commas),
//        DEPLOY_SSH_USER (default root), DEPLOY_SSH_PORT (default 22),
//        DEPLOY_SSH_KEY (identity file, optional), DEPLOY_SSH_KNOWN_HOSTS (known_hosts file, optional),
//        AGENT_SOURCE_DIR (default backend), AGENT_BINARY_NAME (default agent),
//        AGENT_REMOTE_DIR (default /root/data), AGENT_GOOS (default linux), AGENT_GOARCH (default amd64),
//        NOMAD_ADDR, NOMAD_TOKEN (node:read), NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION,
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each ssh command may take; the upload gets that
//          plus one second per 50 kB of the binary).
// Options:
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or unchanged), 1 a step failed (build, ssh, checksum), 2 refused before changing
//       anything; 130/143 interrupted (local and remote temporary files removed, live binary untouched).
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { $ } from 'zx'
import { type Checks, exit, fail, onExit, refuse, report, shq, start, step } from './lib/env.mts'
import { nomadConnection, nomadVersions } from './lib/nomad.mts'
import { clientNodes } from './lib/nodes.mts'
import { openSsh, sshDryRun, sshTargets, unframed, type Ssh, type SshTarget } from './lib/ssh.mts'

const JOB = 'agent-economique'
const LDFLAGS = '-s -w -buildid='
// Remote scripts: fixed text, values arrive as "$1" "$2"... LOOK only reads: the platform, then the
// live binary's sha256, "none", or "other" (not a regular file).
const LOOK = 'command -v sha256sum >/dev/null || { echo "sha256sum not found on the server" >&2; exit 3; }; uname -sm; if [ -f "$1/$2" ]; then sha256sum < "$1/$2"; elif [ -e "$1/$2" ] || [ -L "$1/$2" ]; then echo other; else echo none; fi; ' +
  'p="$1/$2.previous"; if [ -f "$p" ] && [ ! -L "$p" ]; then echo previous-file; elif [ -e "$p" ] || [ -L "$p" ]; then echo previous-other; else echo previous-none; fi'
// INSTALL: $1 dir, $2 name, $3 upload suffix, $4 expected sha256, the binary on stdin. When the input
// ends early (the client was killed) the checksum differs and the EXIT trap removes the upload.
const INSTALL = [
  'set -e', 'mkdir -p -- "$1"', 'cd -- "$1"',
  'find . -maxdepth 1 -type f -name ".$2.upload.*" -mmin +10 -exec rm -f -- {} +',
  // No ' in a remote script: a dry run shows it inside '...' (sshDryRun).
  't=".$2.upload.$3"', 'trap "rm -f -- \\"\\$t\\"" EXIT', 'trap "exit 1" HUP INT TERM PIPE',
  'set -C', 'cat > "$t"', 'set +C', 's=$(sha256sum "$t")',
  'if [ "${s%% *}" != "$4" ]; then echo "sha256 mismatch on the server: got ${s%% *}, expected $4" >&2; exit 3; fi',
  'chmod 755 -- "$t"',
  // Under the lock, the live file may have become this very binary (a run that finished meanwhile):
  // then nothing moves, and .previous keeps the binary that ran before.
  'if [ -f "$2" ] && [ "$(sha256sum < "$2" | cut -d" " -f1)" = "$4" ]; then echo unchanged; exit 0; fi',
  'if [ -e "$2" ]; then ln -f -- "$2" "$2.previous"; fi', 'mv -f -- "$t" "$2"', 'echo updated',
].join('; ')
// One run at a time installs into a directory: $1 dir, $2 name, $3 who (this run), $4 minutes after
// which a lock left by a killed run is taken over. Prints "acquired", "stale <old owner>" or "held <owner>".
// (The owner is read with the shell's own `read`: nothing but sh builtins decide who holds it.)
const LOCK = 'mkdir -p -- "$1" && l="$1/.$2.lock" && o= && if mkdir -- "$l" 2>/dev/null; then printf "%s\\n" "$3" > "$l/owner"; echo acquired; ' +
  'elif [ -n "$(find "$l" -maxdepth 0 -mmin +"$4" 2>/dev/null)" ]; then read -r o < "$l/owner" 2>/dev/null; printf "%s\\n" "$3" > "$l/owner"; touch -- "$l"; echo "stale $o"; ' +
  'else read -r o < "$l/owner" 2>/dev/null; echo "held $o"; fi'
const UNLOCK = 'l="$1/.$2.lock"; o=; read -r o < "$l/owner" 2>/dev/null; if [ "$o" = "$3" ]; then rm -rf -- "$l"; fi'
const PLATFORMS: Record<string, string> = {
  'Linux x86_64': 'linux/amd64', 'Linux aarch64': 'linux/arm64', 'Linux armv7l': 'linux/arm', 'Linux i686': 'linux/386',
}

// Check
const { check, dryRun } = start(import.meta.url)
const targets = sshTargets(check)
const nomad = nomadConnection(check)
const source = check.localPath('AGENT_SOURCE_DIR', 'backend')!
const dir = check.remotePath('AGENT_REMOTE_DIR', '/root/data')
const name = check.remoteName('AGENT_BINARY_NAME', 'agent')
const goos = platformPart(check, 'AGENT_GOOS', 'linux')
const goarch = platformPart(check, 'AGENT_GOARCH', 'amd64')
check.tool('go', 'install Go: https://go.dev/dl/ (Debian: apt-get install golang-go)')
if (source && !existsSync(path.join(source, 'go.mod')))
  check.missing(`AGENT_SOURCE_DIR=${source} is not a Go module (no go.mod)${existsSync(source) ? '' : ': the directory does not exist'}`)
check.done()
const live = `${dir}/${name}`
const goBuild = ['go', 'build', '-trimpath', '-buildvcs=false', `-ldflags=${LDFLAGS}`, '-o']
const goEnv = { GOOS: goos, GOARCH: goarch, CGO_ENABLED: '0' }
report({ host: targets[0]?.host, binary: { path: live } })

if (dryRun) {
  const bin = `"$BUILD"/${shq(name)}`
  console.log(`# a real run first checks in Nomad that each host is a ready, eligible client with raw_exec
# (nomad node status -json), then sends the ssh commands over one connection per host, and uploads
# only where the sha256 differs
${nomad.exportLine}
BUILD=$(mktemp -d)
(cd ${shq(source)} && ${Object.entries(goEnv).map(([k, v]) => `${k}=${v}`).join(' ')} ${goBuild.map(shq).join(' ')} ${bin} .)
SUM=$(sha256sum < ${bin} | cut -d' ' -f1)
${targets.map((target) => [`# ${target.destination}`, ...sshDryRun(target, [
  { name: 'LOOK', what: `the server's platform, the sha256 of ${live} (or none), what ${live}.previous is (reads only)`, script: LOOK, args: [dir, name] },
  { name: 'LOCK', what: `one upload at a time into ${dir} (a lock older than 15 minutes is taken over)`, script: LOCK, args: [dir, name, 'manual', '15'] },
  { name: 'INSTALL', what: `receive the binary, check its sha256, keep the live one as ${name}.previous, rename over ${name}`, script: INSTALL, args: [dir, name, 'manual'], more: '$SUM', stdin: bin },
  { name: 'UNLOCK', what: 'release the lock', script: UNLOCK, args: [dir, name, 'manual'] },
])].join('\n')).join('\n')}
rm -rf "$BUILD"`)
  exit(0)
}

// Nomad: each host is a client of this cluster that can run the agent (read-only)
step(`Ask Nomad at ${nomad.addr} which clients ${targets.map((t) => t.host).join(', ')} are`)
await nomadVersions(nomad)
await clientNodes(nomad, targets.map((t) => t.host), 'raw_exec')

// Look at each server first (one authenticated connection per host): its platform, the live sha256
const servers: { target: SshTarget; ssh: Ssh; remoteSum?: string }[] = []
const refusals: string[] = []
for (const target of targets) {
  step(`Connect to ${target.destination} (port ${target.port}) and read the sha256 of ${live}`)
  const ssh = await openSsh(target)
  const look = await ssh.run(LOOK, [dir, name])
  if (!look.ok) fail(`reading ${live} on ${target.destination}: ${ssh.why(look)}`)
  // Exactly three lines after the frame: the platform; the sha256, "none" or "other"; what .previous is.
  const lines = look.stdout.trim().split('\n')
  if (!look.framed || lines.length !== 3 || !/^([0-9a-f]{64}\b.*|none|other)$/.test(lines[1]) || !/^previous-(file|other|none)$/.test(lines[2])) {
    refuse([look.framed ? `reading ${live} on ${target.destination} printed ${JSON.stringify(look.stdout.slice(0, 160))}, not the three lines of the fixed remote script: nothing was changed` : unframed(target)])
  }
  const [uname = '', current = '', previous = ''] = lines
  const platform = PLATFORMS[uname.trim()]
  if (platform && platform !== `${goos}/${goarch}`) refusals.push(`${target.host} is ${uname.trim()} (${platform}) but AGENT_GOOS/AGENT_GOARCH build ${goos}/${goarch}: set them to match`)
  if (current.trim() === 'other') refusals.push(`${live} exists on ${target.host} but is not a regular file: move it away or set AGENT_REMOTE_DIR / AGENT_BINARY_NAME`)
  // The rollback copy is a hard link made over it: a directory there would swallow the link.
  if (previous === 'previous-other') refusals.push(`${live}.previous exists on ${target.host} but is not a regular file (the rollback copy goes there): move it away`)
  if (!platform) console.error(`warning: ${target.host} reports "${uname.trim()}": check that ${goos}/${goarch} runs there`)
  servers.push({ target, ssh, remoteSum: current.match(/^[0-9a-f]{64}\b/)?.[0] })
}
if (refusals.length) refuse(refusals)

// Build (a local temporary directory, removed whatever the way out)
step(`Build ${name} for ${goos}/${goarch} from ${source}`)
const build = mkdtempSync(path.join(os.tmpdir(), 'deploy-binary-'))
onExit(() => rmSync(build, { recursive: true, force: true }))
const binary = path.join(build, name)
const built = await $({ cwd: source, env: { ...process.env, ...goEnv }, timeout: '10m', nothrow: true })`${goBuild} ${binary} .`
if (!built.ok) fail(`go build in ${source} ${built.signal ? 'was stopped after 10 minutes' : `exited ${built.exitCode}`}:\n${built.stderr.trim()}`)
const bytes = readFileSync(binary)
const sum = createHash('sha256').update(bytes).digest('hex')
report({ binary: { path: live, sha256: sum } })

// Install on each host where the sha256 differs
const outcomes: { host: string; outcome: 'done' | 'unchanged'; message: string }[] = []
for (const { target, ssh, remoteSum } of servers) {
  const outcome = sum === remoteSum
    ? { outcome: 'unchanged' as const, message: `${live} on ${target.destination} is unchanged (same sha256): nothing sent` }
    : await install(target, ssh, remoteSum)
  outcomes.push({ host: target.host, ...outcome })
  await ssh.close()
}

// Report
const updated = outcomes.filter((o) => o.outcome === 'done').length
report({ outcome: updated ? 'done' : 'unchanged', message: outcomes.map((o) => o.message).join('; '), hosts: outcomes,
  next: ['npx tsx deploy/deploy_nomad.mts', `nomad job restart ${JOB}`] })
console.log(`${outcomes.map((o) => o.message).join('\n')}
  sha256  ${sum}
  size    ${bytes.length} bytes
  path    ${live}  (${goos}/${goarch})

Useful commands:
  npx tsx deploy/deploy_nomad.mts          (first deploy: the job runs ${live})
  nomad job restart ${JOB}        (the job already runs: start it on the new binary)
${servers.map(({ target }) => `  ${target.login} sha256sum ${shq(live)}`).join('\n')}
  roll back by hand: ${servers.map(({ target }) => `${target.login} mv -f ${shq(`${live}.previous`)} ${shq(live)}`).join('; ')}   then restart the job`)

/**
 * Upload to one host under its directory's lock (one run at a time installs there), verify the sha256
 * on the server, keep the live binary as .previous, rename over the live path.
 */
async function install(target: SshTarget, ssh: Ssh, remoteSum: string | undefined): Promise<{ outcome: 'done' | 'unchanged'; message: string }> {
  // Bounded like every remote command, plus the time to send the bytes at 50 kB/s at least.
  const uploadSeconds = target.limit + Math.ceil(bytes.length / 50_000)
  step(`Lock ${dir} on ${target.host} for this upload (.${name}.lock)`)
  const me = `${os.userInfo().username}@${os.hostname()} pid ${process.pid} since ${new Date().toISOString()}`
  const stale = Math.max(15, Math.ceil(uploadSeconds / 60) + 5)
  const lock = await ssh.run(LOCK, [dir, name, me, String(stale)])
  const lockState = lock.stdout.trim()
  if (!lock.ok) fail(`locking ${dir} on ${target.destination}: ${ssh.why(lock)}`)
  if (lockState.startsWith('held'))
    refuse([`another deploy_binary is installing into ${dir} on ${target.host} (${lockState.slice(5) || 'owner unknown'}): run again once it is done; a lock left by a killed run expires after ${stale} minutes, or remove it by hand: ${target.login} rm -rf ${shq(`${dir}/.${name}.lock`)}`])
  if (lockState.startsWith('stale')) console.error(`warning: took over a lock left ${stale}+ minutes ago by ${lockState.slice(6) || 'an unknown run'}`)
  let locked = true
  onExit(() => locked && ssh.run(UNLOCK, [dir, name, me]))
  // --- point of no return (on this host) ---
  report({ acted: true })
  const suffix = randomBytes(6).toString('hex')
  step(`Upload ${bytes.length} bytes to ${target.host}:${dir}/.${name}.upload.${suffix}, verify its sha256 there, keep ${name}.previous, rename over ${name}`)
  const sent = await ssh.run(INSTALL, [dir, name, suffix, sum], { input: bytes, timeoutSeconds: uploadSeconds })
  if (sent.exitCode === 3) fail(`${sent.stderr.trim()}: the upload was removed and ${live} left as it was`)
  if (!sent.ok) fail(`uploading to ${live} on ${target.destination}: ${ssh.why(sent)}`)
  await ssh.run(UNLOCK, [dir, name, me])
  locked = false
  return sent.stdout.trim() === 'unchanged'
    ? { outcome: 'unchanged', message: `${live} on ${target.destination} is unchanged: another run installed the same binary meanwhile (sha256 checked on the server)` }
    : { outcome: 'done', message: `${live} on ${target.destination} updated (${bytes.length} bytes sent)${remoteSum ? `; the previous binary is ${live}.previous` : ''}` }
}

/** AGENT_GOOS / AGENT_GOARCH: a Go platform word. */
function platformPart(check: Checks, name: string, fallback: string) {
  const v = check.get(name, fallback)
  if (v && !/^[a-z0-9]+$/.test(v)) check.problem(`${name}=${JSON.stringify(v)} must be a Go platform name such as ${fallback} (go tool dist list)`)
  return v
}
