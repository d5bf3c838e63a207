// Releases: what runs, what ran before, and the way back to it, kept in the cluster itself.
// - the job's versions as Nomad keeps them (`nomad job history -json`), with their meta and tags;
// - version tags (Nomad 1.9+): every good release is tagged `<kind>-<id>` (storefront-<commit>,
//   agent-<sha256 prefix>, arangodb-<kit commit>, valkey-<kit commit>); a tagged version is exempt
//   from the 6 versions Nomad keeps (nomad/state/state_store.go@v2.0.5 upsertJobVersion), so the kit
//   keeps only the last DEPLOY_KEEP_RELEASES of its own tags and unsets the older ones;
// - the release record: a Nomad Variable nomad/jobs/<job>/releases, item `history` (JSON, newest
//   first, the last DEPLOY_KEEP_RELEASES entries): commit, sha256 or image, job version, deployment,
//   outcome, when, who. Never a secret: only names, digests, versions and times;
// The lock that keeps two runs of one job apart is in lock.mts.
import os from 'node:os'
import path from 'node:path'
import { $ } from 'zx'
import { EXIT, fail, onExit, report, root, shq, step, type Checks } from './env.mts'
import type { Outcome } from './deployment.mts'
import { atLeast, nomadError, nomadFailed, nomadVersions, type Nomad } from './nomad.mts'

/** One job version as `nomad job history -json` prints it (api.Job: api/jobs.go@v2.0.5; no VersionTag before 1.9). */
export type JobVersion = {
  Version: number; Stable: boolean; SubmitTime: number; JobModifyIndex: number
  Meta?: Record<string, string> | null
  VersionTag?: { Name: string; Description: string; TaggedTime: number } | null
  TaskGroups?: { Tasks?: { Config?: { image?: string; command?: string } }[] }[]
}

/** One entry of the release record. */
export type Release = {
  job: string; version: number; action: 'deploy' | 'revert'; outcome: string; when: string; by: string
  commit?: string; image?: string; sha256?: string; path?: string; tag?: string; deployment?: string; kit?: string
}

export const recordPath = (job: string) => `nomad/jobs/${job}/releases`

/** DEPLOY_KEEP_RELEASES: how many releases of each job stay within reach (tags, records, agent binaries). */
export function keepReleases(check: Checks): number {
  const v = check.get('DEPLOY_KEEP_RELEASES', '5')!
  if (!/^\d+$/.test(v) || Number(v) < 2 || Number(v) > 50) check.problem(`DEPLOY_KEEP_RELEASES=${JSON.stringify(v)} must be a whole number from 2 to 50 (default 5)`)
  return Number(v) || 5
}

/** DEPLOY_LOCK_WAIT: seconds a run waits for another run of the same job to finish (default 0: refused at once). */
export function lockWait(check: Checks): number {
  const v = check.get('DEPLOY_LOCK_WAIT', '0')!
  if (!/^\d+$/.test(v) || Number(v) > 3600) check.problem(`DEPLOY_LOCK_WAIT=${JSON.stringify(v)} must be a whole number of seconds, at most 3600 (default 0: refused at once)`)
  return Number(v) || 0
}

/** Who acts: the CI's own variables when present, else the OS user and host. */
export function whoAmI(): string {
  const e = process.env
  if (e.GITHUB_ACTIONS === 'true') return `${e.GITHUB_ACTOR ?? '?'} via GitHub Actions ${e.GITHUB_SERVER_URL ?? 'https://github.com'}/${e.GITHUB_REPOSITORY ?? '?'}/actions/runs/${e.GITHUB_RUN_ID ?? '?'}`
  if (e.GITLAB_CI === 'true') return `${e.GITLAB_USER_LOGIN ?? '?'} via GitLab CI ${e.CI_PIPELINE_URL ?? e.CI_JOB_URL ?? '?'}`
  if (e.CI === 'true') return `CI ${e.CI_JOB_URL ?? e.BUILD_URL ?? ''}`.trim()
  return `${os.userInfo().username}@${os.hostname()}`
}

