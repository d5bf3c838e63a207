// The Agent Economique job files, parsed by HashiCorp's own HCL2 parser (@cdktf/hcl2json), checked
// for what issue 2 and the seed require; and the -var flags the deploy scripts pass, checked against
// the variables the job files declare.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { parseHcl, root, sandbox } from './helpers.ts'

const ARANGO = path.join(root, 'jobs/arangodb.nomad')
const AGENT = path.join(root, 'jobs/agent.nomad')

/** The only job, its only group and its only task (every block of the parsed JSON is a list). */
function only(parsed: any, job: string) {
  expect(Object.keys(parsed.job)).toEqual([job])
  const j = parsed.job[job][0]
  const groups = Object.entries(j.group) as [string, any[]][]
  expect(groups).toHaveLength(1)
  const group = groups[0][1][0]
  const tasks = Object.entries(group.task) as [string, any[]][]
  expect(tasks).toHaveLength(1)
  return { job: j, group, task: tasks[0][1][0] }
}

const seconds = (d: string) => Number(d.match(/^(\d+)([smh])$/)![1]) * { s: 1, m: 60, h: 3600 }[d.slice(-1) as 's' | 'm' | 'h']!

describe('jobs/arangodb.nomad', () => {
  let parsed: any
  let text: string
  let j: ReturnType<typeof only>
  beforeAll(async () => {
    text = readFileSync(ARANGO, 'utf8')
    parsed = await parseHcl(ARANGO)
    j = only(parsed, 'arangodb-agent-economique')
  })

  it('is the Docker service job "arangodb-agent-economique"', () => {
    expect(j.job.type).toBe('service')
    expect(j.task.driver).toBe('docker')
  })

  it('runs a pinned ArangoDB image: a full version tag, never latest', () => {
    const image: string = j.task.config[0].image
    expect(image).toMatch(/^(arangodb\/arangodb|arangodb):\d+\.\d+\.\d+(\.\d+)?$/)
    expect(text).not.toMatch(/:latest\b/)
  })

  it('keeps its data on the host volume arangodb_data, mounted at /var/lib/arangodb3', () => {
    expect(j.group.volume.arangodb_data[0]).toMatchObject({ type: 'host', source: 'arangodb_data' })
    expect(j.group.volume.arangodb_data[0].read_only ?? false).toBe(false)
    expect(j.task.volume_mount).toHaveLength(1)
    expect(j.task.volume_mount[0]).toMatchObject({ volume: 'arangodb_data', destination: '/var/lib/arangodb3' })
    expect(j.task.volume_mount[0].read_only ?? false).toBe(false)
  })

  it('serves on port 8529, registered as a Consul service with a health check', () => {
    const ports = j.group.network[0].port
    const [label, port] = Object.entries(ports)[0] as [string, any[]]
    expect(port[0].to ?? port[0].static).toBe(8529)
    expect(j.task.config[0].ports).toContain(label)
    const service = j.group.service?.[0] ?? j.task.service?.[0]
    expect(service.port).toBe(label)
    const check = service.check[0]
    expect(check.interval).toBeTruthy()
    expect(check.timeout).toBeTruthy()
    if (check.type === 'http') expect(check.path).toBe('/_api/version')
    else expect(check.type).toBe('tcp')
  })

  it('sets resources, and an update block with auto_revert and consistent deadlines', () => {
    expect(j.task.resources[0].cpu).toBeGreaterThan(0)
    expect(j.task.resources[0].memory).toBeGreaterThan(0)
    const update = j.group.update?.[0] ?? j.job.update?.[0]
    expect(update.auto_revert).toBe(true)
    expect(seconds(update.progress_deadline)).toBeGreaterThan(seconds(update.healthy_deadline))
  })

  it('reads the root password from the Nomad Variable through a nomadVar template into a secrets/ env file', () => {
    expect(j.task.template).toHaveLength(1)
    const t = j.task.template[0]
    expect(t.env).toBe(true)
    expect(t.destination).toMatch(/^secrets\//)
    expect(t.data.trim()).toBe('{{ with nomadVar "nomad/jobs/arangodb-agent-economique" }}ARANGO_ROOT_PASSWORD={{ .root_password | toJSON }}{{ end }}')
  })

  it('holds no password: no literal, no env entry, no variable that could carry one', () => {
    // Outside the template's data, the password variable is never named (so never given a value).
    const withoutTemplate = text.replace(/data\s*=\s*<<-?EOT[\s\S]*?EOT/, '')
    expect(withoutTemplate).not.toMatch(/ARANGO_ROOT_PASSWORD\s*=/)
    expect(text).not.toMatch(/ARANGO_NO_AUTH|ARANGO_RANDOM_ROOT_PASSWORD/)
    for (const env of j.task.env ?? []) for (const k of Object.keys(env)) expect(k).not.toMatch(/PASS|SECRET|TOKEN/i)
    for (const [name, [v]] of Object.entries(parsed.variable ?? {}) as [string, any[]][]) {
      expect(name).not.toMatch(/pass|secret|token|key/i)
      expect(v.default, `variable "${name}" needs a default: deploy_arangodb passes no -var`).toBeDefined()
    }
    expect(text).not.toMatch(/\$\{var\.[^}]*(pass|secret)/i)
  })
})

describe('jobs/agent.nomad', () => {
  let parsed: any
  let j: ReturnType<typeof only>
  beforeAll(async () => {
    parsed = await parseHcl(AGENT)
    j = only(parsed, 'agent-economique')
  })

  it('runs the uploaded binary with raw_exec, its path an HCL2 variable', () => {
    expect(j.job.type).toBe('service')
    expect(j.task.driver).toBe('raw_exec')
    expect(j.task.config[0].command).toBe('${var.binary_path}')
    expect(parsed.variable.binary_path[0].type).toBe('${string}')
  })

  it('says in its meta which release it runs: the sha256 and the commit deploy_nomad passes', () => {
    expect(j.job.meta[0]).toEqual({ binary_sha256: '${var.binary_sha256}', commit: '${var.commit}' })
    expect(parsed.variable.binary_sha256[0].default).toBe('')
    expect(parsed.variable.commit[0].default).toBe('')
  })

  it('mounts no host volume (raw_exec cannot)', () => {
    expect(j.group.volume).toBeUndefined()
    expect(j.task.volume_mount).toBeUndefined()
    expect(readFileSync(AGENT, 'utf8')).not.toMatch(/^\s*(volume|volume_mount)\s*("|\{)/m)
  })

  it('has an update block with auto_revert', () => {
    const update = j.group.update?.[0] ?? j.job.update?.[0]
    expect(update.auto_revert).toBe(true)
    expect(seconds(update.progress_deadline)).toBeGreaterThan(seconds(update.healthy_deadline))
  })
})

describe('the -var flags the deploy scripts pass', () => {
  it('every -var deploy_nomad passes is declared in jobs/agent.nomad, and every variable without a default gets one', async () => {
    const sb = sandbox()
    const r = await sb.run('deploy_nomad.mts', ['--dry-run'])
    expect(r.code).toBe(0)
    const planLine = r.stdout.split('\n').find((l) => l.startsWith('nomad job plan'))!
    const passed = [...planLine.matchAll(/-var=([A-Za-z0-9_]+)=/g)].map((m) => m[1])
    expect(passed).toEqual(['binary_path', 'binary_sha256', 'commit', 'nodes'])
    const declared = (await parseHcl(AGENT)).variable as Record<string, any[]>
    for (const name of passed) expect(Object.keys(declared)).toContain(name)
    for (const [name, [v]] of Object.entries(declared)) if (v.default === undefined) expect(passed).toContain(name)
  })

  it('deploy_arangodb passes no -var at all (nothing to leak, nothing to drift)', async () => {
    const sb = sandbox()
    const r = await sb.run('deploy_arangodb.mts', ['--dry-run'])
    expect(r.code).toBe(0)
    const nomadLines = r.stdout.split('\n').filter((l) => l.startsWith('nomad job '))
    // plan, run, and the tag of a good release (Nomad 1.9+): none with a -var
    expect(nomadLines.map((l) => l.split(' ').slice(0, 3).join(' '))).toEqual(['nomad job plan', 'nomad job run', 'nomad job tag'])
    for (const l of nomadLines) expect(l).not.toMatch(/-var/)
  })
})
