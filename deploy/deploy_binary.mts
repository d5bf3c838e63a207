#!/usr/bin/env -S npx tsx
// deploy_binary: build the Agent Economique Go binary and upload it over ssh, as a release of its own.
//
// Usage: npx tsx deploy/deploy_binary.mts [--dry-run] [--json] [--env-file PATH]
//
// Builds the Go module in AGENT_SOURCE_DIR for AGENT_GOOS/AGENT_GOARCH whatever the laptop is (CGO off,
// reproducible: -trimpath -buildvcs=false -ldflags "-s -w -buildid=") into a local temporary directory.
// Each build is a file of its own, named by its content: AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256>.
// First it asks Nomad which client each host is (its node, matched by address or else name, as
// deploy_nomad matches them to pin the job) and refuses a host that is not a ready, eligible client
// with a healthy raw_exec driver, and what the job runs now, before any upload. Then, over ONE ssh
// connection per host, it lists the releases already there (all hosts before building). A build
// already on a host sends nothing ("unchanged"). Otherwise it uploads to a temporary name in that
// directory (created if missing; uploads of killed runs idle for 10 minutes are removed), verifies the
// sha256 on the server, and renames it to its release name. No file the job runs is ever replaced.
// It keeps the last DEPLOY_KEEP_RELEASES releases on each host (default 5) and never removes the one
// the job runs, its last stable one, or the new one. One run at a time installs into the directory (a
// lock there, .<name>.lock; a second run is refused with the holder's name; a lock left by a killed
// run expires after 15 minutes).
// It records the build in the Nomad Variable nomad/jobs/agent-economique/releases (item binaries:
// sha256, commit, when, who, hosts; no secret): deploy_nomad.mts deploys it from there, with the local
// nomad CLI only. It does not change the job: deploy_nomad.mts rolls the new binary out.
//
// Needs: go, ssh (OpenSSH client), git (optional: the source commit), nomad CLI 1.6+ (the servers'
//        version; 2.0 is current); on the server: sh, uname, sha256sum, mkdir, find, cat, chmod, mv, ls, touch.
// Reads: DEPLOY_SSH_HOST (one host) or DEPLOY_SSH_HOSTS (several, separated by spaces or commas),
//        DEPLOY_SSH_USER (default root), DEPLOY_SSH_PORT (default 22),
//        DEPLOY_SSH_KEY (identity file, optional), DEPLOY_SSH_KNOWN_HOSTS (known_hosts file, optional),
//        AGENT_SOURCE_DIR (default backend), AGENT_BINARY_NAME (default agent),
//        AGENT_REMOTE_DIR (default /root/data), AGENT_GOOS (default linux), AGENT_GOARCH (default amd64),
//        DEPLOY_KEEP_RELEASES (default 5: releases kept on each host),
//        NOMAD_ADDR, NOMAD_TOKEN (node:read, read-job, variables write on nomad/jobs/*), NOMAD_CACERT,
//        NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION,
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each ssh command may take; the upload gets that
//          plus one second per 50 kB of the binary).
// Options:
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or unchanged), 1 a step failed (build, ssh, checksum), 2 refused before changing
//       anything; 130/143 interrupted (local and remote temporary files removed, no release touched).
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { $, which } from 'zx'
import { type Checks, exit, fail, onExit, refuse, report, shq, start, step } from './lib/env.mts'
import { nomadConnection, nomadVersions } from './lib/nomad.mts'
import { clientNodes } from './lib/nodes.mts'
import { agentSha, type Binary } from './lib/agent.mts'
import { jobVersions, keepReleases, listItem, recordPath, updateRecord, whoAmI } from './lib/release.mts'
import { openSsh, sshDryRun, sshTargets, unframed, type Ssh, type SshTarget } from './lib/ssh.mts'