/** The kit's own commit (this repository's HEAD, 12 digits, "-dirty" when changed), or "unknown". */
export async function kitCommit(root: string): Promise<string> {
  const git = $({ cwd: root, nothrow: true, timeout: '20s' })
  const head = await git`git rev-parse --short=12 HEAD`
  if (!head.ok) return 'unknown'
  const dirty = await git`git status --porcelain --untracked-files=no`
  return `${head.stdout.trim()}${dirty.ok && dirty.stdout.trim() ? '-dirty' : ''}`
}

// ---------------------------------------------------------------------------------------------
// The job's versions and tags

/** The job's versions, newest first; [] when the job is not registered. */
export async function jobVersions(nomad: Nomad, job: string): Promise<JobVersion[]> {
  const out = await nomad.$`nomad job history -json ${job}`
  if (!out.ok) {
    // command/meta.go@v1.6.10 and @v2.0.5: `No job(s) with prefix or ID "x" found`.
    if (/No job\(s\) with prefix or ID/.test(out.stderr)) return []
    nomadFailed(nomad, 'nomad job history', out, false)
  }
  try {
    return (JSON.parse(out.stdout) as JobVersion[]).sort((a, b) => b.Version - a.Version)
  } catch {
    fail(`nomad job history -json ${job} printed no JSON`)
  }
}

/** Version tags exist from Nomad 1.9.0 (command/job_tag_apply.go appears at v1.9.0). */
export const hasTags = (nomad: Nomad) => atLeast(nomad.versions?.server ?? '0', '1.9')
let toldNoTags = false
function sayNoTags(nomad: Nomad) {
  if (toldNoTags) return
  toldNoTags = true
  console.error(`    Nomad ${nomad.versions?.server} has no version tags (1.9+): the release is named in the record only, and only the ${6} newest versions stay revertible`)
}

/**
 * Tag a good release (Nomad 1.9+): `nomad job tag apply -name <tag> -version N`. A tag names one
 * version (nomad/state/state_store.go@v2.0.5 updateJobVersionTagImpl refuses a name already on another
 * version): the same release deployed again moves its tag to the newer version. Then the kit's own
 * tags of this job (`<kind>-`) beyond the newest `keep` are unset, so that Nomad may forget those
 * versions again. A failure here never undoes the deploy: the run reports, then ends with exit 1.
 */
export async function tagRelease(nomad: Nomad, job: string, version: number, tag: string, description: string, keep: number): Promise<string | undefined> {
  await nomadVersions(nomad)
  if (!hasTags(nomad)) return void sayNoTags(nomad)
  const kind = tag.split('-')[0]
  // After the deploy: a failed read is a warning, never the run's failure (the deploy stands).
  const listed = await nomad.$`nomad job history -json ${job}`
  let versions: JobVersion[]
  try {
    if (!listed.ok) throw new Error(nomadError(nomad, listed).message)
    versions = (JSON.parse(listed.stdout) as JobVersion[]).sort((a, b) => b.Version - a.Version)
  } catch (e) {
    return bookkeepingFailed(`nomad job history ${job} (before tagging version ${version} as ${tag}): ${(e as Error).message}`)
  }
  const holder = versions.find((v) => v.VersionTag?.Name === tag)
  if (holder && holder.Version !== version) {
    const unset = await nomad.$`nomad job tag unset -name ${tag} ${job}`
    if (!unset.ok) return bookkeepingFailed(`nomad job tag unset -name ${tag} (to move it from version ${holder.Version} to ${version}): ${nomadError(nomad, unset).message}`)
  }
  const applied = await nomad.$`nomad job tag apply -name ${tag} -description ${description} -version ${String(version)} ${job}`
  if (!applied.ok) return bookkeepingFailed(`nomad job tag apply -name ${tag} -version ${version}: ${nomadError(nomad, applied).message}`)
  console.error(`    ${applied.stdout.trim()}`)
  const ours = versions.filter((v) => v.VersionTag?.Name.startsWith(`${kind}-`) && v.VersionTag.Name !== tag && v.Version !== version)
  for (const old of ours.slice(Math.max(0, keep - 1))) {
    const unset = await nomad.$`nomad job tag unset -name ${old.VersionTag!.Name} ${job}`
    if (!unset.ok) bookkeepingFailed(`nomad job tag unset -name ${old.VersionTag!.Name} (an old tag): ${nomadError(nomad, unset).message}`)
    else console.error(`    untagged version ${old.Version} (${old.VersionTag!.Name}): beyond the last ${keep} releases`)
  }
  report({ tag })
  return tag
}

