// put_arangodb_password.mts, run as a user runs it (and as cron runs it, and at a real terminal through
// util-linux `script`), against the nomad test double's Nomad Variables. The password is a canary that
// must never show up in any argv nor in the output; it reaches nomad on stdin only.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { baseEnv, root, sandbox, type Result, type Sandbox } from './helpers.ts'

const SCRIPT = 'put_arangodb_password.mts'
const VAR = 'nomad/jobs/arangodb-agent-economique'
const CANARY = 'canary-arango-pw-7f3a9c'
const GET = `var get -out json ${VAR}`
const PUT = (index: number) => `var put -check-index ${index} -in=json -out=none -`
let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})

/** The variable as the double stores it. */
const stored = () => sb.readState().vars?.[VAR]

/** A variable someone stored earlier, with another item that must survive. */
function preset(items: Record<string, string>, index = 42) {
  sb.setState({ index: 50, vars: { [VAR]: { Namespace: 'default', Path: VAR, CreateIndex: index, ModifyIndex: index, CreateTime: 1, ModifyTime: 1, Items: items } } })
}

/** The secret appears in no recorded argv and nowhere in the output. */
function expectNoLeak(r: Result, value: string) {
  expect(value.length).toBeGreaterThan(8)
  for (const call of sb.calls()) {
    expect(call.argv.join(' ')).not.toContain(value)
    expect(JSON.stringify(call.env)).not.toContain(value)
  }
  expect(r.output).not.toContain(value)
}