const JOB = 'agent-economique'
const LDFLAGS = '-s -w -buildid='
// Remote scripts: fixed text, values arrive as "$1" "$2"... No ' in a remote script: a dry run shows it
// inside '...' (sshDryRun). LOOK only reads: the platform, then each release file <name>-<64 hex>,
// newest first, as "release <sha256 of its content> <sha256 its name says>".
const LOOK = 'command -v sha256sum >/dev/null || { echo "sha256sum not found on the server" >&2; exit 3; }; uname -sm; [ -d "$1" ] || exit 0; cd -- "$1" || exit 3; ' +
  'ls -1t | while IFS= read -r f; do case "$f" in "$2"-*) ;; *) continue ;; esac; h=${f#"$2"-}; case "$h" in *[!0-9a-f]*) continue ;; esac; ' +
  '[ ${#h} -eq 64 ] && [ -f "$f" ] && [ ! -L "$f" ] || continue; s=$(sha256sum < "$f"); echo "release ${s%% *} $h"; done'
// INSTALL: $1 dir, $2 name, $3 upload suffix, $4 expected sha256, the binary on stdin. When the input
// ends early (the client was killed) the checksum differs and the EXIT trap removes the upload. The
// release file is created by a rename: a file the job runs is never opened for writing.
const INSTALL = [
  'set -e', 'mkdir -p -- "$1"', 'cd -- "$1"',
  // A directory or a link at the release name would take the upload inside it (mv): refused, nothing received.
  'f="$2-$4"', 'if [ -L "$f" ] || { [ -e "$f" ] && [ ! -f "$f" ]; }; then echo "$1/$f exists on the server but is not a regular file: move it away" >&2; exit 3; fi',
  'find . -maxdepth 1 -type f -name ".$2.upload.*" -mmin +10 -exec rm -f -- {} +',
  't=".$2.upload.$3"', 'trap "rm -f -- \\"\\$t\\"" EXIT', 'trap "exit 1" HUP INT TERM PIPE',
  'set -C', 'cat > "$t"', 'set +C', 's=$(sha256sum "$t")',
  'if [ "${s%% *}" != "$4" ]; then echo "sha256 mismatch on the server: got ${s%% *}, expected $4" >&2; exit 3; fi',
  'chmod 755 -- "$t"',
  // Under the lock, the release may have arrived meanwhile (a run that finished): then nothing moves.
  'if [ -f "$f" ] && [ "$(sha256sum < "$f" | cut -d" " -f1)" = "$4" ]; then touch -- "$f"; echo unchanged; exit 0; fi',
  'mv -f -- "$t" "$f"', 'echo updated',
].join('; ')
// TOUCH: $1 dir, $2 name, $3 sha256: a release built again counts as the newest (kept the longest).
const TOUCH = 'touch -c -- "$1/$2-$3"'
// PRUNE: $1 dir, $2 name, $3 how many to keep, then the sha256 never to remove. Keeps the newest $3
// release files; removes the older ones not named after the command line. Prints "removed <sha256>".
const PRUNE = 'cd -- "$1" || exit 3; n=$2; k=$3; shift 3; i=0; ls -1t | while IFS= read -r f; do case "$f" in "$n"-*) ;; *) continue ;; esac; h=${f#"$n"-}; ' +
  'case "$h" in *[!0-9a-f]*) continue ;; esac; [ ${#h} -eq 64 ] && [ -f "$f" ] || continue; i=$((i+1)); [ "$i" -le "$k" ] && continue; ' +
  'keep=; for p in "$@"; do [ "$p" = "$h" ] && keep=1; done; [ -n "$keep" ] && continue; rm -f -- "$f" && echo "removed $h"; done'
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
const keep = keepReleases(check)
check.tool('go', 'install Go: https://go.dev/dl/ (Debian: apt-get install golang-go)')
if (source && !existsSync(path.join(source, 'go.mod')))
  check.missing(`AGENT_SOURCE_DIR=${source} is not a Go module (no go.mod)${existsSync(source) ? '' : ': the directory does not exist'}`)
check.done()
const release = (sha: string) => `${dir}/${name}-${sha}`
const goBuild = ['go', 'build', '-trimpath', '-buildvcs=false', `-ldflags=${LDFLAGS}`, '-o']
const goEnv = { GOOS: goos, GOARCH: goarch, CGO_ENABLED: '0' }
report({ host: targets[0]?.host, job: JOB })

