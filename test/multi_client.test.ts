// A cluster of more than one client (the issue "the agent runs where its binary is, and host volumes need
// no hand edit nor restart on Nomad 1.10+"): the nomad double plays a 2.0.5 cluster of three clients,
// and the real test sshd answers as two hosts, 127.0.0.1 and 127.0.0.2 (both loopback: one machine,
// one filesystem, two addresses, two connections).
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { AGENT_SHA, jsonResult, root, sandbox, stageBinary, type Sandbox } from './helpers.ts'
import { ensureUsers, goEnv, requireTools, spy, startSshd, userDir, USERS, type Sshd } from './sshd.ts'

const FIXTURE = path.join(root, 'test/fixtures/agent')
const CLIENTS = [{ Name: 'client-1', Address: '127.0.0.1' }, { Name: 'client-2', Address: '127.0.0.2' }, { Name: 'client-3', Address: '127.0.0.3' }]
let sshd: Sshd
let sb: Sandbox
let ssh: ReturnType<typeof spy>
let base: string
const bases: string[] = []

beforeAll(async () => {
  requireTools()
  ensureUsers()
  sshd = await startSshd()
})
afterAll(async () => {
  await sshd?.stop()
})
beforeEach(() => {
  sb = sandbox()
  sb.setState({ nodes: CLIENTS })
  ssh = spy(sb, 'ssh')
  base = userDir(USERS.dash)
  bases.push(base)
})
afterEach(() => {
  for (const b of bases.splice(0)) rmSync(b, { recursive: true, force: true })
})

const nomad = (...args: string[]) => execFileSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
const nodeId = (name: string) => (JSON.parse(nomad('node', 'status', '-json')) as { ID: string; Name: string }[]).find((n) => n.Name === name)!.ID
/** Two hosts, the agent's settings (the same for deploy_binary and deploy_nomad). */
const two = () => ({ ...sshd.env(USERS.dash), DEPLOY_SSH_HOST: undefined, DEPLOY_SSH_HOSTS: '127.0.0.1, 127.0.0.2', AGENT_SOURCE_DIR: FIXTURE, AGENT_REMOTE_DIR: `${base}/data`, ...goEnv })
/** The addresses sshd was reached on since `from` (its log: "Connection from A port P on B port Q"). */
const reachedOn = (from: number) => sshd.read().split('\n').slice(from).flatMap((l) => l.match(/^Connection from \S+ port \d+ on (\S+) port/)?.[1] ?? [])