// Bookkeeping after the deploy (a tag, the record) that failed: the deploy stands and the run goes to
// its report, then ends with exit 1 and ONE last line naming what failed (nothing is swallowed: a
// token without variables write would otherwise go unnoticed from cron).
const failures: string[] = []
export function bookkeepingFailed(text: string): undefined {
  console.error(`warning: ${text}`)
  if (!failures.length) onExit(() => {
    const line = `the deployment is done, but its release bookkeeping failed: ${failures.join('; ')}`
    report({ outcome: 'failed', message: line })
    console.error(`✗ ${line}`)
    if (!process.exitCode) process.exitCode = EXIT.failed
  })
  failures.push(text)
  return undefined
}

// ---------------------------------------------------------------------------------------------
// The release record (a Nomad Variable, check-and-set)

export type Record_ = { index: number; items: Record<string, string> }

/** Read nomad/jobs/<job>/releases; an absent variable is an empty record at index 0. */
export async function readRecord(nomad: Nomad, job: string): Promise<Record_> {
  const out = await nomad.$`nomad var get -out json ${recordPath(job)}`
  if (!out.ok) {
    if (/Variable not found/.test(out.stderr)) return { index: 0, items: {} }
    nomadFailed(nomad, `nomad var get ${recordPath(job)}`, out, false)
  }
  try {
    const v = JSON.parse(out.stdout)
    return { index: Number(v.ModifyIndex), items: v.Items ?? {} }
  } catch {
    fail(`nomad var get -out json ${recordPath(job)} printed no variable JSON`)
  }
}

/** An item of the record that holds a JSON list (history, binaries); [] when absent or unreadable. */
export function listItem<T>(record: Record_, item: string): T[] {
  try {
    const v = JSON.parse(record.items[item] ?? '[]')
    return Array.isArray(v) ? v : []
  } catch {
    return []
  }
}

/**
 * Change the record with check-and-set: read, change, `nomad var put -check-index`; read again and
 * redo on a conflict (another run wrote meanwhile), three times at most; `change` returns undefined
 * when the record already says it (nothing is written). Returns false (with a
 * warning) when it could not be written: the deploy itself stands.
 */
export async function updateRecord(nomad: Nomad, job: string, change: (r: Record_) => Record<string, string> | undefined): Promise<boolean> {
  for (let attempt = 0; attempt < 3; attempt++) {
    // After the deploy: a failed read is a warning, never the run's failure (the deploy stands).
    const read = await nomad.$`nomad var get -out json ${recordPath(job)}`
    let r: Record_ = { index: 0, items: {} }
    try {
      if (!read.ok && !/Variable not found/.test(read.stderr)) throw new Error(nomadError(nomad, read).message)
      if (read.ok) {
        const v = JSON.parse(read.stdout)
        r = { index: Number(v.ModifyIndex), items: v.Items ?? {} }
      }
    } catch (e) {
      bookkeepingFailed(`nomad var get ${recordPath(job)} (the release record, not written): ${(e as Error).message}`)
      return false
    }
    const items = change(r)
    if (!items) return true // it already says so: nothing to write
    const spec = JSON.stringify({ Path: recordPath(job), Items: items })
    const put = await nomad.$({ input: spec })`nomad var put -check-index ${r.index} -in=json -out=none -`
    if (put.ok) return true
    if (!/Check-and-Set conflict/i.test(put.stderr)) {
      bookkeepingFailed(`nomad var put ${recordPath(job)} (the release record, not written): ${nomadError(nomad, put).message} (the token needs variables write on nomad/jobs/*)`)
      return false
    }
  }
  bookkeepingFailed(`nomad var put ${recordPath(job)} (the release record, not written): three check-and-set conflicts in a row`)
  return false
}

/** Add a release to the front of the record's history, keeping the last `keep`. */
export async function recordRelease(nomad: Nomad, release: Release, keep: number): Promise<void> {
  report({ release })
  const ok = await updateRecord(nomad, release.job, (r) => ({
    ...r.items,
    history: JSON.stringify([release, ...listItem<Release>(r, 'history')].slice(0, keep)),
  }))
  if (ok) console.error(`    recorded in ${recordPath(release.job)} (nomad var get -item history ${recordPath(release.job)})`)
}

