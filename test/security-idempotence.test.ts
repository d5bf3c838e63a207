// Property 8 of SECURITY.md (idempotence), one table over EVERY script in deploy/: the same run twice;
// the second changes nothing (no new job version or deployment, no new Nomad Variable index, no new Vault
// version, no image built or pushed, no file touched on the server), makes no call that writes, and says so.
// promote_storefront: a second promote finds nothing to promote (exit 1, its message). revert_storefront:
// a second revert to the same version makes Nomad register nothing new (its `job revert` is a no-op).
import { readFileSync, statSync } from 'node:fs'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { sandbox } from './helpers.ts'
import { removeRemotes, SCENARIOS, scenarioOf, SCRIPTS, world, writeCalls, type Ctx } from './security-scenarios.ts'
import { ensureUsers, requireTools, startSshd, type Sshd } from './sshd.ts'

let sshd: Sshd
beforeAll(async () => {
  requireTools()
  ensureUsers()
  sshd = await startSshd()
})
afterAll(async () => {
  await sshd?.stop()
  removeRemotes()
})

describe.concurrent('8. idempotence: every script run twice with the same inputs', () => {
  it('every script in deploy/ has a scenario', ({ expect }) => {
    expect(Object.keys(SCENARIOS).sort()).toEqual(SCRIPTS)
  })

  it.for(SCRIPTS)('%s: the second run changes nothing and says so', async (script, { expect }) => {
    const s = scenarioOf(script)
    const ctx: Ctx = { sb: sandbox(), sshd }
    const env = s.setup(ctx)
    const start = world(ctx)
    const first = await ctx.sb.run(script, s.args, { env })
    expect(first.code, first.stderr).toBe(0)
    const after = world(ctx)
    // A script that changes things must have changed something (else this test proves nothing); one that only reads, nothing.
    if (s.readOnly) expect(after, 'a read-only script changed something').toEqual(start)
    else expect(after, 'the first run changed something (else this test proves nothing)').not.toEqual(start)

    const calls = ctx.sb.calls().length
    const sshCalls = ctx.ssh?.argv().length ?? 0
    const again = await ctx.sb.run(script, s.args, { env })
    expect(again.code, again.stderr).toBe(s.again.code)
    expect(again.output).toMatch(s.again.says)
    const contents = (w: ReturnType<typeof world>) => Object.fromEntries(Object.keys(w.files as Record<string, unknown>).filter((f) => statSync(f).isFile()).map((f) => [f, readFileSync(f).toString('base64')]))
    const marked = (w: ReturnType<typeof world>) => {
      const m = s.again.marks
      if (!m) return w
      const files = Object.fromEntries(Object.entries(w.files as Record<string, number[]>).map(([f, v]) => [f, m.files.test(f) ? v.slice(0, 3) : v]))
      const vars = Object.fromEntries(Object.entries(w.vars).filter(([p]) => !m.vars.includes(p)))
      return { ...w, files, vars }
    }
    const now = world(ctx)
    expect(marked(now)).toEqual(marked(after))
    if (s.again.marks) expect(contents(now)).toEqual(contents(after))
    const made = ctx.sb.calls().slice(calls)
    expect(writeCalls(made).map((c) => c.split(' ').slice(1, 3).join(' '))).toEqual(s.again.writes ?? [])
    // Over ssh: only reads (no remote command that creates, changes mode or uploads), but the marks the scenario names.
    for (const argv of ctx.ssh?.argv().slice(sshCalls) ?? []) {
      if (s.again.marks?.remote.some((re) => re.test(argv.at(-1)!))) continue
      expect(argv.at(-1)).not.toMatch(/mkdir|chmod|mv -f|cat >|touch/)
    }
  })
})