describe('the agent: its binary on two clients, the job pinned to their nodes', () => {
  it('deploy_binary reaches both hosts (one connection each), deploy_nomad constrains the job to their two nodes and Nomad places it there; a second run changes nothing', async () => {
    const logFrom = sshd.read().split('\n').length - 1 // the log ends with a newline: its next line is the last element
    let r = await sb.run('deploy_binary.mts', ['--json'], { env: two() })
    expect(r.code, r.stderr).toBe(0)
    expect(reachedOn(logFrom).sort()).toEqual(['127.0.0.1', '127.0.0.2'])
    let result = await jsonResult(r.stdout)
    expect(result.nodes).toEqual([{ host: '127.0.0.1', id: nodeId('client-1'), name: 'client-1' }, { host: '127.0.0.2', id: nodeId('client-2'), name: 'client-2' }])
    // One filesystem behind both addresses: the first host installs it, the second finds it there (checked under its lock).
    expect(result.hosts.map((h: any) => [h.host, h.outcome])).toEqual([['127.0.0.1', 'done'], ['127.0.0.2', 'unchanged']])
    expect(r.stderr).toContain(`127.0.0.1: Nomad node client-1 (${nodeId('client-1').slice(0, 8)}), ready, eligible, raw_exec healthy`)
    // One release file, named by its content, recorded as held by both hosts.
    const sum = result.binary.sha256 as string
    expect(result.binary.path).toBe(`${base}/data/agent-${sum}`)
    expect(readdirSync(`${base}/data`)).toEqual([`agent-${sum}`])
    expect(execFileSync(result.binary.path, { encoding: 'utf8' })).toBe('agent fixture-1\n')
    expect(JSON.parse(sb.readState().vars['nomad/jobs/agent-economique/releases'].Items.binaries).map((b: any) => [b.sha256, b.hosts])).toEqual([[sum, ['127.0.0.1', '127.0.0.2']]])

    r = await sb.run('deploy_nomad.mts', ['--json'], { env: two() })
    expect(r.code, r.stderr).toBe(0)
    const ids = `${nodeId('client-1')},${nodeId('client-2')}`
    // The exact release file the record names (its sha256 and commit in the job's meta), on those two nodes.
    const plans = sb.commands('nomad').filter((c) => c.startsWith('job plan '))
    expect(plans).toEqual([expect.stringMatching(new RegExp(`^job plan -var=binary_path=${base}/data/agent-${sum} -var=binary_sha256=${sum} -var=commit=\\S* -var=nodes=${ids} ${path.join(root, 'jobs/agent.nomad')}$`))])
    const allocs = sb.readState().jobs['agent-economique'].allocs as { NodeName: string; DesiredStatus: string }[]
    expect(allocs.filter((a) => a.DesiredStatus === 'run').map((a) => a.NodeName)).toEqual([expect.stringMatching(/^client-[12]$/)])

    const calls = sb.commands('nomad').length
    r = await sb.run('deploy_binary.mts', ['--json'], { env: two() })
    result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'unchanged' })
    expect(result.hosts.map((h: any) => h.outcome)).toEqual(['unchanged', 'unchanged'])
    r = await sb.run('deploy_nomad.mts', [], { env: two() })
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('agent-economique is already up to date (the plan shows no change): nothing was run')
    expect(sb.commands('nomad').slice(calls).filter((c) => c.startsWith('job run'))).toEqual([])
  })

  it('the constraint is what pins it: the plan places the job only on a node the list names, and on none when none of the list exists', () => {
    const plan = (nodes: string) => spawnSync(path.join(sb.bin, 'nomad'), ['job', 'plan', '-var=binary_path=/x', `-var=nodes=${nodes}`, path.join(root, 'jobs/agent.nomad')],
      { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' }).stdout
    expect(plan(nodeId('client-3'))).toContain('All tasks successfully allocated.')
    const unknown = '00000000-0000-4000-8000-000000000000'
    expect(plan(unknown)).toContain(`- WARNING: Failed to place all allocations.\n  Task Group "agent" (failed to place 1 allocation):\n    * Constraint "\${node.unique.id} set_contains_any ${unknown}": 3 nodes excluded by filter`)
  })

  it.each([
    ['a host that is no client of the cluster', CLIENTS, '127.0.0.1,127.0.0.4', /127\.0\.0\.4 is not a client of the Nomad cluster at http:\/\/127\.0\.0\.1:4646: no node has that address or name \(nodes: client-1 \(127\.0\.0\.1\), client-2 \(127\.0\.0\.2\), client-3 \(127\.0\.0\.3\)\)/],
    ['an ineligible client', [CLIENTS[0], { ...CLIENTS[1], SchedulingEligibility: 'ineligible' }], '127.0.0.1,127.0.0.2', /127\.0\.0\.2 \(node client-2, [0-9a-f]{8}\) is not eligible for new allocations: nomad node eligibility -enable [0-9a-f]{8} \(by hand/],
    ['a draining client', [CLIENTS[0], { ...CLIENTS[1], Drain: true }], '127.0.0.1,127.0.0.2', /127\.0\.0\.2 \(node client-2, [0-9a-f]{8}\) is draining/],
    ['a client that is down', [CLIENTS[0], { ...CLIENTS[1], Status: 'down' }], '127.0.0.1,127.0.0.2', /127\.0\.0\.2 \(node client-2, [0-9a-f]{8}\) is down, not ready/],
    ['a client without raw_exec', [CLIENTS[0], { ...CLIENTS[1], Drivers: { docker: {}, raw_exec: { Detected: true, Healthy: false } } }], '127.0.0.1,127.0.0.2', /127\.0\.0\.2 \(node client-2, [0-9a-f]{8}\) has no healthy raw_exec driver \(disabled\): enable it in the client configuration/],
    ['a host that matches two nodes', [CLIENTS[0], { Name: 'client-1b', Address: '127.0.0.1' }], '127.0.0.1', /127\.0\.0\.1 matches 2 Nomad nodes \(client-1 [0-9a-f]{8}, client-1b [0-9a-f]{8}\): give the host by the address of one of them/],
  ])('%s: deploy_binary and deploy_nomad refuse it (exit 2) before any ssh, build or run', async (_what, nodes, hosts, message) => {
    sb.setState({ nodes })
    const env = { ...two(), DEPLOY_SSH_HOSTS: hosts }
    const go = spy(sb, 'go')
    let r = await sb.run('deploy_binary.mts', [], { env })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(ssh.argv()).toEqual([])
    expect(go.calls()).toEqual([])
    r = await sb.run('deploy_nomad.mts', [], { env })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(sb.commands('nomad').filter((c) => c.startsWith('job '))).toEqual([])
  })

  it('a host given by name is matched to the node of that name when its address says nothing (the rule\'s second half)', async () => {
    stageBinary(sb, AGENT_SHA, { hosts: ['client-2.invalid'] })
    const r = await sb.run('deploy_nomad.mts', ['--plan', '--json'], { env: { DEPLOY_SSH_HOST: 'client-2.invalid' } })
    expect(r.code, r.stderr).toBe(0)
    expect((await jsonResult(r.stdout)).nodes).toEqual([{ host: 'client-2.invalid', id: nodeId('client-2'), name: 'client-2' }])
  })
})

describe('host volumes on Nomad 2.0: made over ssh, registered through the API', () => {
  const arango = () => ({ ...sshd.env(USERS.dash), ARANGO_DATA_DIR: `${base}/arangodb_data` })

  // Dynamic host volumes exist from 1.10.0 (command/volume_register_host.go@v1.10.5 and @v2.0.5).
  it.each(['1.10.5', '2.0.5'])('Nomad %s: the directory is created and registered as the dynamic host volume of client-1 (no client restart), ArangoDB is placed on it; a second run changes nothing', async (version) => {
    sb.setState({ version })
    const dir = `${base}/arangodb_data`
    let r = await sb.run('deploy_arango_volume.mts', ['--json'], { env: arango() })
    expect(r.code, r.stderr).toBe(0)
    expect(statSync(dir).isDirectory()).toBe(true)
    let result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'done', acted: true, hosts: [{ host: '127.0.0.1', outcome: 'done' }] })
    const vols = sb.readState().hostVolumes as { ID: string; Name: string; NodeID: string; HostPath: string }[]
    expect(vols.map((v) => [v.Name, v.NodeID, v.HostPath])).toEqual([['arangodb_data', nodeId('client-1'), dir]])
    expect(r.stderr).toContain(`registered ${dir} as the host volume "arangodb_data" of Nomad node client-1 (ID ${vols[0].ID}): no client restart needed`)
    expect(r.stderr).not.toContain('Add by hand')
    expect(sb.commands('nomad').filter((c) => c.startsWith('volume register'))).toHaveLength(1)

    r = await sb.run('deploy_arango_volume.mts', ['--json'], { env: arango() })
    result = await jsonResult(r.stdout)
    expect(result).toMatchObject({ outcome: 'unchanged' })
    expect(result.message).toContain(`Nomad node client-1 already has the dynamic host volume "arangodb_data" at ${dir}`)
    expect(sb.commands('nomad').filter((c) => c.startsWith('volume register'))).toHaveLength(1)

    // ArangoDB asks for the volume by name: Nomad places it on client-1, the only node that has it.
    nomad('var', 'put', '-out=none', 'nomad/jobs/arangodb-agent-economique', 'root_password=test-arango-password-0001')
    r = await sb.run('deploy_arangodb.mts')
    expect(r.code, r.stderr).toBe(0)
    const allocs = sb.readState().jobs['arangodb-agent-economique'].allocs as { NodeName: string }[]
    expect(allocs.map((a) => a.NodeName)).toEqual(['client-1'])
  })

  it('a client that declares the volume in its configuration (static), on the same path: nothing registered, said so', async () => {
    const dir = `${base}/arangodb_data`
    sb.setState({ nodes: [{ ...CLIENTS[0], HostVolumes: { arangodb_data: { Path: dir } } }] })
    const r = await sb.run('deploy_arango_volume.mts', [], { env: arango() })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`Nomad node client-1 declares "arangodb_data" at ${dir} in its client configuration (a static host volume): nothing registered`)
    expect(sb.commands('nomad').filter((c) => c.startsWith('volume register'))).toEqual([])
  })

  it('the name already registered (dynamic) on another path: refused (exit 2) before anything is created', async () => {
    const spec = `type = "host"\nname = "arangodb_data"\nnode_id = "${nodeId('client-1')}"\nhost_path = "/srv/old-arangodb"\ncapability {\n  access_mode = "single-node-writer"\n  attachment_mode = "file-system"\n}\n`
    execFileSync(path.join(sb.bin, 'nomad'), ['volume', 'register', '-'], { input: spec, env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' } })
    const r = await sb.run('deploy_arango_volume.mts', [], { env: arango() })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/127\.0\.0\.1 \(node client-1\) already has the dynamic host volume "arangodb_data" at \/srv\/old-arangodb, not .*\/arangodb_data: set ARANGO_DATA_DIR=\/srv\/old-arangodb, or deregister it by hand first/)
    expect(existsSync(`${base}/arangodb_data`)).toBe(false)
    expect(ssh.argv()).toEqual([])
  })

  it('a static volume of the name on another path: refused too (registering would replace it on that node)', async () => {
    sb.setState({ nodes: [{ ...CLIENTS[0], HostVolumes: { arangodb_data: { Path: '/opt/arangodb_data' } } }] })
    const r = await sb.run('deploy_arango_volume.mts', [], { env: arango() })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/already has the static host volume "arangodb_data" at \/opt\/arangodb_data, not .*: set ARANGO_DATA_DIR=\/opt\/arangodb_data, or change the client configuration by hand/)
  })

  it('two hosts: one directory and one registration per client node, reported per host', async () => {
    const r = await sb.run('deploy_valkey_volume.mts', ['--json'], { env: { ...sshd.env(USERS.dash), DEPLOY_SSH_HOST: undefined, DEPLOY_SSH_HOSTS: '127.0.0.1,127.0.0.2', VALKEY_DATA_DIR: `${base}/valkey_data` } })
    expect(r.code, r.stderr).toBe(0)
    const vols = sb.readState().hostVolumes as { NodeID: string; Name: string }[]
    expect(vols.map((v) => v.NodeID).sort()).toEqual([nodeId('client-1'), nodeId('client-2')].sort())
    const result = await jsonResult(r.stdout)
    expect(result.hosts.map((h: any) => h.host)).toEqual(['127.0.0.1', '127.0.0.2'])
    // Valkey asks for valkey_data by name: Nomad places it on one of the two nodes that have it, never on client-3.
    const valkey = await sb.run('deploy_valkey.mts', [], { env: { VALKEY_DATA_DIR: `${base}/valkey_data` } })
    expect(valkey.code, valkey.stderr).toBe(0)
    const allocs = sb.readState().jobs.valkey.allocs as { NodeName: string; DesiredStatus: string }[]
    expect(allocs.filter((a) => a.DesiredStatus === 'run').map((a) => a.NodeName)).toEqual([expect.stringMatching(/^client-[12]$/)])
  })

  it('on Nomad 1.6: no registration, the static block to add by hand, as before', async () => {
    sb.setState({ version: '1.6.10' })
    const r = await sb.run('deploy_arango_volume.mts', [], { env: arango() })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('Nomad 1.6.10 has no dynamic host volumes (1.10+): declare it by hand, once per client.')
    expect(r.stdout).toContain('host_volume "arangodb_data" {')
    expect(sb.commands('nomad').filter((c) => c.startsWith('volume '))).toEqual([])
    expect(readdirSync(base)).toEqual(['arangodb_data'])
  })
})
