#!/usr/bin/env -S npx tsx
// deploy_storefront: build the CEDRA storefront image, push it, and roll it out on Nomad by canary.
//
// Usage: npx tsx deploy/deploy_storefront.mts [--dry-run] [--plan] [--allow-dirty] [--replace-canary] [--timeout 10m] [--env-file PATH]
//
// The image tag is the git commit of STOREFRONT_SOURCE_DIR (12 hex digits, never "latest"); a tree
// with uncommitted changes is refused unless --allow-dirty (tag <commit>-dirty-<hash of the changes>).
// First `nomad job plan` of jobs/cedra-storefront.nomad with that tag, which proves the cluster answers
// and accepts the token BEFORE the long build; when the plan shows no change (that commit already
// runs) nothing is built, pushed or run. The cluster's version decides how the job reaches Vault
// (workload identity on 1.10+, legacy policies on 1.6): a mismatch is refused before the build.
// Then `docker build --platform linux/amd64 --load` (the app's
// Dockerfile builds with Bun; its progress streams to the terminal), `docker push`,
// `nomad job run -check-index N -detach`, and the deployment is followed to one of three outcomes:
// canary healthy and waiting for promotion (prints the promote and revert commands), deployment
// successful, or deployment failed / rolled back (Nomad's reason).
// Releases: from the plan to the end the run holds the job's lock (Nomad 1.7+: a concurrent deploy or
// revert of cedra-storefront is refused, exit 2, naming who holds it; DEPLOY_LOCK_WAIT waits instead).
// A deployment followed to successful is tagged storefront-<image tag> (Nomad 1.9+; the same image
// deployed again moves its tag to the new version; the kit's tags beyond the last DEPLOY_KEEP_RELEASES
// are unset); a canary waiting for promotion is tagged by promote_storefront.mts once it succeeds.
// Every outcome is written to the release record, the Nomad Variable nomad/jobs/cedra-storefront/releases
// (nomad var get -item history nomad/jobs/cedra-storefront/releases).
// Registry credentials: run `docker login REGISTRY` once beforehand; docker keeps them in its own
// credential store and this script never handles a registry password.
//
// Needs: nomad CLI 1.6+ (the servers' version; 2.0 is current); docker with buildx and a running engine (Docker Desktop on a Mac); git.
// Reads: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
//        NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION, DEPLOY_POLL_SECONDS,
//        STOREFRONT_SOURCE_DIR (default ../cedra-storefront, relative to the repository root: a git
//          checkout of the app with its Dockerfile),
//        STOREFRONT_IMAGE (required: the image repository without a tag, e.g. registry.example.com/cedra/storefront),
//        STOREFRONT_VAULT_PATH (default secret/cedra/prod: where put_storefront_secrets.mts wrote the
//          secrets; the job reads them there), STOREFRONT_VAULT_MOUNT (default: its first segment; name
//          a nested KV v2 mount such as team/kv),
//        DEPLOY_VAULT_AUTH (optional: identity or token; unset: identity on Nomad 1.10+, token on 1.6,
//          token on 1.7-1.9 unless set), STOREFRONT_VAULT_ROLE (default cedra-storefront: the Vault role
//          of the workload identity), DEPLOY_VAULT_SUBMIT_TOKEN and DEPLOY_CONSUL_SUBMIT_TOKEN (optional
//          secrets, Nomad 1.6-1.9 only: the submitter tokens a cluster without allow_unauthenticated demands),
//        STOREFRONT_COUNT (optional: number of instances, at least 2; unset: the job's default, 2),
//        STOREFRONT_AUTO_PROMOTE (optional: true = Nomad promotes a healthy canary by itself; unset: the
//          job's default, false = wait for promote_storefront.mts),
//        DEPLOY_KEEP_RELEASES (default 5: the kit's tags and record entries kept per job),
//        DEPLOY_LOCK_WAIT (default 0: seconds to wait for another run of the job; 0 = refused at once),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each nomad command may take).
// Options:
//   --allow-dirty     build a tree with uncommitted changes (tag <commit>-dirty-<hash>), with a warning
//   --replace-canary  deploy even though a canary waits for promotion (it is replaced; refused without)
//   --timeout D       how long to follow the deployment (seconds, or 90s / 10m; default 10m)
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --plan            ask the cluster what a deploy would do (the real nomad job plan); build and change nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 canary waiting for promotion, deployed, or already up to date; 1 a step failed (build, push,
//       run, a deployment failed or rolled back, --timeout reached); 2 refused before changing anything
//       (another run holds the job's lock included).
import { createHash } from 'node:crypto'
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs'
import path from 'node:path'
import { $, which, type ProcessOutput, type ProcessPromise } from 'zx'
import { type Checks, childEnv, exit, EXIT, fail, refuse, report, root, shq, start, step } from './lib/env.mts'
import { followDeployment, planJob, reportOutcome, reportPlan, runJob } from './lib/deployment.mts'
import { chooseFlow, vaultSettings } from './lib/identity.mts'
import { atLeast, nomadConnection, nomadError, nomadVersions, timeoutSeconds, type Nomad } from './lib/nomad.mts'
import { lockJob } from './lib/lock.mts'
import { concludeRelease, keepReleases, lockWait, recordPath, whoAmI } from './lib/release.mts'

const JOB = 'cedra-storefront'
const FILE = path.join(root, 'jobs/cedra-storefront.nomad')
const PLATFORM = 'linux/amd64'

// Check
const { check, dryRun, planOnly, flags } = start(import.meta.url, {
  options: { 'allow-dirty': { type: 'boolean' }, 'replace-canary': { type: 'boolean' }, timeout: { type: 'string' } }, plan: true,
})
const nomad = nomadConnection(check)
// A plan builds nothing: docker is needed by a real run only.
if (!planOnly) check.tool('docker', 'install Docker with buildx: https://docs.docker.com/get-docker/ (Docker Desktop on a Mac)')
check.tool('git', 'install git')
const source = check.localPath('STOREFRONT_SOURCE_DIR', '../cedra-storefront') ?? '' // '' when set but empty (refused)
const image = check.need('STOREFRONT_IMAGE')
const secrets = check.kvPath('STOREFRONT_VAULT_PATH', 'secret/cedra/prod', check.optional('STOREFRONT_VAULT_MOUNT'))
const badImage = image && imageProblem(image)
if (badImage) check.problem(`STOREFRONT_IMAGE=${JSON.stringify(image)} ${badImage}`)
const count = check.optional('STOREFRONT_COUNT')
if (count !== undefined && !(/^\d+$/.test(count) && Number(count) >= 2))
  check.problem(`STOREFRONT_COUNT=${JSON.stringify(count)} must be a whole number of at least 2 (a canary must never leave the site on one instance)`)
const autoPromote = check.optional('STOREFRONT_AUTO_PROMOTE')
if (autoPromote !== undefined && !['true', 'false'].includes(autoPromote))
  check.problem(`STOREFRONT_AUTO_PROMOTE=${JSON.stringify(autoPromote)} must be true or false`)
const vaultAuth = vaultSettings(check)
const timeout = timeoutSeconds(flags.timeout, check)
const keep = keepReleases(check)
const wait = lockWait(check)
const tag = await sourceTag(check, source, Boolean(flags['allow-dirty']))
check.done()

const ref = `${image}:${tag ?? '$TAG'}`
const releaseTag = `storefront-${tag ?? '$TAG'}`
const releaseDescription = `commit ${tag ?? '$TAG'}, image ${ref}, by ${whoAmI()}`
report({ job: JOB, image: ref, ...(tag ? { commit: tag.split('-')[0] } : {}) })
const vars: Record<string, string> = { image, image_tag: tag ?? '$TAG', vault_secret: secrets.api, ...(count ? { count } : {}), ...(autoPromote ? { auto_promote: autoPromote } : {}) }
const dryVault = { vault_auth: vaultAuth.auth ?? 'identity', ...(vaultAuth.auth !== 'token' ? { vault_role: vaultAuth.role } : {}) }
// Docker needs none of the kit's secrets (its registry login lives in docker's own credential store).
const dockerEnv = childEnv()

if (dryRun) {
  const q = (s: string) => (s.includes('$') ? `"${s}"` : shq(s))
  const v = Object.entries({ ...vars, ...dryVault }).map(([k, val]) => ` ${q(`-var=${k}=${val}`)}`).join('')
  const rel = path.relative(process.cwd(), FILE)
  const f = shq(rel && !rel.startsWith('..') ? rel : FILE)
  console.log([
    nomad.exportLine,
    ...(tag ? [] : [`TAG=$(git -C ${shq(source)} rev-parse --short=12 HEAD)`]),
    '# vault_auth: identity on Nomad 1.10+ (workload identity); token on 1.6 (legacy policies); on 1.7-1.9 DEPLOY_VAULT_AUTH, default token',
    `nomad job plan${v} ${f}`,
    `docker build --platform ${PLATFORM} --load -t ${q(ref)} ${shq(source)}`,
    `docker push ${q(ref)}`,
    `nomad job run -check-index "$JOB_MODIFY_INDEX_FROM_PLAN" -detach${v} ${f}`,
    `# then follow the deployment: nomad job deployments -latest ${JOB}`,
    `# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/${JOB}/lock`,
    `# once it is successful (Nomad 1.9+; a canary: once promote_storefront.mts has promoted it), VERSION being the version the run registered:`,
    `nomad job tag apply -name ${q(releaseTag)} -description ${q(releaseDescription)} -version "$VERSION" ${JOB}`,
    `# every outcome is written to the release record (nomad var put -check-index); read it with:`,
    `nomad var get -item history ${recordPath(JOB)}`,
  ].join('\n'))
  exit(EXIT.done)
}

// Plan: before the long build, prove the cluster answers, accepts the token and the job's Vault and
// Consul flow, and needs this version.
step(`Ask Nomad at ${nomad.addr} which version it runs`)
const versions = await nomadVersions(nomad)
// A Vault flow the cluster cannot take is refused first: a refusal takes no lock.
const { flow, vars: flowVars } = chooseFlow(nomad, versions, vaultAuth)
Object.assign(vars, flowVars)
// From here to the end of the run no other deploy or revert of the job can start (a --plan changes nothing: no lock).
if (!planOnly) await lockJob(nomad, JOB, 'deploy_storefront.mts', wait)
// A canary waiting for promotion: a new deploy would replace it, and the plan would diff against the
// canary's version, not against what the other instances serve. Refused unless asked for.
const waiting = await waitingCanary(nomad)
if (waiting && !flags['replace-canary'])
  refuse([`a canary of ${JOB} version ${waiting.version} waits for promotion (deployment ${waiting.id}): promote it (npx tsx deploy/promote_storefront.mts) or roll it back (npx tsx deploy/revert_storefront.mts) first, or pass --replace-canary to deploy over it (the diff below would then be against the canary's version)`])
if (waiting) console.error(`warning: replacing the canary of version ${waiting.version} (deployment ${waiting.id}), as --replace-canary asks; the diff is against that canary's version`)
step(`Plan ${JOB} with ${ref}`)
const plan = await planJob(nomad, JOB, FILE, vars, flow)
if (planOnly) reportPlan(plan, ` with ${ref}, after building and pushing that image${plan.created ? '' : ' (its canary first)'}`)
if (plan.unchanged) {
  const line = `${JOB} already runs ${ref} (the plan shows no change): nothing was built, pushed or run`
  report({ outcome: 'unchanged', message: line })
  console.log(line)
  usefulCommands()
  exit(EXIT.done)
}
step('Check docker: its engine answers, buildx is there')
const engine = await $({ env: dockerEnv, nothrow: true, timeout: '30s' })`docker version --format ${'{{.Server.Version}}'}`
const buildx = await $({ env: dockerEnv, nothrow: true, timeout: '30s' })`docker buildx version`
const dockerProblems = []
if (!engine.ok) dockerProblems.push(`docker version failed (${lastLine(engine)}): is the engine running? Start Docker Desktop, or check DOCKER_HOST / docker context`)
if (!buildx.ok) dockerProblems.push(`docker buildx version failed (${lastLine(buildx)}): install the buildx plugin (Docker Desktop has it; Debian: docker-buildx-plugin)`)
if (dockerProblems.length) refuse(dockerProblems)
if (!atLeast(versions.server, '1.10') && !vaultAuth.consulToken)
  console.error(`note: Nomad ${versions.server} checks a submitter Consul token only at job run, after the build and push (consul.allow_unauthenticated = false;
  nothing reveals it earlier): if the cluster demands one, stop now and set DEPLOY_CONSUL_SUBMIT_TOKEN`)

// --- point of no return ---
report({ acted: true })

// Build and push
step(`Build ${ref} for ${PLATFORM} from ${source}`)
// --load: with a non-default buildx builder (docker-container driver, common in CI) the image would
// otherwise stay in the build cache and the push would find nothing (docs.docker.com/build/drivers).
const build = await streamed($({ env: dockerEnv, nothrow: true, timeout: '60m' })`docker build --platform ${PLATFORM} --load -t ${ref} ${source}`)
if (!build.ok) fail(`docker build of ${ref} ${how(build)}: ${lastLine(build, /^ERROR/)} (its output is above)`)
step(`Push ${ref}`)
const push = await streamed($({ env: dockerEnv, nothrow: true, timeout: '30m' })`docker push ${ref}`)
if (!push.ok) {
  const login = /denied|unauthorized|authentication required|no basic auth/i.test(push.stderr) ? `; log in first: docker login ${registryOf(image)}` : ''
  fail(`docker push ${ref} ${how(push)}: ${lastLine(push)}${login}`)
}

// Run and follow
step(`Run ${JOB} (check-index ${plan.index})`)
const version = await runJob(nomad, plan)
step(`Follow the deployment of ${JOB} version ${version}`)
const result = await followDeployment(nomad, JOB, version, timeout)

// Report
reportOutcome(result)
// Good (successful, also an auto-promoted canary followed to its end): tagged. A canary waiting for
// promotion is recorded, not tagged yet: promote_storefront.mts tags it once it is successful.
step(`Record the release${result.outcome === 'successful' ? ` and tag it ${releaseTag}` : ''}`)
const release = await concludeRelease(nomad, {
  job: JOB, version, action: 'deploy', outcome: ({ successful: 'deployed', canary: 'canary-waiting', failed: 'failed', timeout: 'timeout', none: 'unchanged' } as const)[result.outcome],
  commit: tag!.split('-')[0], image: ref, ...(result.deployment ? { deployment: result.deployment } : {}),
}, { name: releaseTag, description: releaseDescription }, keep)
console.log(`Release: ${release.tag ? `${release.tag} = ` : ''}${JOB} version ${version} (${release.outcome}${result.outcome === 'canary' ? `: tagged ${releaseTag} once promoted` : ''}); the record: nomad var get -item history ${recordPath(JOB)}`)
if (result.outcome === 'canary') {
  const previous = await previousStable(nomad, version)
  const choices = [['promote it to every instance:', 'npx tsx deploy/promote_storefront.mts', `nomad job promote ${JOB}`]]
  if (previous !== undefined)
    choices.push([`or roll back to version ${previous}:`, `npx tsx deploy/revert_storefront.mts ${previous}`, `nomad job revert ${JOB} ${previous}`])
  console.log(`\nCheck the canary (nomad alloc logs -f -job ${JOB}; its /api/health), then either`)
  for (const [what, script] of choices) console.log(`  ${what.padEnd(31)}${script}`)
  console.log('The same with the nomad CLI:')
  for (const [, , raw] of choices) console.log(`  ${raw}`)
  report({ next: choices.map(([, script]) => script) })
}
if (result.outcome === 'failed' || result.outcome === 'timeout') process.exitCode = EXIT.failed
usefulCommands(result.deployment)

// ---------------------------------------------------------------------------------------------

/**
 * The image tag: the commit of the source tree (12 hex digits), or with --allow-dirty
 * <commit>-dirty-<12 hex digits of a hash of the changes>, the same for the same changes.
 */
async function sourceTag(check: Checks, dir: string, allowDirty: boolean): Promise<string | undefined> {
  if (!dir) return
  const name = `STOREFRONT_SOURCE_DIR (${dir})`
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    check.missing(`${name} does not exist: clone the storefront there, or set STOREFRONT_SOURCE_DIR`)
    return
  }
  if (!existsSync(path.join(dir, 'Dockerfile'))) check.missing(`${name} has no Dockerfile: the image is built from it`)
  if (!which.sync('git', { nothrow: true })) return // reported with the other missing tools
  const git = $({ cwd: dir, nothrow: true, timeout: '30s' })
  const head = await git`git rev-parse --short=12 HEAD`
  if (!head.ok) {
    check.missing(/not a git repository/.test(head.stderr)
      ? `${name} is not a git work tree: the image tag is its commit`
      : /dubious ownership/.test(head.stderr)
        ? `${name} belongs to another user and git refuses to read it ("dubious ownership"): if you trust it, git config --global --add safe.directory ${dir}`
        : `${name}: git rev-parse HEAD failed (${lastLine(head)}): the image tag is a commit, make one first`)
    return
  }
  const commit = head.stdout.trim()
  const status = await git`git status --porcelain --untracked-files=all -- .`
  if (!status.ok) {
    check.missing(`${name}: git status failed (${lastLine(status)})`)
    return
  }
  const changed = status.stdout.split('\n').filter(Boolean)
  if (!changed.length) return commit
  const files = changed.map((l) => l.slice(3))
  const shown = `${files.slice(0, 3).join(', ')}${files.length > 3 ? ', …' : ''}`
  if (!allowDirty) {
    check.missing(`${name} has uncommitted changes (${files.length} file${files.length > 1 ? 's' : ''}: ${shown}): commit them, or pass --allow-dirty to deploy them as ${commit}-dirty-<hash>`)
    return commit
  }
  // What would be built: the diff against HEAD plus the untracked files' contents.
  const diff = await git`git diff HEAD --binary -- .`
  const untracked = await git`git ls-files --others --exclude-standard -z -- .`
  if (!diff.ok || !untracked.ok) {
    check.missing(`${name}: git diff failed (${lastLine(diff.ok ? untracked : diff)})`)
    return
  }
  const hash = createHash('sha256').update(diff.stdout)
  for (const f of untracked.stdout.split('\0').filter(Boolean).sort()) {
    const file = path.join(dir, f)
    // A link by its target (what docker copies), a nested repository by its commit and changes, a file by its bytes.
    const st = lstatSync(file)
    const what = st.isSymbolicLink() ? `-> ${readlinkSync(file)}`
      : st.isDirectory() ? `repo ${(await git`git -C ${file} rev-parse HEAD`).stdout.trim()}\n${(await git`git -C ${file} status --porcelain --untracked-files=all`).stdout}`
        : readFileSync(file)
    hash.update(`\0${f}\0`).update(what)
  }
  const dirty = `${commit}-dirty-${hash.digest('hex').slice(0, 12)}`
  check.warn(`${name} has uncommitted changes (${shown}): deploying them as ${dirty} (--allow-dirty); commit them for an image anyone can rebuild`)
  return dirty
}

