// deploy_nomad.mts, run as a user runs it, against the nomad test double. Also the kit's shared
// behaviour: flags, env file, TLS checks, refusing and unreachable clusters.
import { spawn } from 'node:child_process'
import { cpSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { AGENT_SHA, baseEnv, makeCerts, NODE_ID, root, sandbox, stageBinary, write, type Sandbox } from './helpers.ts'

const SCRIPT = 'deploy_nomad.mts'
const JOBFILE = path.join(root, 'jobs/agent.nomad')
let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
  stageBinary(sb) // what deploy_binary records: the build to deploy (test/agent_releases.test.ts runs both for real)
})
const plans = () => sb.commands('nomad').filter((c) => c.startsWith('job plan'))
/** The job variables for the staged build at AGENT_REMOTE_DIR/AGENT_BINARY_NAME. */
const VARS = (dir = '/root/data', name = 'agent', sha = AGENT_SHA) => `-var=binary_path=${dir}/${name}-${sha} -var=binary_sha256=${sha} -var=commit=0123456789ab -var=nodes=${NODE_ID}`

describe('deploy_nomad: the main path', () => {
  it('plans, runs with the plan\'s check-index, follows the deployment to success, tags and records it, under the job\'s lock', async () => {
    const r = await sb.run(SCRIPT)
    expect(r.stderr).not.toMatch(/✗/)
    expect(r.code).toBe(0)
    expect(sb.commands('nomad').map((c) => c.replace(/@\S+\/holder\.json/, '@HOLDER'))).toEqual([
      'job history -json agent-economique',
      'var get -out json nomad/jobs/agent-economique/releases',
      'var lock -early-return -shell=false nomad/jobs/agent-economique/lock @HOLDER sh -c echo locked; exec cat >/dev/null',
      `job plan ${VARS()} ${JOBFILE}`,
      `job run -check-index 0 -detach ${VARS()} ${JOBFILE}`,
      'job history -json agent-economique',
      'job deployments -latest -json agent-economique',
      'job deployments -latest -json agent-economique',
      'job history -json agent-economique',
      `job tag apply -name agent-${AGENT_SHA.slice(0, 12)} -description sha256 ${AGENT_SHA}, commit 0123456789ab -version 0 agent-economique`,
      'var get -out json nomad/jobs/agent-economique/releases',
      'var put -check-index 11 -in=json -out=none -',
    ])
    expect(r.stdout).toMatch(/^agent-economique version 0: deployment [0-9a-f]{8} successful/m)
    expect(r.stdout).toContain(`Now runs: agent-${AGENT_SHA.slice(0, 12)} (commit 0123456789ab), tagged agent-${AGENT_SHA.slice(0, 12)}`)
    expect(r.stdout).toContain('plugin "raw_exec" { config { enabled = true } }')
    expect(r.stdout).toContain('nomad alloc logs -f -job agent-economique')
    // The record: this release first, no secret in it; the lock is gone with the run.
    const state = sb.readState()
    const history = JSON.parse(state.vars['nomad/jobs/agent-economique/releases'].Items.history)
    expect(history).toEqual([expect.objectContaining({ job: 'agent-economique', version: 0, action: 'deploy', outcome: 'deployed', sha256: AGENT_SHA, commit: '0123456789ab', tag: `agent-${AGENT_SHA.slice(0, 12)}`, by: expect.stringMatching(/@/) })])
    expect(state.vars['nomad/jobs/agent-economique/lock']?.Lock ?? null).toBeNull()
  })

  it('deploys the exact release file under AGENT_REMOTE_DIR/AGENT_BINARY_NAME (the same settings as deploy_binary)', async () => {
    const r = await sb.run(SCRIPT, [], { env: { AGENT_REMOTE_DIR: '/srv/agent/', AGENT_BINARY_NAME: 'agent-v2' } })
    expect(r.code).toBe(0)
    expect(plans()).toEqual([`job plan ${VARS('/srv/agent', 'agent-v2')} ${JOBFILE}`])
  })

  it('does not run the job when the plan shows no change (cron: what runs, applied again), and says what runs', async () => {
    expect((await sb.run(SCRIPT)).code).toBe(0)
    const before = sb.commands('nomad').length
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('agent-economique is already up to date (the plan shows no change): nothing was run')
    expect(r.stdout).toContain(`Runs: agent-${AGENT_SHA.slice(0, 12)} (commit 0123456789ab)`)
    expect(r.stderr).toContain('what runs now, applied again')
    expect(sb.commands('nomad').slice(before).filter((c) => /^job (plan|run|tag)|^var put/.test(c))).toEqual([`job plan ${VARS()} ${JOBFILE}`])
    expect(sb.readState().jobs['agent-economique'].versions).toHaveLength(1)
  })

  it('still runs an in-place update (plan exit 0 with a diff)', async () => {
    expect((await sb.run(SCRIPT)).code).toBe(0)
    sb.setState({ inplace: true })
    const r = await sb.run(SCRIPT, [], { env: { AGENT_BINARY_NAME: 'agent2' } })
    expect(r.code).toBe(0)
    // The plan's modify index (the tag and the record moved the cluster's index on meanwhile).
    const index = sb.readState().jobs['agent-economique'].versions[0].jobModifyIndex
    expect(sb.commands('nomad').filter((c) => c.startsWith('job run')).at(-1)).toBe(`job run -check-index ${index} -detach ${VARS('/root/data', 'agent2')} ${JOBFILE}`)
  })

  it('stops without overwriting when the job changed between plan and run (check-index)', async () => {
    expect((await sb.run(SCRIPT)).code).toBe(0)
    sb.setState({ raceAfterPlan: true })
    const r = await sb.run(SCRIPT, [], { env: { AGENT_BINARY_NAME: 'agent2' } })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/agent-economique changed on the cluster since the plan \(.*conflicting job modify index.*\): nothing was overwritten/)
    const versions = sb.readState().jobs['agent-economique'].versions
    expect(versions.map((v: { key: string }) => v.key).at(-1)).toBe('someone-else')
  })

  it('two deploys of the job at once: one runs, the other is refused (exit 2) with who holds the lock, nothing half-done', async () => {
    sb.setState({ polls: 20 }) // a deployment that lasts a moment
    const runs = await Promise.all([sb.run(SCRIPT), sb.run(SCRIPT)])
    expect(runs.map((r) => r.code).sort()).toEqual([0, 2])
    const refused = runs.find((r) => r.code === 2)!
    expect(refused.stderr).toMatch(/another run holds the lock of agent-economique \(\S+@\S+ via|\S+@\S+, running deploy_nomad.mts, since \d{4}-/)
    expect(refused.stderr).toContain('nothing was changed')
    expect(sb.commands('nomad').filter((c) => c.startsWith('job run'))).toHaveLength(1)
    expect(sb.readState().jobs['agent-economique'].versions).toHaveLength(1)
    // The lock went with the run that held it: the next deploy takes it.
    expect((await sb.run(SCRIPT)).code).toBe(0)
  })

  it('DEPLOY_LOCK_WAIT: the second deploy waits for the first, then finds nothing to change', async () => {
    sb.setState({ polls: 40 })
    const first = sb.run(SCRIPT)
    await new Promise((r) => setTimeout(r, 1500))
    const second = await sb.run(SCRIPT, [], { env: { DEPLOY_LOCK_WAIT: '60' } })
    expect((await first).code).toBe(0)
    expect(second.code, second.stderr).toBe(0)
    expect(second.stderr).toMatch(/is held by .*: waiting up to 60s \(DEPLOY_LOCK_WAIT\)/)
    expect(second.stdout).toContain('already up to date')
  })

  it('a run killed with SIGKILL leaves no lock behind: its nomad var lock sees the pipe close and releases it at once', async () => {
    sb.setState({ polls: 400 }) // a deployment that outlasts the kill
    let pid = 0
    const first = sb.run(SCRIPT, [], { onStart: (p) => (pid = p) })
    const lockHeld = () => Boolean(sb.readState().vars?.['nomad/jobs/agent-economique/lock']?.Lock)
    for (const end = Date.now() + 30_000; !sb.commands('nomad').some((c) => c.startsWith('job deployments')) && Date.now() < end;) await new Promise((r) => setTimeout(r, 50))
    expect(lockHeld()).toBe(true)
    process.kill(pid, 'SIGKILL') // no handler, no cleanup
    await first
    for (const end = Date.now() + 5_000; lockHeld() && Date.now() < end;) await new Promise((r) => setTimeout(r, 50))
    expect(lockHeld(), 'the lock outlived the run').toBe(false)
    const r = await sb.run(SCRIPT)
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('already up to date')
  })

  it('SIGTERM to npx while the lock is held: the run stops (its launcher gone), and the lock goes with it', async () => {
    sb.setState({ polls: 400 })
    let pid = 0
    const first = sb.run(SCRIPT, [], { onStart: (p) => (pid = p), launcher: ['npx', 'tsx'] })
    const lockHeld = () => Boolean(sb.readState().vars?.['nomad/jobs/agent-economique/lock']?.Lock)
    for (const end = Date.now() + 30_000; !sb.commands('nomad').some((c) => c.startsWith('job deployments')) && Date.now() < end;) await new Promise((r) => setTimeout(r, 50))
    expect(lockHeld()).toBe(true)
    process.kill(pid, 'SIGTERM') // npx forwards nothing: the script sees its launcher go
    await first
    for (const end = Date.now() + 5_000; lockHeld() && Date.now() < end;) await new Promise((r) => setTimeout(r, 50))
    expect(lockHeld(), 'the lock outlived the run').toBe(false)
  })

  it('refuses when nothing was uploaded and nothing runs (exit 2, names deploy_binary)', async () => {
    const fresh = sandbox()
    const r = await fresh.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('nothing to deploy: agent-economique is not deployed and no build is recorded in nomad/jobs/agent-economique/releases: run npx tsx deploy/deploy_binary.mts first')
    expect(fresh.commands('nomad').filter((c) => /^job (plan|run)|^var (lock|put)/.test(c))).toEqual([])
  })

  it('refuses a build that is not on every host of DEPLOY_SSH_HOSTS (exit 2)', async () => {
    const other = sandbox()
    stageBinary(other, AGENT_SHA, { hosts: ['10.0.0.9'] })
    const r = await other.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`agent-${AGENT_SHA.slice(0, 12)} is not on 127.0.0.1 (recorded on 10.0.0.9)`)
  })

  it('exits 1 with Nomad\'s reason when the deployment fails', async () => {
    expect((await sb.run(SCRIPT)).code).toBe(0)
    sb.setState({ outcome: 'failed' })
    stageBinary(sb, 'b'.repeat(64))
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/deployment [0-9a-f]{8} failed: Failed due to unhealthy allocations - rolling back to job version 0/)
  })

  it('exits 1 when the deployment is still running at --timeout', async () => {
    sb.setState({ polls: 1000 })
    const r = await sb.run(SCRIPT, ['--timeout', '1'])
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/still running after 1s \(--timeout\); it goes on in Nomad/)
  })

  it('hands the token and TLS to nomad through its environment only, and never VAULT_TOKEN', async () => {
    const certs = makeCerts(sb.dir)
    const r = await sb.run(SCRIPT, [], {
      env: { NOMAD_ADDR: 'https://nomad.test:4646', NOMAD_TOKEN: 'canary-nomad-token-4711', NOMAD_CACERT: certs.ca, NOMAD_CLIENT_CERT: certs.cert, NOMAD_CLIENT_KEY: certs.key, VAULT_TOKEN: 'canary-vault-token-4712', CONSUL_HTTP_TOKEN: 'canary-consul-4713' },
    })
    expect(r.code).toBe(0)
    for (const call of sb.calls('nomad')) {
      expect(call.env.NOMAD_TOKEN).toBe('canary-nomad-token-4711')
      expect(call.env.NOMAD_CACERT).toBe(certs.ca)
      expect(call.env.VAULT_TOKEN).toBeUndefined()
      expect(call.env.CONSUL_HTTP_TOKEN).toBeUndefined()
      expect(call.argv.join(' ')).not.toMatch(/canary-|-token|-address|-ca-cert/)
    }
    expect(r.output).not.toMatch(/canary-/)
  })

  it('reports the version ITS run registered: a deploy landing right after it is not taken for its success (exit 1, superseded)', async () => {
    sb.setState({ raceAfterRun: true })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('==> Follow the deployment of agent-economique version 0')
    expect(r.stdout).toMatch(/^agent-economique version 0: deployment [0-9a-f]{8} cancelled: Cancelled due to newer version of job/m)
  })
})

