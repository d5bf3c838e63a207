// The client nodes of the nomad test double (test/stubs/nomad-nodes.mjs), run directly as the kit
// would run the CLI: `node status`, the scheduler's choice of a node (constraints, drivers, host
// volumes, eligibility), dynamic host volumes (`volume register`, `volume status`, 1.10+), in the
// shapes and with the messages of the real CLI.
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})

type Stub = Record<string, any>
function nomad(args: string[], input?: string) {
  const r = spawnSync(path.join(sb.bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646', NOMAD_CLI_SHOW_HINTS: 'false' }, encoding: 'utf8', input })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}
const run = (...args: string[]) => nomad(args)
const THREE = [
  { Name: 'node-a', Address: '10.0.0.11' },
  { Name: 'node-b', Address: '10.0.0.12' },
  { Name: 'node-c', Address: '10.0.0.13' },
]
const nodeList = (): Stub[] => JSON.parse(run('node', 'status', '-json').stdout)
const idOf = (name: string) => nodeList().find((n) => n.Name === name)!.ID as string
const allocs = (job: string): Stub[] => JSON.parse(run('job', 'allocs', '-json', job).stdout)
const latest = (job: string): Stub => JSON.parse(run('job', 'deployments', '-latest', '-json', job).stdout)

/** A job pinned to the nodes of var.nodes (a list), as the agent's job will be; its group runs `driver`, mounts `volume` if given. */
function pinnedJob({ count = 1, driver = 'raw_exec', volume = '', pin = true } = {}) {
  const file = path.join(sb.dir, 'pinned.nomad')
  writeFileSync(file, `variable "nodes" {
  type    = list(string)
  default = []
}

job "pinned" {
${pin ? `  constraint {
    attribute = "\${node.unique.id}"
    operator  = "set_contains_any"
    value     = join(",", var.nodes)
  }
` : ''}
  group "app" {
    count = ${count}
${volume ? `    volume "data" {
      type   = "host"
      source = "${volume}"
    }
` : ''}
    task "app" {
      driver = "${driver}"
      config {
        command = "/opt/app/bin"
      }
    }
  }
}
`)
  return file
}
const nodesVar = (...names: string[]) => `-var=nodes=${JSON.stringify(names.map(idOf))}`

describe('nomad node status', () => {
  it('the default cluster: one node, node-1, ready and eligible, docker and raw_exec healthy, the two static host volumes', () => {
    const list = nodeList()
    expect(list).toHaveLength(1)
    expect(list[0]).toMatchObject({ ID: '4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', Name: 'node-1', Address: '127.0.0.1', Datacenter: 'dc1', NodePool: 'default', Status: 'ready', SchedulingEligibility: 'eligible', Drain: false })
    expect(list[0].Drivers.docker).toMatchObject({ Detected: true, Healthy: true, HealthDescription: 'Healthy' })
    expect(list[0].Drivers.raw_exec).toMatchObject({ Detected: true, Healthy: true })
    const node = JSON.parse(run('node', 'status', '-json', '4f3c').stdout)
    expect(node.HostVolumes).toEqual({ arangodb_data: { Path: '/opt/arangodb_data', ReadOnly: false, ID: '' }, valkey_data: { Path: '/opt/valkey_data', ReadOnly: false, ID: '' } })
    expect(run('node', 'status').stdout).toBe('ID        Node Pool  DC   Name    Class   Drain  Eligibility  Status\n4f3c2b1a  default    dc1  node-1  <none>  false  eligible     ready\n')
  })

  it('-json without an ID: api.NodeListStub (Drivers always, no HostVolumes, Attributes only with -os), newest CreateIndex first', () => {
    sb.setState({ nodes: THREE })
    const list = nodeList()
    expect(list.map((n) => n.Name)).toEqual(['node-c', 'node-b', 'node-a'])
    expect(Object.keys(list[0])).toEqual(['Address', 'ID', 'Datacenter', 'Name', 'NodeClass', 'NodePool', 'Version', 'Drain', 'SchedulingEligibility', 'Status',
      'StatusDescription', 'Drivers', 'LastDrain', 'CreateIndex', 'ModifyIndex'])
    expect(list[2]).toMatchObject({ Address: '10.0.0.11', Version: '2.0.5' })
    expect(list[0].ID).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-a[0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(nodeList()[0].ID).toBe(list[0].ID) // stable from call to call
    expect(JSON.parse(run('node', 'status', '-json', '-os').stdout)[0].Attributes).toEqual({ 'os.name': 'ubuntu' })
    sb.setState({ nodes: [] })
    expect(run('node', 'status', '-json').stdout).toBe('[]\n')
    expect(run('node', 'status').stdout).toBe('No nodes registered\n')
  })

  it('one node by ID prefix (api.Node, its version\'s fields); the errors for an unknown, an ambiguous, a too short prefix; 403', () => {
    sb.setState({ nodes: [{ Name: 'n1', ID: 'aa11aaaa-0000-4000-8000-000000000001' }, { Name: 'n2', ID: 'aa22aaaa-0000-4000-8000-000000000002' }] })
    const node = JSON.parse(run('node', 'status', '-json', 'aa11').stdout)
    expect(node).toMatchObject({ ID: 'aa11aaaa-0000-4000-8000-000000000001', Name: 'n1', HTTPAddr: '127.0.0.1:4646', GCVolumesOnNodeGC: false, NodeMaxAllocs: 0 })
    expect(run('node', 'status', '-json', 'zz99')).toMatchObject({ code: 1, stderr: 'No node(s) with prefix "zz99" found\n' })
    const both = run('node', 'status', 'aa')
    expect(both.code).toBe(1)
    // Newest first, as api.Nodes.PrefixList sorts them.
    expect(both.stderr).toMatch(/^Prefix matched multiple nodes\n\nID {8}DC {3}Name  Class {3}Drain  Eligibility  Status\naa22aaaa  dc1  n2 .*\naa11aaaa  dc1  n1 /)
    expect(run('node', 'status', 'a')).toMatchObject({ code: 1, stderr: 'Identifier must contain at least two characters.\n' })
    // An odd number of hex digits loses its last one (sanitizeUUIDPrefix).
    expect(run('node', 'status', '-json', 'aa11a').code).toBe(0)
    sb.setState({ version: '1.9.7' })
    expect(JSON.parse(run('node', 'status', '-json', 'aa11').stdout)).not.toHaveProperty('NodeMaxAllocs')
    expect(run('node', 'status', '-ui')).toMatchObject({ code: 1, stderr: 'flag provided but not defined: -ui\n' })
    sb.setState({ mode: 'forbidden' })
    expect(run('node', 'status', '-json')).toMatchObject({ code: 1, stderr: 'Error querying node status: Unexpected response code: 403 (Permission denied)\n' })
    expect(run('node', 'status', '-json', 'aa11')).toMatchObject({ code: 1, stderr: 'Error querying node info: Unexpected response code: 403 (Permission denied)\n' })
  })
})

describe('the scheduler places each allocation on a feasible node', () => {
  it('three nodes, a job constrained to two of them: its allocations are only there, spread over both', () => {
    sb.setState({ nodes: THREE })
    const file = pinnedJob({ count: 2 })
    expect(run('job', 'run', '-detach', nodesVar('node-a', 'node-c'), file).code).toBe(0)
    const placed = allocs('pinned')
    expect(placed.map((a) => a.NodeName).sort()).toEqual(['node-a', 'node-c'])
    expect(new Set(placed.map((a) => a.NodeID))).toEqual(new Set([idOf('node-a'), idOf('node-c')]))
    const one = JSON.parse(run('alloc', 'status', '-json', placed[0].ID).stdout)
    expect(one.NodeID).toBe(placed[0].NodeID)
    // `node status <id>` lists them.
    expect(run('node', 'status', idOf('node-b')).stdout).toMatch(/Allocations\nNo allocations placed/)
    expect(run('node', 'status', placed[0].NodeID).stdout).toContain(placed[0].ID.slice(0, 8))
  })

  it('a job constrained to no node: the plan fails to place it, with the constraint as Nomad writes it; run registers it, its deployment stays running with nothing placed', () => {
    sb.setState({ nodes: THREE })
    const file = pinnedJob({ count: 2 })
    const plan = run('job', 'plan', '-var=nodes=["0000","1111"]', file)
    expect(plan.code).toBe(1)
    expect(plan.stdout).toContain(`Scheduler dry-run:
- WARNING: Failed to place all allocations.
  Task Group "app" (failed to place 2 allocations):
    * Constraint "\${node.unique.id} set_contains_any 0000,1111": 3 nodes excluded by filter

Job Modify Index: 0`)
    expect(run('job', 'run', '-detach', '-var=nodes=["0000"]', file).code).toBe(0)
    for (let i = 0; i < 4; i++) expect(latest('pinned')).toMatchObject({ Status: 'running', TaskGroups: { app: { PlacedAllocs: 0, DesiredTotal: 2 } } })
    expect(allocs('pinned')).toEqual([])
    // The nodes change (here: the state names a node of that ID): the blocked evaluation places them, the deployment goes on.
    sb.setState({ nodes: [...THREE, { Name: 'node-d', ID: '0000aaaa-0000-4000-8000-000000000000' }] })
    expect(allocs('pinned')).toEqual([])
    // 0000 is not the whole ID: set_contains_any compares whole items.
    sb.setState({ nodes: [...THREE, { Name: 'node-d', ID: '0000' }] })
    latest('pinned')
    expect(allocs('pinned').map((a) => a.NodeName)).toEqual(['node-d', 'node-d'])
    for (let i = 0; i < 4 && latest('pinned').Status === 'running';) i++
    expect(latest('pinned').Status).toBe('successful')
  })

  it('ineligible, draining, down nodes are not considered; a node whose driver is unhealthy or undetected is filtered ("missing drivers")', () => {
    sb.setState({ nodes: [
      { Name: 'ineligible', SchedulingEligibility: 'ineligible' },
      { Name: 'draining', Drain: true },
      // Node.Ready (nomad/structs/structs.go@v2.0.5) checks the drain as well as the eligibility.
      { Name: 'draining-eligible', Drain: true, SchedulingEligibility: 'eligible' },
      { Name: 'down', Status: 'down' },
      { Name: 'sick', Drivers: { docker: {}, raw_exec: { Healthy: false } } },
      { Name: 'nodocker', Drivers: { docker: { Detected: false }, raw_exec: { Detected: false } } },
    ] })
    expect(nodeList().find((n) => n.Name === 'draining')).toMatchObject({ Drain: true, SchedulingEligibility: 'ineligible' })
    const rawExec = run('job', 'plan', pinnedJob({ pin: false }))
    expect(rawExec.stdout).toContain('  Task Group "app" (failed to place 1 allocation):\n    * Constraint "missing drivers": 2 nodes excluded by filter\n\n')
    const docker = run('job', 'plan', pinnedJob({ pin: false, driver: 'docker' }))
    expect(docker.stdout).toContain('- All tasks successfully allocated.')
    expect(run('job', 'run', '-detach', pinnedJob({ pin: false, driver: 'docker' })).code).toBe(0)
    expect(allocs('pinned').map((a) => a.NodeName)).toEqual(['sick'])
    // No node at all that may take work: "No nodes were eligible for evaluation".
    sb.setState({ nodes: [{ Name: 'ineligible', SchedulingEligibility: 'ineligible' }] })
    expect(run('job', 'plan', pinnedJob({ pin: false })).stdout).toContain('  Task Group "app" (failed to place 1 allocation):\n    * No nodes were eligible for evaluation\n\nJob Modify Index')
  })

  it('nodes of one computed class share the verdict of the group\'s checks: after an unhealthy one, the next is "computed class ineligible"', () => {
    sb.setState({ nodes: [{ Name: 'sick', ComputedClass: 'v1:1', Drivers: { raw_exec: { Healthy: false } } }, { Name: 'twin', ComputedClass: 'v1:1' }] })
    expect(run('job', 'plan', pinnedJob({ pin: false })).stdout).toContain('    * Constraint "missing drivers": 1 nodes excluded by filter\n    * Constraint "computed class ineligible": 1 nodes excluded by filter\n')
    // Each its own class (the default): the twin takes it.
    sb.setState({ nodes: [{ Name: 'sick', Drivers: { raw_exec: { Healthy: false } } }, { Name: 'twin' }] })
    expect(run('job', 'plan', pinnedJob({ pin: false })).stdout).toContain('- All tasks successfully allocated.')
  })

  it('a group that mounts a host volume goes to the node that has it (a static one from the client config)', () => {
    sb.setState({ nodes: [...THREE.slice(0, 2), { ...THREE[2], HostVolumes: { shared: { Path: '/srv/shared' } } }] })
    const file = pinnedJob({ pin: false, volume: 'shared', count: 2 })
    expect(run('job', 'run', '-detach', file).code).toBe(0)
    expect(allocs('pinned').map((a) => a.NodeName)).toEqual(['node-c', 'node-c'])
    const none = run('job', 'plan', pinnedJob({ pin: false, volume: 'elsewhere' }))
    expect(none.stdout).toContain('    * Constraint "missing compatible host volumes": 3 nodes excluded by filter')
  })

  it('a constraint value must be a string: a list variable needs join(",", ...) (jobspec2: hcldec cty.String)', () => {
    const file = path.join(sb.dir, 'bad.nomad')
    writeFileSync(file, 'variable "nodes" {\n  type    = list(string)\n  default = ["a"]\n}\n\njob "bad" {\n  constraint {\n    attribute = "${node.unique.id}"\n    operator  = "set_contains_any"\n    value     = var.nodes\n  }\n  group "g" {\n    task "t" {\n      driver = "docker"\n    }\n  }\n}\n')
    const r = run('job', 'plan', file)
    expect(r.code).toBe(255)
    expect(r.stderr).toBe(`Error getting job struct: Error parsing job file from ${file}:\n${file}:10,17-26: Incorrect attribute value type; Inappropriate value for attribute "value": string required.\n`)
  })

  it('the placement knob still overrides the plan (one node: "1 nodes excluded by filter")', () => {
    sb.setState({ placement: 'missing compatible host volumes' })
    const r = run('job', 'plan', '-var=binary_path=/x', '-var=nodes=4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59', path.join(root, 'jobs/agent.nomad'))
    expect(r.stdout).toContain('- WARNING: Failed to place all allocations.\n  Task Group "agent" (failed to place 1 allocation):\n    * Constraint "missing compatible host volumes": 1 nodes excluded by filter\n\nJob Modify Index: 0')
  })
})

describe('dynamic host volumes (1.10+): nomad volume register, nomad volume status -type host', () => {
  const spec = (node: string, hostPath: string, name = 'data') => `type      = "host"\nname      = "${name}"\nnode_id   = "${node}"\nhost_path = "${hostPath}"\n\ncapability {\n  access_mode     = "single-node-writer"\n  attachment_mode = "file-system"\n}\n`
  const register = (text: string, ...flags: string[]) => nomad(['volume', 'register', ...flags, '-'], text)
  const volumes = (): Stub[] => {
    const r = run('volume', 'status', '-type', 'host', '-json')
    return r.stdout ? JSON.parse(r.stdout) : []
  }

  it('2.0.5: register prints the new ID; the list shows it (pending, then ready once the client has sent its fingerprint); the same again without -id is refused by the client; -id updates it in place, another host_path too', () => {
    sb.setState({ nodes: THREE })
    // No volume yet: nothing on stdout, the message on stderr, exit 0.
    expect(run('volume', 'status', '-type', 'host', '-json')).toEqual({ code: 0, stdout: '', stderr: 'No dynamic host volumes\n' })
    const b = idOf('node-b')
    const r = register(spec(b, '/srv/data'))
    expect(r.code).toBe(0)
    const id = r.stdout.match(/^Registered host volume data with ID ([0-9a-f-]{36})\n$/)![1]
    const [first] = volumes()
    expect(first).toEqual({ Namespace: 'default', ID: id, Name: 'data', PluginID: '', NodePool: 'default', NodeID: b, CapacityBytes: 0, State: 'pending',
      CreateIndex: expect.any(Number), CreateTime: expect.any(Number), ModifyIndex: expect.any(Number), ModifyTime: expect.any(Number) })
    expect(volumes()[0].State).toBe('ready')
    expect(JSON.parse(run('volume', 'status', '-type', 'host', '-json', 'data').stdout)).toMatchObject({ ID: id, HostPath: '/srv/data', RequestedCapabilities: [{ AccessMode: 'single-node-writer', AttachmentMode: 'file-system' }] })
    // The node lists it among its host volumes, with its ID.
    expect(JSON.parse(run('node', 'status', '-json', b).stdout).HostVolumes.data).toEqual({ Path: '/srv/data', ReadOnly: false, ID: id })
    // Again, the same spec: a new ID under a name the client already has.
    const again = register(spec(b, '/srv/data'))
    expect(again).toMatchObject({ code: 1, stdout: '', stderr: 'Error registering volume: Unexpected response code: 500 (HostVolume.Register error: volume name already exists on this node)\n' })
    // Another host_path, same refusal; with -id it is an update of the same volume (same ID, new path, still ready).
    expect(register(spec(b, '/srv/other')).stderr).toContain('volume name already exists on this node')
    expect(register(spec(b, '/srv/other'), '-id', id)).toMatchObject({ code: 0, stdout: `Registered host volume data with ID ${id}\n` })
    expect(volumes()).toHaveLength(1)
    expect(JSON.parse(run('volume', 'status', '-type', 'host', '-json', id.slice(0, 8)).stdout)).toMatchObject({ ID: id, HostPath: '/srv/other', State: 'ready' })
    // The same name on another node is another volume; the name alone is then ambiguous.
    expect(register(spec(idOf('node-a'), '/srv/data')).code).toBe(0)
    expect(volumes().map((v) => v.NodeID).sort()).toEqual([idOf('node-a'), b].sort())
    expect(run('volume', 'status', '-type', 'host', '-json', '-node', b).stdout).toContain(id)
    expect(run('volume', 'status', '-type', 'host', '-json', '-node', b).stdout).not.toContain(idOf('node-a'))
    const both = run('volume', 'status', '-type', 'host', 'data')
    expect(both.code).toBe(1)
    expect(both.stderr).toMatch(/^Prefix matched multiple host volumes\n\nID {8}Name  Namespace  Plugin ID  Node ID   Node Pool  State\n/)
  })

  it('-id without a capability block: the update leaves the volume with no capability, and no group can mount it any more (CanonicalizeForRegister)', () => {
    sb.setState({ nodes: THREE, volumeReadyAfter: 0 })
    const c = idOf('node-c')
    const id = register(spec(c, '/srv/data')).stdout.trim().split(' ').at(-1)!
    const file = pinnedJob({ pin: false, volume: 'data' })
    expect(run('job', 'plan', file).stdout).toContain('- All tasks successfully allocated.')
    expect(register(`type = "host"\nname = "data"\nnode_id = "${c}"\nhost_path = "/srv/data"\n`, '-id', id).code).toBe(0)
    expect(JSON.parse(run('volume', 'status', '-type', 'host', '-json', id).stdout).RequestedCapabilities).toBeNull()
    expect(run('job', 'plan', file).stdout).toContain('* Constraint "missing compatible host volumes": 3 nodes excluded by filter')
  })

  it('the errors: an unknown node, no node_id, no host_path, a directory the client does not have, an unknown -id', () => {
    sb.setState({ nodes: [{ Name: 'n', ID: 'aa11aaaa-0000-4000-8000-000000000001', MissingPaths: ['/srv/missing'] }] })
    const unknown = register(spec('bb22bbbb-0000-4000-8000-000000000002', '/srv/data'))
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^Error registering volume: Unexpected response code: 500 \(validating volume "[0-9a-f-]{36}" against state failed: node "bb22bbbb-0000-4000-8000-000000000002" does not exist\)\n$/)
    expect(register('type = "host"\nname = "data"\nhost_path = "/srv"\n')).toMatchObject({ code: 1, stderr: 'Node ID is required for registering\n' })
    expect(register('type = "host"\nname = "data"\nnode_id = "aa11aaaa-0000-4000-8000-000000000001"\n').stderr).toBe('Error registering volume: Unexpected response code: 500 (cannot register volume: host path is required)\n')
    expect(register(spec('aa11aaaa-0000-4000-8000-000000000001', '/srv/missing')).stderr)
      .toBe('Error registering volume: Unexpected response code: 500 (HostVolume.Register error: could not verify host path for "data": stat /srv/missing: no such file or directory)\n')
    expect(register(spec('aa11aaaa-0000-4000-8000-000000000001', '/srv/data'), '-id', 'nope')).toMatchObject({ code: 1, stderr: 'Could not update existing volume: no volumes with prefix or ID "nope" found\n' })
    // The JSON form of the spec is read as well (HCL1 parses JSON).
    expect(register(JSON.stringify({ type: 'host', name: 'j', node_id: 'aa11aaaa-0000-4000-8000-000000000001', host_path: '/srv/j' })).code).toBe(0)
    expect(volumes().map((v) => v.Name)).toEqual(['j'])
  })

  it('1.9.7 and 1.6.10: the CLI knows only CSI volumes (register: "unknown volume type"; status ignores -type and lists CSI volumes); a 2.0.5 CLI against 1.9.7 servers gets a 404', () => {
    for (const version of ['1.9.7', '1.6.10']) {
      sb.setState({ version })
      expect(register(spec(idOf('node-1'), '/srv/data'))).toMatchObject({ code: 1, stdout: '', stderr: 'Error unknown volume type: host\n' })
      expect(run('volume', 'status', '-type', 'host', '-json')).toEqual({ code: 0, stdout: '', stderr: 'No CSI volumes\n' })
      expect(run('volume', 'status', '-type', 'host', '-node', 'x').stderr).toMatch(/^flag provided but not defined: -node\n/)
      expect(register(spec(idOf('node-1'), '/srv/data'), '-id', 'x').stderr).toMatch(/^flag provided but not defined: -id\n/)
    }
    sb.setState({ version: '1.9.7', cliVersion: '2.0.5' })
    expect(register(spec(idOf('node-1'), '/srv/data'))).toMatchObject({ code: 1, stderr: 'Error registering volume: Unexpected response code: 404\n' })
    expect(run('volume', 'status', '-type', 'host', '-json')).toEqual({ code: 0, stdout: '', stderr: 'No dynamic host volumes\n' })
  })

  it('a job that mounts a dynamic volume waits for it: blocked while it is pending, placed on its node once ready', () => {
    sb.setState({ nodes: THREE, volumeReadyAfter: 2 })
    const b = idOf('node-b')
    expect(register(spec(b, '/srv/data')).code).toBe(0)
    const file = pinnedJob({ pin: false, volume: 'data' })
    expect(run('job', 'run', '-detach', file).code).toBe(0)
    expect(allocs('pinned')).toEqual([])
    let d = latest('pinned')
    for (let i = 0; i < 6 && d.Status === 'running'; i++) d = latest('pinned')
    expect(d.Status).toBe('successful')
    expect(allocs('pinned').map((a) => a.NodeID)).toEqual([b])
    // The volume lists the allocation that claims it.
    expect(JSON.parse(run('volume', 'status', '-type', 'host', '-json', 'data').stdout).Allocations.map((a: Stub) => a.NodeID)).toEqual([b])
    // A dynamic volume of the same name as a static one takes its place on that node.
    sb.setState({ nodes: [...THREE.slice(0, 2), { ...THREE[2], HostVolumes: { data: { Path: '/static/data' } } }] })
    const c = idOf('node-c')
    expect(register(spec(c, '/srv/dyn')).code).toBe(0)
    expect(JSON.parse(run('node', 'status', '-json', c).stdout).HostVolumes.data).toEqual({ Path: '/srv/dyn', ReadOnly: false, ID: expect.stringMatching(/^[0-9a-f-]{36}$/) })
    // ready at once: the node already had a host volume of that name.
    expect(volumes().find((v) => v.NodeID === c)!.State).toBe('ready')
  })
})