/** "2026-12-07 10:20Z" from Nomad's nanoseconds or an ISO date. */
export function when(t: number | string): string {
  const d = typeof t === 'number' ? new Date(t / 1e6) : new Date(t)
  return Number.isNaN(d.getTime()) ? '-' : d.toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$/, 'Z')
}

/** A table with aligned columns, on stdout. */
export function printTable(header: string[], rows: string[][]) {
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  for (const r of [header, ...rows]) console.log(r.map((c, i) => (c ?? '').padEnd(width[i])).join('  ').trimEnd())
}

/**
 * After a deploy or a revert was followed to its outcome: tag it when it is good (`outcome` deployed)
 * and write it to the record (every outcome: a failed release is remembered too, so that it is not
 * offered again as new). Prints where to read it. A failed tag or record write never stops the run: it reports, then exits 1 (the deploy itself stands).
 */
export async function concludeRelease(nomad: Nomad, r: Omit<Release, 'when' | 'by'>, tag: { name: string; description: string } | undefined, keep: number): Promise<Release> {
  const tagged = r.outcome === 'deployed' && tag ? await tagRelease(nomad, r.job, r.version, tag.name, tag.description, keep) : undefined
  const release: Release = { ...r, ...(tagged ? { tag: tagged } : {}), when: new Date().toISOString(), by: whoAmI() }
  await recordRelease(nomad, release, keep)
  return release
}

// ---------------------------------------------------------------------------------------------
// Images of a job version (added for the storefront scripts)

/** The images of a job version's tasks, in order ([] when it runs none, or history has no Config). */
export function imagesOf(v: JobVersion): string[] {
  return (v.TaskGroups ?? []).flatMap((g) => g.Tasks ?? []).map((t) => t.Config?.image).filter((i): i is string => Boolean(i))
}

/** An image reference's tag: after the last ':' of its last path segment (a registry's :port is not one). */
export function imageTag(image: string): string | undefined {
  const last = image.slice(image.lastIndexOf('/') + 1)
  return last.includes(':') ? last.slice(last.lastIndexOf(':') + 1).replace(/@.*$/, '') : undefined
}

// ---------------------------------------------------------------------------------------------
// The jobs of the kit's own (ArangoDB, Valkey): a release is this repository's commit

/** After deployPlanned: tag a good deployment `<kind>-<kit commit>` and record every outcome (nothing when unchanged). */
export async function concludeKitRelease(nomad: Nomad, job: string, kind: string, file: string, result: Outcome, keep: number): Promise<void> {
  if (result.outcome === 'none' || result.version === undefined) return
  const kit = await kitCommit(root)
  const name = `${kind}-${kit}`
  step(`Record the release${result.outcome === 'successful' ? ` and tag it ${name}` : ''}`)
  const release = await concludeRelease(nomad, {
    job, version: result.version, action: 'deploy', outcome: OUTCOMES[result.outcome], kit, ...(result.deployment ? { deployment: result.deployment } : {}),
  }, { name, description: kitDescription(kit, file) }, keep)
  console.log(`Release: ${release.tag ? `${release.tag} = ` : ''}${job} version ${result.version} (${release.outcome}); the record: nomad var get -item history ${recordPath(job)}`)
}

/** The lock, tag and record lines --dry-run prints for a job of the kit's own. */
export function kitReleaseCommands(job: string, kind: string, file: string, kit: string): string[] {
  return [
    `# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/${job}/lock`,
    `# once it is successful (Nomad 1.9+), VERSION being the version the run registered:`,
    `nomad job tag apply -name ${shq(`${kind}-${kit}`)} -description ${shq(kitDescription(kit, file))} -version "$VERSION" ${job}`,
    `# every outcome is written to the release record (nomad var put -check-index); read it with:`,
    `nomad var get -item history ${recordPath(job)}`,
  ]
}
const kitDescription = (kit: string, file: string) => `the kit at commit ${kit} (jobs/${path.basename(file)}), by ${whoAmI()}`

/** A followed deployment's outcome, as the record says it. */
export const OUTCOMES = { successful: 'deployed', canary: 'canary-waiting', failed: 'failed', timeout: 'timeout', none: 'unchanged' } as const
