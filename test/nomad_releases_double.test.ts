// What the nomad test double (test/stubs/nomad.mjs) models of the releases: the versions a job keeps
// (6 untagged ones, tagged ones exempt), job-level meta and the task's image or command in history and
// inspect, version tags (1.9.0+), revert by tag, and variable locks (`nomad var lock`, 1.7.0+), each
// with the texts and exit codes of the real CLI at the versions that have them.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { sandbox, type Sandbox } from './helpers.ts'

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})

type Stub = Record<string, any>
const env = () => ({ ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646', NOMAD_CLI_SHOW_HINTS: 'false', SHELL: '/bin/sh' })
function nomad(...args: string[]) {
  const r = spawnSync(path.join(sb.bin, 'nomad'), args, { env: env(), encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}
const history = (job = 'web'): Stub[] => JSON.parse(nomad('job', 'history', '-json', job).stdout)
const versions = (job = 'web') => history(job).map((v) => v.Version)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A job whose image comes from -var (one new version per image), with job-level meta and a raw_exec task. */
function webJob({ meta = true } = {}) {
  const file = path.join(sb.dir, 'web.nomad')
  writeFileSync(file, `variable "image" {
  type = string
}
variable "binary_path" {
  type    = string
  default = "/root/data/agent"
}
job "web" {
${meta ? `  meta {
    image_tag = var.image
    owner     = "ops"
    replicas  = 2
  }
` : ''}  group "web" {
    task "web" {
      driver = "docker"
      config {
        image = "registry.example/web:\${var.image}"
      }
    }
    task "agent" {
      driver = "raw_exec"
      config {
        command = var.binary_path
        args    = ["-v"]
      }
    }
  }
}
`)
  return file
}
function run(tag: string, { meta = true } = {}) {
  const r = nomad('job', 'run', '-detach', `-var=image=${tag}`, webJob({ meta }))
  expect(r.stderr).toBe('')
  expect(r.code).toBe(0)
}
/** Status reads until the latest deployment is no longer running (the double moves one step per read). */
function settle() {
  for (let i = 0; i < 10; i++) if (JSON.parse(nomad('job', 'deployments', '-latest', '-json', 'web').stdout).Status !== 'running') return
  throw new Error('the deployment is still running')
}

describe('the versions a job keeps (nomad/state/state_store.go upsertJobVersion, JobTrackedVersions = 6)', () => {
  it('8 registrations: history keeps the 6 newest; inspect -version and revert of a pruned version fail as the real CLI does', () => {
    for (let i = 0; i < 8; i++) run(`v${i}`)
    expect(versions()).toEqual([7, 6, 5, 4, 3, 2])
    expect(nomad('job', 'history', 'web').stdout).not.toContain('Version     = 1\n')
    const inspect = nomad('job', 'inspect', '-version', '1', 'web')
    expect(inspect).toMatchObject({ code: 1, stdout: '' })
    expect(inspect.stderr).toBe('Error inspecting job: job "web" with version 1 couldn\'t be found\n')
    expect(JSON.parse(nomad('job', 'inspect', '-json', '-version', '2', 'web').stdout).Version).toBe(2)
    const revert = nomad('job', 'revert', '-detach', 'web', '0')
    expect(revert.code).toBe(1)
    expect(revert.stderr).toBe('Error retrieving job versions: Unexpected response code: 500 (job "web" in namespace "default" at version 0 not found)\n')
    // The deployments of pruned versions stay.
    expect((JSON.parse(nomad('job', 'deployments', '-json', 'web').stdout) as Stub[]).map((d) => d.JobVersion)).toContain(0)
  })

  it('the newest stable version is kept when it is the one about to go (swapped with the next oldest)', () => {
    run('v0')
    settle() // version 0 is stable
    sb.setState({ outcome: 'failed' })
    // Failed deployments without auto_revert: versions 1.. stay unstable.
    for (let i = 1; i < 7; i++) { run(`v${i}`); settle() }
    expect(history().filter((v) => v.Stable).map((v) => v.Version)).toEqual([0])
    // 7 versions: the oldest (0) is the newest stable one: 1 goes instead.
    expect(versions()).toEqual([6, 5, 4, 3, 2, 0])
    run('v7')
    // all = [7,6,5,4,3,2,0]: the stable 0 is all[6] again: swapped, 2 goes.
    expect(versions()).toEqual([7, 6, 5, 4, 3, 0])
  })

  it('tagged versions are not counted (2.0.5): tag version 0, register 7 more, and history has 6 untagged + the tagged one', () => {
    run('v0')
    expect(nomad('job', 'tag', 'apply', '-name', 'golden', '-description', 'first', 'web').stdout).toBe('Job version 0 tagged with name "golden"\n')
    for (let i = 1; i < 8; i++) run(`v${i}`)
    expect(versions()).toEqual([7, 6, 5, 4, 3, 2, 0])
    // Untagging puts it back among the counted ones: upsertJobVersion prunes the oldest at once.
    expect(nomad('job', 'tag', 'unset', '-name', 'golden', 'web')).toMatchObject({ code: 0, stdout: 'Tag "golden" removed from job "web"\n', stderr: '' })
    expect(versions()).toEqual([7, 6, 5, 4, 3, 2])
  })

  it('1.6.10: no tags, the same limit', () => {
    sb.setState({ version: '1.6.10' })
    for (let i = 0; i < 8; i++) run(`v${i}`)
    expect(versions()).toEqual([7, 6, 5, 4, 3, 2])
  })
})

describe('job history and inspect: Meta, the task config, the version fields', () => {
  it('history -json: Meta (evaluated, strings), the docker image and the raw_exec command, Stable, Version, SubmitTime, JobModifyIndex, VersionTag', () => {
    run('abc')
    const [v] = history()
    expect(v.Meta).toEqual({ image_tag: 'abc', owner: 'ops', replicas: '2' })
    expect(v.TaskGroups[0].Tasks).toEqual([
      { Name: 'web', Driver: 'docker', Config: { image: 'registry.example/web:abc' } },
      { Name: 'agent', Driver: 'raw_exec', Config: { command: '/root/data/agent' } },
    ])
    expect(v).toMatchObject({ Stable: false, Version: 0, VersionTag: null })
    expect(typeof v.SubmitTime).toBe('number')
    expect(v.JobModifyIndex).toBeGreaterThan(0)
    const job = JSON.parse(nomad('job', 'inspect', '-json', 'web').stdout)
    expect(job).toMatchObject({ Meta: { image_tag: 'abc' }, Version: 0, VersionTag: null, JobModifyIndex: v.JobModifyIndex })
  })

  it('a job without a meta block: Meta is null (a nil map)', () => {
    run('abc', { meta: false })
    expect(history()[0].Meta).toBeNull()
    expect(JSON.parse(nomad('job', 'inspect', '-json', 'web').stdout).Meta).toBeNull()
  })

  it('1.6.10: api.Job has no VersionTag field', () => {
    sb.setState({ version: '1.6.10' })
    run('abc')
    expect('VersionTag' in history()[0]).toBe(false)
    expect('VersionTag' in JSON.parse(nomad('job', 'inspect', '-json', 'web').stdout)).toBe(false)
  })
})

describe('nomad job tag apply / unset (1.9.0+)', () => {
  for (const version of ['2.0.5', '1.9.7']) {
    it(`${version}: outputs, the tag in history and inspect, and the server's errors`, () => {
      sb.setState({ version })
      run('v0')
      run('v1')
      expect(nomad('job', 'tag', 'apply', '-name', 'gold', '-version', '0', 'web')).toEqual({ code: 0, stdout: 'Job version 0 tagged with name "gold"\n', stderr: '' })
      // Without -version: the current version; the current job carries the tag.
      expect(nomad('job', 'tag', 'apply', '-name', 'latest', '-description', 'the one running', 'web').stdout).toBe('Job version 1 tagged with name "latest"\n')
      expect(JSON.parse(nomad('job', 'inspect', '-json', 'web').stdout).VersionTag).toMatchObject({ Name: 'latest', Description: 'the one running' })
      const [v1, v0] = history()
      expect(v0.VersionTag).toMatchObject({ Name: 'gold', Description: '' })
      expect(typeof v0.VersionTag.TaggedTime).toBe('number')
      expect(nomad('job', 'history', 'web').stdout).toContain('Version         = 1\nStable          = false\nSubmit Date     = 2024-01-01T00:00:00Z\nTag Name        = latest\nTag Description = the one running\n')
      expect(v1.VersionTag.Name).toBe('latest')
      // The same name on another version; a version that does not exist; a tag that does not exist.
      expect(nomad('job', 'tag', 'apply', '-name', 'gold', '-version', '1', 'web')).toEqual({ code: 1, stdout: '', stderr: 'Error tagging job version: Unexpected response code: 500 (tag "gold" already exists on a different version of job "web")\n' })
      expect(nomad('job', 'tag', 'apply', '-name', 'x', '-version', '9', 'web').stderr).toBe('Error tagging job version: Unexpected response code: 500 (job "web" version 9 not found)\n')
      expect(nomad('job', 'tag', 'unset', '-name', 'nope', 'web')).toEqual({ code: 1, stdout: '', stderr: 'Error tagging job version: Unexpected response code: 500 (tag "nope" not found on job "web")\n' })
      // A new tag on a tagged version replaces its tag.
      expect(nomad('job', 'tag', 'apply', '-name', 'platinum', '-version', '0', 'web').code).toBe(0)
      expect(history()[1].VersionTag.Name).toBe('platinum')
      // CLI checks.
      expect(nomad('job', 'tag', 'apply', 'web')).toEqual({ code: 1, stdout: '', stderr: "A version tag name is required\nFor additional help try 'nomad job tag apply -help'\n" })
      expect(nomad('job', 'tag', 'unset', '-name', 'gold')).toEqual({ code: 1, stdout: '', stderr: "This command takes one argument: <job>\nFor additional help try 'nomad job tag unset -help'\n" })
      expect(nomad('job', 'tag', 'apply', '-name', 'x', 'nojob')).toEqual({ code: 1, stdout: '', stderr: 'No job(s) with prefix or ID "nojob" found\n' })
    })
  }

  it('1.6.10: `job tag` is not a command: the CLI prints the help of `job` with its subcommands on stdout, exit 1 (mitchellh/cli RunResultHelp)', () => {
    sb.setState({ version: '1.6.10' })
    run('v0')
    const r = nomad('job', 'tag', 'apply', '-name', 'gold', 'web')
    expect(r.code).toBe(1)
    expect(r.stderr).toBe('')
    expect(r.stdout.startsWith('Usage: nomad job <subcommand> [options] [args]\n\n  This command groups subcommands for interacting with jobs.\n')).toBe(true)
    expect(r.stdout).toContain('\n\nSubcommands:\n    allocs            List allocations for a job\n    deployments       List deployments for a job\n')
    expect(r.stdout.endsWith('    validate          Checks if a given job specification is valid\n')).toBe(true)
    expect(r.stdout).not.toContain('action')
    expect(history()[0]).not.toHaveProperty('VersionTag')
  })
})

describe('nomad job revert <job> <tag> (1.9.0+)', () => {
  it('2.0.5: reverts to the tagged version; the new version is a copy without the tag, not stable', () => {
    run('v0')
    settle()
    run('v1')
    settle()
    expect(nomad('job', 'tag', 'apply', '-name', 'gold', '-version', '0', 'web').code).toBe(0)
    expect(nomad('job', 'revert', '-detach', 'web', 'gold').code).toBe(0)
    const [v2, , v0] = history()
    expect(v2).toMatchObject({ Version: 2, Stable: false, VersionTag: null, Meta: { image_tag: 'v0' } })
    expect(v2.TaskGroups[0].Tasks[0].Config.image).toBe('registry.example/web:v0')
    expect(v0.VersionTag.Name).toBe('gold')
    expect(nomad('job', 'revert', 'web', 'silver')).toEqual({ code: 1, stdout: '', stderr: 'Error retrieving job versions: version tag silver not found for job web\n' })
    expect(nomad('job', 'revert', 'web')).toMatchObject({ code: 1, stderr: "This command takes two arguments: <job> <version|tag>\nFor additional help try 'nomad job revert -help'\n" })
  })

  it('1.6.10: a tag is not a version number', () => {
    sb.setState({ version: '1.6.10' })
    run('v0')
    run('v1')
    expect(nomad('job', 'revert', 'web', 'gold')).toEqual({ code: 1, stdout: '', stderr: 'Failed to parse job-version flag: strconv.ParseUint: parsing "gold": invalid syntax\n' })
    expect(nomad('job', 'revert', '-detach', 'web', '0').code).toBe(0)
  })
})

describe('nomad var lock (1.7.0+)', () => {
  const spec = () => { const f = path.join(sb.dir, 'lock.json'); writeFileSync(f, JSON.stringify({ Items: { holder: 'deploy' } })); return f }
  /** Start `nomad var lock ...` in the background. */
  function lockInBackground(...args: string[]) {
    const child = spawn(path.join(sb.bin, 'nomad'), ['var', 'lock', ...args], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = '', stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const done = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((r) => child.on('close', (code, signal) => r({ code, signal, stdout, stderr })))
    return { child, done }
  }
  async function waitFor(file: string) {
    for (let i = 0; i < 100 && !existsSync(file); i++) await sleep(50)
    expect(existsSync(file)).toBe(true)
  }

  it('runs its child while it holds the lock; a second `var lock -early-return` exits 0 without running its child; the lock is released after', async () => {
    const inside = path.join(sb.dir, 'inside.json')
    const script = `nomad var get -out json locks/deploy > ${inside}; nomad var lock -early-return locks/deploy 'echo SECOND-RAN'; echo second=$?; echo child-done`
    const r = spawnSync(path.join(sb.bin, 'nomad'), ['var', 'lock', '-ttl', '2s', '-delay', '1s', 'locks/deploy', `@${spec()}`, script],
      { env: { ...env(), PATH: `${sb.bin}:${process.env.PATH}` }, encoding: 'utf8' })
    expect(r.status).toBe(0)
    expect(r.stdout).toBe('second=0\nchild-done\n')
    expect(r.stderr).toBe('')
    const held = JSON.parse(readFileSync(inside, 'utf8'))
    expect(held).toMatchObject({ Path: 'locks/deploy', Items: { holder: 'deploy' }, Lock: { TTL: '2s', LockDelay: '1s' } })
    expect(held.Lock.ID).toMatch(/^[0-9a-f-]{36}$/)
    // Released: the items stay, the lock goes.
    const after = JSON.parse(nomad('var', 'get', '-out', 'json', 'locks/deploy').stdout)
    expect(after.Items).toEqual({ holder: 'deploy' })
    expect(after).not.toHaveProperty('Lock')
    expect(after.ModifyIndex).toBeGreaterThan(held.ModifyIndex)
  })

  it('a child that fails: "Lock error:" and exit 1, the lock released; -shell=false runs the arguments directly; -verbose', () => {
    const r = nomad('var', 'lock', 'locks/deploy', 'exit 3')
    expect(r).toEqual({ code: 1, stdout: '', stderr: 'Lock error:1 error occurred:\n\t* locks: error executing protected function exit status 3\n\n\n' })
    expect(JSON.parse(nomad('var', 'get', 'locks/deploy').stdout)).not.toHaveProperty('Lock')
    expect(nomad('var', 'lock', '-shell=false', 'locks/deploy', 'echo', 'a;', 'b').stdout).toBe('a; b\n')
    const v = nomad('var', 'lock', '-verbose', '-ttl', '3s', 'locks/deploy', 'true')
    expect(v.code).toBe(0)
    expect(v.stderr).toBe('Writing to path "locks/deploy"\nUsing TTL for the lock of 3s\nAttempting to acquire lock\nVariable locked, ready to execute: true\nReleasing the lock\n')
    // var_lock.go parses -ttl when it means to check -delay.
    expect(nomad('var', 'lock', '-delay', '1s', 'locks/deploy', 'true')).toEqual({ code: 1, stdout: '', stderr: 'Invalid Lock Delay: time: invalid duration ""\n' })
    expect(nomad('var', 'lock', 'locks/deploy')).toEqual({ code: 1, stdout: '', stderr: 'Not enough arguments (expected >2, got 1)\n' })
  })

  it('a write without the lock ID is refused while the lock is held: a conflict with a zero variable', () => {
    const script = `i=$(nomad var get -out go-template -template '{{.ModifyIndex}}' locks/deploy); nomad var put -check-index $i locks/deploy x=1; echo put=$?`
    const r = spawnSync(path.join(sb.bin, 'nomad'), ['var', 'lock', 'locks/deploy', script], { env: { ...env(), PATH: `${sb.bin}:${process.env.PATH}` }, encoding: 'utf8' })
    expect(r.status).toBe(0)
    expect(r.stdout).toBe('put=1\n')
    expect(r.stderr).toMatch(/^Check-and-Set conflict\n\n  Your provided check-index \(\d+\) does not match the server-side index \(0\)\./)
  })

  it('locking an existing variable overwrites its items (VarLockAcquire writes the whole variable)', () => {
    expect(nomad('var', 'put', 'locks/deploy', 'a=1', 'b=2').code).toBe(0)
    expect(nomad('var', 'lock', 'locks/deploy', 'true').code).toBe(0)
    expect(JSON.parse(nomad('var', 'get', 'locks/deploy').stdout).Items).toEqual({})
  })

  it('SIGTERM goes to the child; its death by the signal is a lock error; the lock is released', async () => {
    const started = path.join(sb.dir, 'started')
    const { child, done } = lockInBackground('-ttl', '2s', 'locks/deploy', `touch ${started}; exec sleep 20`)
    await waitFor(started)
    child.kill('SIGTERM')
    const r = await done
    expect(r.code).toBe(1)
    expect(r.stderr).toBe('Lock error:1 error occurred:\n\t* locks: error executing protected function signal: terminated\n\n\n')
    expect(JSON.parse(nomad('var', 'get', 'locks/deploy').stdout)).not.toHaveProperty('Lock')
  })

  it('a SIGKILLed holder stops renewing: the lock expires (2 x TTL: nomad/locks.go), stays for LockDelay, then can be taken', async () => {
    const started = path.join(sb.dir, 'started')
    const pidFile = path.join(sb.dir, 'child.pid')
    const { child, done } = lockInBackground('-ttl', '1s', '-delay', '1s', 'locks/deploy', `echo $$ > ${pidFile}; touch ${started}; exec sleep 30`)
    await waitFor(started)
    // Renewed every 0.7 s: still held after more than 2 x TTL.
    await sleep(2600)
    expect(nomad('var', 'lock', '-early-return', 'locks/deploy', 'echo TAKEN').stdout).toBe('')
    const killedAt = Date.now()
    child.kill('SIGKILL')
    // Its child is orphaned (a SIGKILL is not forwarded): end it, so that the pipes close.
    process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL')
    await done
    let takenAfter = 0
    for (let i = 0; i < 80 && !takenAfter; i++) {
      if (nomad('var', 'lock', '-early-return', 'locks/deploy', 'echo TAKEN').stdout === 'TAKEN\n') takenAfter = Date.now() - killedAt
      else await sleep(100)
    }
    expect(takenAfter).toBeGreaterThan(1000) // the delay at least
    expect(takenAfter).toBeLessThan(3600) // 2 x TTL + delay, and a bit
  }, 15000)

  it('without -early-return, a second holder waits for the first and then runs', async () => {
    const started = path.join(sb.dir, 'started')
    const first = lockInBackground('-ttl', '1s', 'locks/deploy', `touch ${started}; sleep 1`)
    await waitFor(started)
    const second = lockInBackground('-ttl', '1s', 'locks/deploy', 'echo second')
    const r1 = await first.done
    const r2 = await second.done
    expect(r1.code).toBe(0)
    expect(r2).toMatchObject({ code: 0, stdout: 'second\n' })
  }, 10000)

  it('a reader with a token that is not a management token does not see the lock (variables_endpoint.go Read)', async () => {
    sb.setState({ token: 'reader' })
    const started = path.join(sb.dir, 'started')
    const e = { ...env(), NOMAD_TOKEN: 'reader' }
    const child = spawn(path.join(sb.bin, 'nomad'), ['var', 'lock', '-ttl', '2s', 'locks/deploy', `touch ${started}; sleep 2`], { env: e, stdio: 'ignore' })
    await waitFor(started)
    const r = spawnSync(path.join(sb.bin, 'nomad'), ['var', 'get', 'locks/deploy'], { env: e, encoding: 'utf8' })
    expect(JSON.parse(r.stdout)).not.toHaveProperty('Lock')
    await new Promise((res) => child.on('close', res))
  }, 10000)

  it('1.6.10: `var lock` is not a command: the help of `var` on stdout, exit 1, and no child runs', () => {
    sb.setState({ version: '1.6.10' })
    const r = nomad('var', 'lock', 'locks/deploy', 'echo RAN')
    expect(r.code).toBe(1)
    expect(r.stdout.startsWith('Usage: nomad var <subcommand> [options] [args]\n')).toBe(true)
    expect(r.stdout.endsWith('\n\nSubcommands:\n    get      Read a variable\n    init     Create an example variable specification file\n    list     List variable metadata\n    purge    Purge a variable\n    put      Create or update a variable\n')).toBe(true)
    expect(r.stdout).not.toContain('RAN')
  })
})