describe('deploy_nomad: flags and configuration', () => {
  it('--help prints the header: purpose, usage, tools, variables, exit codes', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_nomad: deploy the Agent Economique job/)
    for (const s of ['Usage: npx tsx deploy/deploy_nomad.mts', 'Needs: nomad CLI', 'NOMAD_TOKEN', 'AGENT_REMOTE_DIR', 'Exit: 0 done'])
      expect(r.stdout).toContain(s)
    expect(sb.calls()).toEqual([])
  })

  it('refuses an unknown flag with exit 2 and runs nothing', async () => {
    const r = await sb.run(SCRIPT, ['--dryrun'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("Unknown option '--dryrun'")
    expect(sb.calls()).toEqual([])
  })

  it('--dry-run with .env.example and no nomad installed prints the whole plan and warns', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run', '--env-file', path.join(root, '.env.example')], {
      env: { PATH: sb.pathWithout('nomad'), NOMAD_ADDR: undefined }, cwd: root,
    })
    expect(r.code).toBe(0)
    expect(r.stderr).toMatch(/warning: a real run would refuse: nomad not found on PATH/)
    expect(r.stderr).toMatch(/warning: a real run would refuse: NOMAD_CACERT: .*certs\/ca\.pem does not exist/)
    expect(r.stdout).toContain("export NOMAD_ADDR=https://nomad.example.internal:4646 NOMAD_CACERT=")
    expect(r.stdout).toContain('NOMAD_TOKEN="$NOMAD_TOKEN"')
    expect(r.stdout).toContain('nomad job plan "-var=binary_path=/root/data/agent-$SHA256" "-var=binary_sha256=$SHA256" "-var=commit=$COMMIT" "-var=nodes=$NODE_IDS" jobs/agent.nomad')
    expect(r.stdout).toContain('nomad var get -item binaries nomad/jobs/agent-economique/releases')
    expect(r.stdout).not.toContain('00000000-0000-0000-0000-000000000000')
  })

  it('refuses without nomad on PATH (exit 2, says how to install it)', async () => {
    const r = await sb.run(SCRIPT, [], { env: { PATH: sb.pathWithout('nomad') } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad not found on PATH \(install the Nomad CLI/)
  })

  it('reports ALL missing and invalid variables in one message', async () => {
    const r = await sb.run(SCRIPT, [], { env: { NOMAD_ADDR: 'https://nomad.test:4646', NOMAD_CACERT: '/nonexistent/ca.pem', AGENT_REMOTE_DIR: 'relative/dir', AGENT_BINARY_NAME: '' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/refused \(nothing was changed\):/)
    expect(r.stderr).toContain('NOMAD_TOKEN is not set')
    expect(r.stderr).toContain('NOMAD_CACERT: /nonexistent/ca.pem does not exist')
    expect(r.stderr).toContain('AGENT_REMOTE_DIR="relative/dir" must be an absolute path')
    expect(r.stderr).toContain('AGENT_BINARY_NAME is empty')
    expect(sb.calls()).toEqual([])
  })

  it('reads --env-file when given; real variables win over it', async () => {
    const env = write(sb.dir, 'other.env', 'AGENT_REMOTE_DIR=/from/file\nAGENT_BINARY_NAME=from-file\n')
    const r = await sb.run(SCRIPT, ['--env-file', env], { env: { AGENT_BINARY_NAME: 'from-env' } })
    expect(r.code).toBe(0)
    expect(plans()).toEqual([`job plan ${VARS('/from/file', 'from-env')} ${JOBFILE}`])
  })

  it('reads .env at the repository root by default, whatever the current directory; real variables win', async () => {
    // A copy of the repository, so that its .env is this test's own (a developer's real .env stays out).
    const copy = repoCopy(sb)
    writeFileSync(path.join(copy, '.env'), 'AGENT_REMOTE_DIR=/from/dotenv\nAGENT_BINARY_NAME=from-dotenv\n')
    const r = await runFrom(copy, sb, [], { AGENT_BINARY_NAME: 'from-env' })
    expect(r.code, r.stderr).toBe(0)
    expect(plans()).toEqual([`job plan ${VARS('/from/dotenv', 'from-env')} ${path.join(copy, 'jobs/agent.nomad')}`])
  })

  // Node 20 itself stops on a missing --env-file anywhere in argv (exit 9) before the script runs;
  // from Node 22 on, the flag after the script name is the script's, and it refuses with exit 2.
  it('refuses an --env-file that does not exist', async () => {
    const r = await sb.run(SCRIPT, ['--env-file', 'nope.env'])
    if (Number(process.versions.node.split('.')[0]) < 22) {
      expect(r.code).toBe(9)
      expect(r.stderr).toContain('nope.env: not found')
    } else {
      expect(r.code).toBe(2)
      expect(r.stderr).toContain('--env-file nope.env: no such file')
    }
    expect(sb.calls()).toEqual([])
  })

  it('refuses TLS variables with an http:// NOMAD_ADDR', async () => {
    const r = await sb.run(SCRIPT, [], { env: { NOMAD_CACERT: 'certs/ca.pem' } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('NOMAD_ADDR is http:// but NOMAD_CACERT is set')
  })

  it('refuses a --timeout that is not a duration', async () => {
    const r = await sb.run(SCRIPT, ['--timeout', 'soon'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('--timeout soon: give a positive duration')
  })
})

describe('deploy_nomad: TLS files are checked before anything runs', () => {
  const https = (extra: Record<string, string>) => ({ NOMAD_ADDR: 'https://nomad.test:4646', NOMAD_TOKEN: 't0k3n-value', ...extra })

  it.each([
    ['a CA that is not PEM', (c: ReturnType<typeof makeCerts>) => ({ NOMAD_CACERT: c.notPem }), /NOMAD_CACERT \(.*not-pem\.pem\) is not a PEM certificate/],
    ['an expired client certificate', (c: ReturnType<typeof makeCerts>) => ({ NOMAD_CACERT: c.ca, NOMAD_CLIENT_CERT: c.expired, NOMAD_CLIENT_KEY: c.key }), /NOMAD_CLIENT_CERT \(.*expired\.pem\) expired on Jan {2}1 00:00:00 2021 GMT/],
    ['a key that does not match the certificate', (c: ReturnType<typeof makeCerts>) => ({ NOMAD_CACERT: c.ca, NOMAD_CLIENT_CERT: c.cert, NOMAD_CLIENT_KEY: c.wrongKey }), /NOMAD_CLIENT_KEY \(.*wrong-key\.pem\) does not match NOMAD_CLIENT_CERT/],
    ['a client certificate from another CA', (c: ReturnType<typeof makeCerts>) => ({ NOMAD_CACERT: c.otherCa, NOMAD_CLIENT_CERT: c.cert, NOMAD_CLIENT_KEY: c.key }), /NOMAD_CLIENT_CERT \(.*client\.pem\) was not issued by NOMAD_CACERT/],
    ['a certificate without its key', (c: ReturnType<typeof makeCerts>) => ({ NOMAD_CACERT: c.ca, NOMAD_CLIENT_CERT: c.cert }), /NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY go together/],
  ])('refuses %s (exit 2, nomad never called)', async (_name, files, message) => {
    const certs = makeCerts(sb.dir)
    const r = await sb.run(SCRIPT, [], { env: https(files(certs)) })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(sb.calls('nomad')).toEqual([])
  })

  it('warns when a certificate expires within 30 days, and goes on', async () => {
    const certs = makeCerts(sb.dir)
    const r = await sb.run(SCRIPT, [], { env: https({ NOMAD_CACERT: certs.soon }) })
    expect(r.stderr).toMatch(/warning: NOMAD_CACERT \(.*soon\.pem\) expires in (9|10) days/)
    expect(r.code).toBe(0)
  })
})

describe('deploy_nomad: a cluster that refuses or cannot be reached', () => {
  it('a refused token stops at its first read of the cluster (the clients) with exit 2 and says which variable to fix', async () => {
    sb.setState({ mode: 'forbidden' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/Nomad at http:\/\/127\.0\.0\.1:4646 refused the token \(403\): check NOMAD_TOKEN/)
    expect(sb.commands('nomad', { probes: true })).toEqual(['version', 'server members -json', 'node status -json'])
  })

  it('an unreachable cluster stops at the plan with exit 1, a connection problem', async () => {
    sb.setState({ mode: 'unreachable' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cannot reach Nomad at http:\/\/127\.0\.0\.1:4646: a connection problem/)
    expect(r.stderr).not.toMatch(/\n\s+at /) // no stack trace
  })
})

describe('deploy_nomad: a plan that cannot succeed is refused before anything runs', () => {
  it('a job the scheduler cannot place (host volume or raw_exec missing on the clients): exit 2, with its reasons', async () => {
    sb.setState({ placement: 'missing drivers' })
    const r = await sb.run(SCRIPT)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/nomad cannot place agent-economique \(nothing was run\): .*Constraint "missing drivers"/)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job run'))).toEqual([])
  })

  it('a job file that does not parse (a broken edit): exit 2, says so', async () => {
    // The script always deploys jobs/agent.nomad; a copy of the repository holds the broken edit.
    const copy = repoCopy(sb)
    writeFileSync(path.join(copy, 'jobs/agent.nomad'), readFileSync(JOBFILE, 'utf8').replace(/^variable "binary_path" \{/m, 'variable "binary_path"'))
    const r = await runFrom(copy, sb, ['--env-file', sb.envFile])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/- jobs\/agent\.nomad does not parse: .*Unclosed configuration block/)
    expect(r.stderr).toContain(`- check it with: nomad job validate ${VARS()} repo/jobs/agent.nomad`) // relative to the current directory
    expect(sb.commands('nomad').filter((c) => c.startsWith('job run'))).toEqual([])
  })
})

/** A copy of the repository's scripts and jobs (node_modules linked), for tests that change its files. */
function repoCopy(box: Sandbox) {
  const copy = path.join(box.dir, 'repo')
  for (const d of ['deploy', 'jobs']) cpSync(path.join(root, d), path.join(copy, d), { recursive: true })
  cpSync(path.join(root, 'package.json'), path.join(copy, 'package.json'))
  symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'))
  return copy
}

/** Run the copy's deploy_nomad.mts from the sandbox directory, with the sandbox's stubs. */
function runFrom(copy: string, box: Sandbox, args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', path.join(root, 'node_modules/tsx/dist/esm/index.mjs'), path.join(copy, 'deploy', SCRIPT), ...args], {
      cwd: box.dir,
      env: { PATH: `${box.bin}:/usr/bin:/bin`, HOME: box.home, STUB_STATE: box.state, ...baseEnv, ...env },
    })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (code) => resolve({ code, stderr }))
  })
}