if (dryRun) {
  const bin = `"$BUILD"/${shq(name)}`
  console.log(`# a real run first checks in Nomad that each host is a ready, eligible client with raw_exec
# (nomad node status -json) and reads what the job runs (nomad job history -json ${JOB}), then sends
# the ssh commands over one connection per host, and uploads only where the release is missing
${nomad.exportLine}
BUILD=$(mktemp -d)
(cd ${shq(source)} && ${Object.entries(goEnv).map(([k, v]) => `${k}=${v}`).join(' ')} ${goBuild.map(shq).join(' ')} ${bin} .)
SUM=$(sha256sum < ${bin} | cut -d' ' -f1)
${targets.map((target) => [`# ${target.destination}`, ...sshDryRun(target, [
  { name: 'LOOK', what: `the server's platform, the releases in ${dir} (${name}-<sha256>) and their sha256 (reads only)`, script: LOOK, args: [dir, name] },
  { name: 'LOCK', what: `one upload at a time into ${dir} (a lock older than 15 minutes is taken over)`, script: LOCK, args: [dir, name, 'manual', '15'] },
  { name: 'INSTALL', what: `receive the binary, check its sha256, rename it to ${name}-$SUM`, script: INSTALL, args: [dir, name, 'manual'], more: '$SUM', stdin: bin },
  { name: 'PRUNE', what: `keep the newest ${keep} releases, and the ones the job runs (RUNNING_SHA256: see nomad job history -json ${JOB}, Meta.binary_sha256)`, script: PRUNE, args: [dir, name, String(keep)], more: '$SUM $RUNNING_SHA256' },
  { name: 'UNLOCK', what: 'release the lock', script: UNLOCK, args: [dir, name, 'manual'] },
])].join('\n')).join('\n')}
rm -rf "$BUILD"
# then a real run records the build in the Nomad Variable ${recordPath(JOB)}, item binaries (sha256, commit,
# when, who, hosts), by check-and-set: read it, add the build in front, write it back (by hand: edit the JSON)
#   nomad var get -out json ${recordPath(JOB)}
#   nomad var put -check-index "$MODIFY_INDEX_FROM_GET" -in=json -out=none - < the-edited.json
#   stdin: {"Path":"${recordPath(JOB)}","Items":{<the items read>,"binaries":"[{\\"sha256\\":\\"$SUM\\",...},<the others>]"}}`)
  exit(0)
}

// Nomad: each host is a client of this cluster that can run the agent; what the job runs (read-only)
step(`Ask Nomad at ${nomad.addr} which clients ${targets.map((t) => t.host).join(', ')} are, and what ${JOB} runs`)
await nomadVersions(nomad)
await clientNodes(nomad, targets.map((t) => t.host), 'raw_exec')
const versions = await jobVersions(nomad, JOB)
// Never removed: what the job runs now, and its last stable version (where auto_revert goes back to).
const protectedShas = [...new Set([versions[0], versions.find((v) => v.Stable)].map((v) => v && agentSha(v)).filter((x): x is string => Boolean(x)))]
if (protectedShas.length) console.error(`    ${JOB} runs ${protectedShas.map((x) => `${name}-${x.slice(0, 12)}`).join(', then (last stable) ')}`)

