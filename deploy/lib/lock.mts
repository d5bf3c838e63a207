// The lock of a job: two runs that change one job never overlap (Nomad 1.7+ `nomad var lock` on
// nomad/jobs/<job>/lock, command/var_lock.go@v2.0.5 and api/locks.go@v2.0.5); a lock left by a killed
// run expires by itself. Before 1.7 there are no variable locks: -check-index on `job run` stays the guard.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { $ } from 'zx'
import { EXIT, fail, onExit, refuse } from './env.mts'
import { atLeast, noAnswer, nomadError, nomadVersions, type Nomad } from './nomad.mts'
import { whoAmI } from './release.mts'

export const lockPath = (job: string) => `nomad/jobs/${job}/lock`


/**
 * Hold the job's lock until the run ends (Nomad 1.7+): `nomad var lock -early-return -shell=false
 * nomad/jobs/<job>/lock @holder.json sh -c 'echo locked; exec cat'` keeps its child while it holds
 * the lock and renews it (api/locks.go@v2.0.5); the child prints "locked" and waits on its stdin, our
 * pipe: when this run ends, whatever the way, the pipe closes, the child ends and nomad releases the
 * lock; a run killed with nomad too leaves a lock that expires after its TTL (15 s) and lock delay.
 * Held by another run: -early-return makes nomad exit 0 without running its child; the holder (the
 * variable's items) is read and the run waits up to DEPLOY_LOCK_WAIT seconds, then is refused (exit 2).
 * Before 1.7 there are no variable locks: said once; -check-index on `job run` stays the last guard.
 */
export async function lockJob(nomad: Nomad, job: string, script: string, waitSeconds: number): Promise<void> {
  const { server } = await nomadVersions(nomad)
  if (!atLeast(server, '1.7')) {
    console.error(`    Nomad ${server} has no variable locks (1.7+): a concurrent deploy of ${job} is stopped by -check-index only`)
    return
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'deploy-lock-'))
  onExit(() => rmSync(dir, { recursive: true, force: true }))
  const holder = { by: whoAmI(), script, pid: String(process.pid), since: new Date().toISOString() }
  const spec = path.join(dir, 'holder.json')
  writeFileSync(spec, JSON.stringify({ Items: holder }))
  const deadline = Date.now() + waitSeconds * 1000
  for (let said = false; ;) {
    const held = await tryLock(nomad, job, spec)
    if (held === true) {
      console.error(`    locked ${lockPath(job)} (released when this run ends)`)
      return
    }
    if (Date.now() + 5000 > deadline) {
      refuse([`another run holds the lock of ${job} (${held || 'holder unknown'}): nothing was changed; run again once it is done, or wait for it with DEPLOY_LOCK_WAIT=<seconds>; a lock left by a killed run expires by itself within 30 s`])
    }
    if (!said) console.error(`    ${lockPath(job)} is held by ${held || 'another run'}: waiting up to ${waitSeconds}s (DEPLOY_LOCK_WAIT)`)
    said = true
    await new Promise((r) => setTimeout(r, 5000))
  }
}

/** One attempt: true when held (the child said so), else who holds it (the variable's items). */
async function tryLock(nomad: Nomad, job: string, spec: string): Promise<true | string> {
  // No time limit: the lock lives as long as the run. Its own environment (the nomad one) and process group.
  const proc = $({ env: nomad.env, nothrow: true, quiet: true })`nomad var lock -early-return -shell=false ${lockPath(job)} @${spec} sh -c ${'echo locked; exec cat >/dev/null'}`
  // Bounded like every nomad command: a server that never answers (a 500 is retried for 31 s by the CLI).
  let timer: NodeJS.Timeout | undefined
  const locked = await new Promise<boolean | 'late'>((resolve) => {
    let seen = ''
    proc.stdout.on('data', (b: Buffer) => {
      seen += b.toString()
      if (seen.includes('locked')) resolve(true)
    })
    void proc.then(() => resolve(false))
    timer = setTimeout(() => resolve('late'), nomad.limit * 1000)
  })
  clearTimeout(timer)
  if (locked === 'late') {
    await proc.kill('SIGTERM').catch(() => {})
    fail(`nomad var lock ${lockPath(job)} ${noAnswer(nomad.limit)}`)
  }
  if (locked) {
    // The lock lives in the background: it must not keep the run alive, only end with it.
    const child = proc.child
    child?.unref()
    for (const stream of [child?.stdin, child?.stdout, child?.stderr]) (stream as { unref?: () => void } | null | undefined)?.unref?.()
    onExit(async () => {
      proc.stdin.end() // the child's `cat` ends, nomad releases the lock and exits
      let timer: NodeJS.Timeout | undefined
      await Promise.race([proc, new Promise((r) => (timer = setTimeout(r, nomad.limit * 1000)))])
      clearTimeout(timer)
    })
    return true
  }
  const out = await proc
  if (!out.ok) {
    const { message, code } = nomadError(nomad, out)
    if (code === EXIT.refused) refuse([`nomad var lock ${lockPath(job)}: ${message} (the token needs variables write on nomad/jobs/*)`])
    fail(`nomad var lock ${lockPath(job)}: ${message}`)
  }
  const read = await nomad.$`nomad var get -out json ${lockPath(job)}`
  try {
    const items = JSON.parse(read.stdout).Items ?? {}
    return [items.by, items.script && `running ${items.script}`, items.since && `since ${items.since}`].filter(Boolean).join(', ')
  } catch {
    return ''
  }
}