/** Why a value cannot be an image repository (docker's reference grammar, without tag or digest). */
function imageProblem(ref: string): string | undefined {
  const example = '(for example registry.example.com/cedra/storefront)'
  if (ref.includes('@')) return `must be an image repository without a digest ${example}`
  const parts = ref.split('/')
  if (parts.at(-1)!.includes(':')) return `must be an image repository without a tag: the script tags it with the commit (${ref.slice(0, ref.lastIndexOf(':'))})`
  const registry = parts.length > 1 && /[.:]|^localhost$/.test(parts[0]) ? parts.shift()! : undefined
  if (registry && !/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:\d+)?$/.test(registry)) return `has an invalid registry host ${JSON.stringify(registry)} ${example}`
  if (!parts.every((p) => /^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$/.test(p)))
    return `must be an image repository: lowercase letters, digits and . _ - between slashes ${example}`
}

/** The registry `docker login` needs for an image repository (Docker Hub when it names none). */
function registryOf(repository: string): string {
  const first = repository.split('/')[0]
  return repository.includes('/') && /[.:]|^localhost$/.test(first) ? first : '(Docker Hub)'
}

/** Run a command with its output streaming to our stderr (progress), and return its result. */
function streamed(p: ProcessPromise): Promise<ProcessOutput> {
  p.stdout.on('data', (d) => process.stderr.write(d))
  p.stderr.on('data', (d) => process.stderr.write(d))
  return p
}

