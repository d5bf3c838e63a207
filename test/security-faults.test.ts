// Property 10 of SECURITY.md (nothing swallowed), for EVERY script in deploy/ that calls nomad, vault or
// docker: its main path is run once to learn which subcommands it calls; then each one in turn is made
// to fail (the doubles' `fail` knob: a realistic server error) on a fresh sandbox. The script must exit
// non-zero (1, or 2 when nothing changed yet) and its last line must name the command that failed.
// (The ssh scripts call none of the doubles; their failing ssh and go steps are tested in their own files.)
import { describe, it } from 'vitest'
import { sandbox } from './helpers.ts'
import { lastLine, scenarioOf, SCRIPTS, subcommand, type Ctx } from './security-scenarios.ts'

const viaDoubles = SCRIPTS.filter((s) => scenarioOf(s).kind !== 'ssh')

describe.concurrent('10. nothing swallowed: every nomad, vault and docker call of the main path, failing in turn', () => {
  it('the scripts that call the doubles are found', ({ expect }) => {
    expect(viaDoubles.length).toBeGreaterThanOrEqual(8)
  })

  // One run per call of the main path (a dozen or more each: the lock, the plan, the run, the tag, the record): minutes on 2 cores.
  it.for(viaDoubles)('%s: exit 1 or 2, and the last line names the failed command', { timeout: 300_000 }, async (script, { expect }) => {
    const s = scenarioOf(script)
    const ctx: Ctx = { sb: sandbox() }
    const env = s.setup(ctx)
    const setup = ctx.sb.calls().length
    const ok = await ctx.sb.run(script, s.args, { env })
    expect(ok.code, ok.stderr).toBe(0)
    const steps = [...new Map(ctx.sb.calls().slice(setup).map((c) => [`${c.tool} ${subcommand(c)}`, [c.tool, subcommand(c)] as const])).values()]
    expect(steps.length).toBeGreaterThan(0)

    for (const [tool, sub] of steps) {
      const f: Ctx = { sb: sandbox() }
      const fenv = s.setup(f)
      f.sb.setState({ fail: [sub] }, tool)
      const r = await f.sb.run(script, s.args, { env: fenv })
      const failed = f.sb.calls().filter((c) => c.tool === tool && subcommand(c) === sub)
      expect.soft(failed.length, `${tool} ${sub} was called again`).toBeGreaterThan(0)
      expect.soft([1, 2], `${tool} ${sub} failed, yet exit ${r.code}:\n${r.stderr}`).toContain(r.code)
      expect.soft(lastLine(r.stderr), `${tool} ${sub} failed: the last line does not name it`).toContain(`${tool} ${sub}`)
      expect.soft(r.stderr).not.toMatch(/\n\s+at /)
    }
  })
})