describe('put_arangodb_password: the value from ARANGO_ROOT_PASSWORD', () => {
  it('stores it on stdin with -check-index 0 when nothing is stored yet, and never shows it', async () => {
    const r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    expect(sb.commands('nomad')).toEqual([GET, PUT(0)])
    const put = sb.calls('nomad').find((c) => c.argv[0] === 'var' && c.argv[1] === 'put')!
    expect(JSON.parse(put.stdin!)).toEqual({ Path: VAR, Items: { root_password: CANARY } })
    expect(stored().Items).toEqual({ root_password: CANARY })
    expect(r.stdout).toContain(`Stored the ArangoDB root password (from ARANGO_ROOT_PASSWORD) in the Nomad Variable ${VAR}, item root_password (modify index 11)`)
    expect(r.stdout).toContain(`nomad var get -item root_password ${VAR}`)
    expectNoLeak(r, CANARY)
  })

  it('keeps the other items stored there and writes with the ModifyIndex it read', async () => {
    preset({ other_item: 'keep-me', root_password: 'the-old-password' }, 42)
    const r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(0)
    expect(sb.commands('nomad')).toEqual([GET, PUT(42)])
    expect(stored().Items).toEqual({ other_item: 'keep-me', root_password: CANARY })
    expect(stored().ModifyIndex).toBe(51)
    expect(r.stdout).toContain('other items kept: other_item')
    expectNoLeak(r, CANARY)
    expect(r.output).not.toContain('the-old-password')
    expect(r.output).not.toContain('keep-me')
  })

  it('writes nothing the second time and says it is unchanged', async () => {
    expect((await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })).code).toBe(0)
    const index = stored().ModifyIndex
    const r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`root_password in ${VAR} is already that password: unchanged, nothing was written (modify index ${index})`)
    expect(sb.commands('nomad')).toEqual([GET, PUT(0), GET])
    expect(stored().ModifyIndex).toBe(index)
    expectNoLeak(r, CANARY)
  })

  it('stops with exit 1 and overwrites nothing when someone writes between its read and its write', async () => {
    preset({ root_password: 'the-old-password' }, 42)
    // Another writer gets in just before our `var put` reaches the cluster.
    const double = path.join(root, 'test/stubs/nomad.mjs')
    sb.stub('nomad', `#!/bin/sh
if [ "$1 $2" = "var put" ] && [ ! -e "$STUB_STATE/raced" ]; then
  touch "$STUB_STATE/raced"
  ${JSON.stringify(process.execPath)} ${JSON.stringify(double)} var put -force -out=none ${VAR} root_password=someone-elses other=theirs >/dev/null </dev/null
fi
exec ${JSON.stringify(process.execPath)} ${JSON.stringify(double)} "$@"
`)
    const r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${VAR} was changed by someone else since it was read (modify index 42): nothing was written; run again`)
    expect(sb.commands('nomad').at(-1)).toBe(PUT(42))
    expect(stored().Items).toEqual({ root_password: 'someone-elses', other: 'theirs' })
    expectNoLeak(r, CANARY)
  })

  it('a TAB typed at the prompt is refused, never dropped: two different entries never "match" (exit 2, nothing written)', async () => {
    const r = await atTerminal(['typed-canary\tpw-4242', 'typed-canarypw-4242'])
    expect(r.code, r.output).toBe(2)
    expect(r.output).toContain('the typed value holds a TAB or another control character: type it again without')
    expect(stored()).toBeUndefined()
  })

  it('with CI set, even at a terminal, nothing is asked: a password is generated (none stored)', async () => {
    const r = await atTerminal([], { CI: 'true' })
    expect(r.code, r.output).toBe(0)
    expect(r.output).not.toContain('(not echoed)')
    expect(r.output).toContain('generated')
  })

  it('refuses an empty or multi-line value before calling nomad, without showing it', async () => {
    let r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: '' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('ARANGO_ROOT_PASSWORD is empty')
    r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: `${CANARY}\n`, NOMAD_ADDR: 'nomad.test:4646' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('ARANGO_ROOT_PASSWORD holds a line feed (\\n): remove it (values are taken exactly as written, or refused)')
    expect(r.stderr).toContain('NOMAD_ADDR=nomad.test:4646 must start with https:// or http://')
    expect(r.output).not.toContain(CANARY)
    expect(sb.calls()).toEqual([])
  })
})

describe('put_arangodb_password: no value given and no terminal (cron, CI)', () => {
  it('generates one when none is stored, stores it, and never prints it', async () => {
    preset({ other_item: 'keep-me' }, 42)
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(0)
    expect(sb.commands('nomad')).toEqual([GET, PUT(42)])
    const generated: string = stored().Items.root_password
    expect(generated).toMatch(/^[A-Za-z0-9_-]{43}$/) // 32 random bytes, base64url
    expect(stored().Items.other_item).toBe('keep-me')
    expect(r.stdout).toContain('(generated (32 random bytes, base64url), since none was given or stored)')
    expect(r.stdout).toContain(`nomad var get -item root_password ${VAR}`)
    expectNoLeak(r, generated)
  })

  it('keeps a stored one, writes nothing, and says so', async () => {
    preset({ root_password: 'the-stored-password' }, 42)
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`ARANGO_ROOT_PASSWORD is not set and there is no terminal to ask: the root password stored in ${VAR} is kept; nothing was written (modify index 42)`)
    expect(sb.commands('nomad')).toEqual([GET])
    expect(stored().Items).toEqual({ root_password: 'the-stored-password' })
    expect(r.output).not.toContain('the-stored-password')
  })
})

describe('put_arangodb_password: a hidden prompt at a real terminal', () => {
  it('asks twice without echo, stores what was typed', async () => {
    const r = await atTerminal(['typed-canary-pw-4242', 'typed-canary-pw-4242'])
    expect(r.code).toBe(0)
    expect(r.output).toContain(`ArangoDB root password for ${VAR} (not echoed): `)
    expect(r.output).toContain('Type it again: ')
    expect(r.output).toContain('Stored the ArangoDB root password (typed at the prompt)')
    expect(stored().Items).toEqual({ root_password: 'typed-canary-pw-4242' })
    expectNoLeak(r, 'typed-canary-pw-4242')
    expect(r.output).not.toMatch(/\*{4}/) // not even masked
  })

  it('refuses (exit 2, nothing written) when the two entries differ', async () => {
    const r = await atTerminal(['typed-canary-pw-4242', 'typed-canary-pw-4243'])
    expect(r.code).toBe(2)
    expect(r.output).toContain('the two passwords typed differ: nothing was written')
    expect(sb.commands('nomad')).toEqual([GET])
    expectNoLeak(r, 'typed-canary-pw-424')
  })

  it('Ctrl-C at the prompt stops with 130, nothing written', async () => {
    const r = await atTerminal(['typed-canary-pw-4242\u0003'], {}, '')
    expect(r.code).toBe(130)
    expect(r.output).toContain('interrupted by SIGINT')
    expect(sb.commands('nomad')).toEqual([GET])
    expectNoLeak(r, 'typed-canary-pw-4242')
  })

  it('prefers ARANGO_ROOT_PASSWORD when it is set, and asks nothing', async () => {
    const r = await atTerminal([], { ARANGO_ROOT_PASSWORD: CANARY })
    expect(r.code).toBe(0)
    expect(r.output).not.toContain('not echoed')
    expect(stored().Items).toEqual({ root_password: CANARY })
    expectNoLeak(r, CANARY)
  })
})

describe('put_arangodb_password: dry run, tools, a cluster that refuses or cannot be reached', () => {
  it('--help prints the header', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^put_arangodb_password: store the ArangoDB root password/)
    for (const s of ['Usage: npx tsx deploy/put_arangodb_password.mts', 'Needs: nomad CLI', 'ARANGO_ROOT_PASSWORD', 'NOMAD_TOKEN', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
  })

  it('--dry-run runs nothing (not even var get) and shows the value as $ARANGO_ROOT_PASSWORD', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run'], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(0)
    expect(sb.calls()).toEqual([])
    expect(r.stdout).toContain(`nomad var get -out json ${VAR}\n`)
    expect(r.stdout).toContain('"root_password":"$ARANGO_ROOT_PASSWORD"')
    expect(r.stdout).toContain('nomad var put -check-index "$MODIFY_INDEX_FROM_GET" -in=json -out=none -')
    expect(r.output).not.toContain(CANARY)
  })

  it('refuses without nomad on PATH (exit 2)', async () => {
    const r = await sb.run(SCRIPT, [], { env: { PATH: sb.pathWithout('nomad'), ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad not found on PATH \(install the Nomad CLI/)
    expect(r.output).not.toContain(CANARY)
  })

  it('a refused token (403) ends in exit 2 with nothing stored and the variable to fix named: at the read on 2.0 (a 403 error since 1.11.2)', async () => {
    sb.setState({ mode: 'forbidden' })
    const r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad var get nomad\/jobs\/arangodb-agent-economique: Nomad at http:\/\/127\.0\.0\.1:4646 refused the token \(403\): check NOMAD_TOKEN/)
    expect(sb.commands('nomad')).toEqual([GET])
    expect(stored()).toBeUndefined()
    expectNoLeak(r, CANARY)
  })

  it('a refused token (403) on 1.10 (the read says "Variable not found" up to 1.11.1) is refused at the write, nothing stored', async () => {
    sb.setState({ mode: 'forbidden', version: '1.10.5' })
    const r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad var put: Nomad at http:\/\/127\.0\.0\.1:4646 refused the token \(403\): check NOMAD_TOKEN/)
    expect(stored()).toBeUndefined()
    expectNoLeak(r, CANARY)
  })

  it('an unreachable cluster ends in exit 1 at the read, nothing written', async () => {
    sb.setState({ mode: 'unreachable' })
    const r = await sb.run(SCRIPT, [], { env: { ARANGO_ROOT_PASSWORD: CANARY } })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cannot reach Nomad at http:\/\/127\.0\.0\.1:4646: a connection problem/)
    // The first call that reaches the cluster (the versions) finds it unreachable: nothing is read.
    expect(sb.commands('nomad', { probes: true })).toEqual(['version', 'server members -json'])
    expectNoLeak(r, CANARY)
  })
})

/**
 * Run the script at a real pseudo-terminal (util-linux `script`), typing each answer only once its
 * prompt is on the screen; everything the terminal shows is captured.
 */
function atTerminal(answers: string[], extraEnv: Record<string, string> = {}, enter = '\r'): Promise<Result> {
  const tsx = path.join(root, 'node_modules/tsx/dist/esm/index.mjs')
  const cmd = [process.execPath, '--import', tsx, path.join(root, 'deploy', SCRIPT), '--env-file', sb.envFile].map((a) => `'${a}'`).join(' ')
  const env = { PATH: `${sb.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin`, HOME: sb.home, LANG: 'C.UTF-8', SHELL: '/bin/sh', TERM: 'dumb', STUB_STATE: sb.state, ...baseEnv, ...extraEnv }
  const prompts = [/\(not echoed\): $/, /Type it again: $/]
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { cwd: sb.dir, env, stdio: ['pipe', 'pipe', 'pipe'] })
    let output = ''
    let asked = 0
    child.stdout.on('data', (d) => {
      output += d
      if (asked < answers.length && prompts[asked].test(output)) child.stdin.write(`${answers[asked++]}${enter}`)
    })
    child.stderr.on('data', (d) => (output += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout: output, stderr: output, output })
    })
  })
}