function how(out: ProcessOutput): string {
  return out.signal ? `was stopped after its time limit (${out.signal})` : `failed (exit ${out.exitCode})`
}

/** The line of a command's output that says what went wrong. */
function lastLine(out: ProcessOutput, prefer?: RegExp): string {
  const lines = `${out.stderr}\n${out.stdout}`.split('\n').map((l) => l.trim()).filter(Boolean)
  const errLines = out.stderr.split('\n').map((l) => l.trim()).filter(Boolean)
  return (prefer && lines.filter((l) => prefer.test(l)).at(-1)) || errLines.at(-1) || lines.at(-1) || 'no message'
}

/** The latest deployment's canary, when it waits for promotion (none for a job not deployed yet). */
async function waitingCanary(nomad: Nomad): Promise<{ version: number; id: string } | undefined> {
  const out = await nomad.$`nomad job deployments -latest -json ${JOB}`
  if (!out.ok) {
    if (/No job\(s\) with prefix or ID/.test(out.stderr)) return undefined
    const { message, code } = nomadError(nomad, out)
    if (code === EXIT.refused) refuse([`nomad job deployments ${JOB}: ${message}`])
    fail(`nomad job deployments ${JOB}: ${message}`)
  }
  const d = out.stdout.trim() && out.stdout.trim() !== 'null' ? JSON.parse(out.stdout) : undefined
  const groups = Object.values(d?.TaskGroups ?? {}) as { DesiredCanaries: number; Promoted: boolean }[]
  if (d?.Status === 'running' && groups.some((g) => g.DesiredCanaries > 0 && !g.Promoted)) return { version: d.JobVersion, id: d.ID.slice(0, 8) }
}

/** The latest stable version before `version`: what runs beside the canary, the one to revert to. */
async function previousStable(nomad: Nomad, version: number): Promise<number | undefined> {
  if (version === 0) return undefined
  const out = await nomad.$`nomad job history -json ${JOB}`
  if (!out.ok) {
    console.error(`warning: nomad job history failed (${lastLine(out)}); assuming version ${version - 1} ran before`)
    return version - 1
  }
  const versions = JSON.parse(out.stdout) as { Version: number; Stable: boolean }[]
  return versions.filter((v) => v.Stable && v.Version < version).sort((a, b) => b.Version - a.Version)[0]?.Version ?? version - 1
}

function usefulCommands(deployment?: string) {
  console.log(`
Useful commands:
  nomad job status ${JOB}
  nomad job deployments ${JOB}${deployment ? `\n  nomad deployment status ${deployment.slice(0, 8)}` : ''}
  nomad alloc logs -f -job ${JOB}          (one instance; nomad alloc logs -f <alloc_id> for another)
  nomad job history ${JOB}
  dig @127.0.0.1 -p 8600 ${JOB}.service.consul SRV   (the instances, then: curl http://ADDRESS:PORT/api/health)`)
}