// Look at each server first (one authenticated connection per host): its platform, its releases
const servers: { target: SshTarget; ssh: Ssh; releases: string[] }[] = []
const refusals: string[] = []
for (const target of targets) {
  step(`Connect to ${target.destination} (port ${target.port}) and list the releases in ${dir}`)
  const ssh = await openSsh(target)
  const look = await ssh.run(LOOK, [dir, name])
  if (!look.ok) fail(`reading ${dir} on ${target.destination}: ${ssh.why(look)}`)
  // The platform, then one "release <content sha256> <name sha256>" line per release file.
  const [uname = '', ...lines] = look.stdout.trim().split('\n')
  if (!look.framed || !uname || !lines.every((l) => /^release [0-9a-f]{64} [0-9a-f]{64}$/.test(l))) {
    refuse([look.framed ? `listing ${dir} on ${target.destination} printed ${JSON.stringify(look.stdout.slice(0, 160))}, not the lines of the fixed remote script: nothing was changed` : unframed(target)])
  }
  const platform = PLATFORMS[uname.trim()]
  if (platform && platform !== `${goos}/${goarch}`) refusals.push(`${target.host} is ${uname.trim()} (${platform}) but AGENT_GOOS/AGENT_GOARCH build ${goos}/${goarch}: set them to match`)
  if (!platform) console.error(`warning: ${target.host} reports "${uname.trim()}": check that ${goos}/${goarch} runs there`)
  const releases: string[] = []
  for (const l of lines) {
    const [, content, named] = l.split(' ')
    // A file whose content is not what its name says is not a release: the upload replaces it.
    if (content === named) releases.push(named)
    else console.error(`warning: ${release(named)} on ${target.host} does not hold what its name says (sha256 ${content}): it will be uploaded again if this build is it`)
  }
  servers.push({ target, ssh, releases })
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
const commit = await sourceCommit(source)
const live = release(sum)
report({ binary: { path: live, sha256: sum }, ...(commit && /^[0-9a-f]{7,40}$/.test(commit) ? { commit } : {}) })

// Install on each host where it is missing, then keep the last releases
const outcomes: { host: string; outcome: 'done' | 'unchanged'; message: string }[] = []
const kept = new Map<string, string[]>() // host -> the releases left there
for (const { target, ssh, releases } of servers) {
  const outcome = await install(target, ssh, releases)
  outcomes.push({ host: target.host, ...outcome.result })
  kept.set(target.host, outcome.left)
  await ssh.close()
}

// Record the build where deploy_nomad finds it (the cluster: any machine, CI or cron, deploys it)
step(`Record ${name}-${sum.slice(0, 12)} in ${recordPath(JOB)}`)
const recorded = await updateRecord(nomad, JOB, (r) => {
  const before = listItem<Binary>(r, 'binaries')
  const hostsOf = (sha: string) => {
    const earlier = before.find((b) => b.sha256 === sha)?.hosts ?? []
    // This run's hosts say what they hold now; the others keep what was recorded.
    return [...earlier.filter((h) => !kept.has(h)), ...[...kept].filter(([, left]) => left.includes(sha)).map(([h]) => h)]
  }
  const mine: Binary = { sha256: sum, ...(commit ? { commit } : {}), uploaded: new Date().toISOString(), by: whoAmI(), hosts: hostsOf(sum) }
  const others = before.filter((b) => b.sha256 !== sum).map((b) => ({ ...b, hosts: hostsOf(b.sha256) })).filter((b) => b.hosts.length)
  // The same build again, already the newest everywhere it is: the record already says it all.
  const same = (a: Binary[], b: Binary[]) => JSON.stringify(a.map((x) => [x.sha256, [...x.hosts].sort()])) === JSON.stringify(b.map((x) => [x.sha256, [...x.hosts].sort()]))
  if (before[0]?.sha256 === sum && same(before, [{ ...before[0], hosts: mine.hosts }, ...others])) return undefined
  return { ...r.items, binaries: JSON.stringify([mine, ...others]) }
})

// Report
const updated = outcomes.filter((o) => o.outcome === 'done').length
report({ outcome: updated ? 'done' : 'unchanged', message: outcomes.map((o) => o.message).join('; '), hosts: outcomes, next: ['npx tsx deploy/deploy_nomad.mts'] })
const running = protectedShas[0]
console.log(`${outcomes.map((o) => o.message).join('\n')}
  release ${name}-${sum.slice(0, 12)}${commit ? `  (commit ${commit})` : ''}
  sha256  ${sum}
  size    ${bytes.length} bytes
  path    ${live}  (${goos}/${goarch})
  kept    ${[...kept].map(([h, left]) => `${h}: ${left.length} release${left.length === 1 ? '' : 's'}`).join(', ')} (DEPLOY_KEEP_RELEASES=${keep}, and what the job runs)
${running === sum ? `${JOB} already runs this binary.` : `${JOB} runs ${running ? `${name}-${running.slice(0, 12)}` : 'no release yet'}: this build is staged${recorded ? ` in ${recordPath(JOB)}` : ''}.`}

Useful commands:
  npx tsx deploy/deploy_nomad.mts          (roll it out through Nomad: health gate, auto_revert)
  npx tsx deploy/revert_agent.mts --list   (the releases it can return to)
  nomad var get -item binaries ${recordPath(JOB)}
${servers.map(({ target }) => `  ${target.login} ls -lt ${shq(dir)}`).join('\n')}`)

/**
 * Upload to one host under its directory's lock (one run at a time installs there) unless the release
 * is there already, verify the sha256 on the server, rename it to its release name; then keep the
 * newest releases. Returns the outcome and the releases left on the host.
 */
async function install(target: SshTarget, ssh: Ssh, releases: string[]): Promise<{ result: { outcome: 'done' | 'unchanged'; message: string }; left: string[] }> {
  // Already there and the newest: nothing to send, mark or remove (a second run changes nothing at all).
  if (releases[0] === sum)
    return { result: { outcome: 'unchanged', message: `${live} on ${target.destination} is unchanged (already there, the newest release, sha256 checked): nothing sent` }, left: releases }
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
  let result: { outcome: 'done' | 'unchanged'; message: string }
  if (releases.includes(sum)) {
    step(`${live} is already on ${target.host}: mark it as the newest release`)
    const touched = await ssh.run(TOUCH, [dir, name, sum])
    if (!touched.ok) fail(`touching ${live} on ${target.destination}: ${ssh.why(touched)}`)
    result = { outcome: 'unchanged', message: `${live} on ${target.destination} is unchanged (already there, sha256 checked): nothing sent` }
  } else {
    const suffix = randomBytes(6).toString('hex')
    step(`Upload ${bytes.length} bytes to ${target.host}:${dir}/.${name}.upload.${suffix}, verify its sha256 there, rename it to ${name}-${sum.slice(0, 12)}…`)
    const sent = await ssh.run(INSTALL, [dir, name, suffix, sum], { input: bytes, timeoutSeconds: uploadSeconds })
    if (sent.exitCode === 3) fail(`${sent.stderr.trim()}: the upload was removed and no release was touched`)
    if (!sent.ok) fail(`uploading to ${live} on ${target.destination}: ${ssh.why(sent)}`)
    result = sent.stdout.trim() === 'unchanged'
      ? { outcome: 'unchanged', message: `${live} on ${target.destination} is unchanged: another run installed the same binary meanwhile (sha256 checked on the server)` }
      : { outcome: 'done', message: `${live} on ${target.destination} uploaded (${bytes.length} bytes sent)` }
  }
  step(`Keep the newest ${keep} releases in ${dir} on ${target.host} (and ${protectedShas.length ? 'what the job runs' : 'the new one'})`)
  const pruned = await ssh.run(PRUNE, [dir, name, String(keep), sum, ...protectedShas])
  if (!pruned.ok) fail(`removing old releases from ${dir} on ${target.destination}: ${ssh.why(pruned)}`)
  const removed = pruned.stdout.split('\n').map((l) => l.match(/^removed ([0-9a-f]{64})$/)?.[1]).filter((x): x is string => Boolean(x))
  if (removed.length) console.error(`    removed ${removed.map((x) => `${name}-${x.slice(0, 12)}`).join(', ')} (older than the last ${keep})`)
  await ssh.run(UNLOCK, [dir, name, me])
  locked = false
  return { result, left: [sum, ...releases.filter((x) => x !== sum && !removed.includes(x))] }
}

/** The source's git commit (12 digits, "-dirty" when changed), or undefined when it is not a git work tree. */
async function sourceCommit(dir: string): Promise<string | undefined> {
  if (!which.sync('git', { nothrow: true })) return undefined
  const git = $({ cwd: dir, nothrow: true, timeout: '20s' })
  const head = await git`git rev-parse --short=12 HEAD`
  if (!head.ok) return undefined
  const dirty = await git`git status --porcelain --untracked-files=no`
  return `${head.stdout.trim()}${dirty.ok && dirty.stdout.trim() ? '-dirty' : ''}`
}

/** AGENT_GOOS / AGENT_GOARCH: a Go platform word. */
function platformPart(check: Checks, name: string, fallback: string) {
  const v = check.get(name, fallback)
  if (v && !/^[a-z0-9]+$/.test(v)) check.problem(`${name}=${JSON.stringify(v)} must be a Go platform name such as ${fallback} (go tool dist list)`)
  return v
}
