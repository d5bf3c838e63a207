// jobs/valkey.nomad, parsed by HashiCorp's own HCL2 parser (@cdktf/hcl2json), checked for every
// property the storefront issue asks of it.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { parseHcl, root } from './helpers.ts'

const FILE = path.join(root, 'jobs/valkey.nomad')
const text = readFileSync(FILE, 'utf8')
let spec: any
let job: any
let group: any
let valkey: any
let exporter: any
beforeAll(async () => {
  spec = await parseHcl(FILE)
  job = spec.job.valkey[0]
  group = job.group.valkey[0]
  valkey = group.task.valkey[0]
  exporter = group.task.exporter[0]
})

const templates = (task: any): any[] => task.template ?? []
const SECRET_REF = '{{ with secret "${var.vault_secret}" }}'

describe('jobs/valkey.nomad', () => {
  it('is the service job "valkey" with one instance (the data lives on one client)', () => {
    expect(Object.keys(spec.job)).toEqual(['valkey'])
    expect(job.type).toBe('service')
    expect(Object.keys(job.group)).toEqual(['valkey'])
    expect(group.count).toBe(1)
    expect(Object.keys(group.task).sort()).toEqual(['exporter', 'valkey'])
  })

  it('runs the official Valkey image pinned to an 8.0 patch tag (never latest, never bare 8.0)', () => {
    expect(valkey.driver).toBe('docker')
    expect(valkey.config[0].image).toMatch(/^valkey\/valkey:8\.0\.\d+$/)
  })

  it('reads the Vault path from a variable whose default is the storefront secret (KV v2 API path)', () => {
    expect(spec.variable.vault_secret[0].default).toBe('secret/data/cedra/prod')
    expect(spec.variable.vault_secret[0].type).toBe('${string}')
  })

  it('starts valkey-server on a config file rendered from Vault into secrets/: append-only on /data, requirepass from valkey_password', () => {
    const config = valkey.config[0]
    expect(config.command).toBe('valkey-server')
    expect(config.args).toEqual(['/secrets/valkey.conf'])
    const conf = templates(valkey).find((t) => t.destination === 'secrets/valkey.conf')
    expect(conf).toBeDefined()
    expect(conf.env ?? false).toBe(false)
    expect(conf.perms).toBe('0400')
    expect(conf.uid).toBe(999) // the valkey user of the official image, which reads it after dropping root
    const lines = conf.data.split('\n').map((l: string) => l.trim())
    expect(lines).toContain('appendonly yes')
    expect(lines).toContain('dir /data')
    expect(lines).toContain(`${SECRET_REF}requirepass "{{ .Data.data.valkey_password }}"{{ end }}`)
  })

  it('mounts the host volume "valkey_data" at /data, read-write', () => {
    expect(group.volume.valkey_data[0]).toEqual({ type: 'host', source: 'valkey_data', read_only: false })
    expect(valkey.volume_mount).toEqual([{ volume: 'valkey_data', destination: '/data', read_only: false }])
  })

  it('registers the Consul service "valkey" on its port with a TCP check', () => {
    expect(group.network[0].port.valkey[0]).toEqual({ to: 6379 })
    expect(valkey.config[0].ports).toEqual(['valkey'])
    const services = valkey.service.filter((s: any) => s.name === 'valkey')
    expect(services).toHaveLength(1)
    const [svc] = services
    expect(svc.port).toBe('valkey')
    expect(svc.provider ?? 'consul').toBe('consul')
    expect(svc.check).toHaveLength(1)
    expect(svc.check[0]).toMatchObject({ type: 'tcp', port: 'valkey', interval: expect.stringMatching(/^\d+s$/), timeout: expect.stringMatching(/^\d+s$/) })
  })

  it('runs a pinned Prometheus exporter sidecar with its own port and its own Consul service, the password from Vault', () => {
    expect(exporter.driver).toBe('docker')
    expect(exporter.config[0].image).toMatch(/^oliver006\/redis_exporter:v\d+\.\d+\.\d+$/)
    expect(exporter.lifecycle).toEqual([{ hook: 'poststart', sidecar: true }])
    expect(group.network[0].port.metrics[0]).toEqual({ to: 9121 })
    expect(exporter.config[0].ports).toEqual(['metrics'])
    expect(exporter.env[0].REDIS_ADDR).toBe('redis://${NOMAD_ADDR_valkey}')
    const [svc] = exporter.service
    expect(exporter.service).toHaveLength(1)
    expect(svc).toMatchObject({ name: 'valkey-metrics', port: 'metrics' })
    expect(svc.tags).toContain('prometheus')
    expect(svc.check[0]).toMatchObject({ type: 'http', path: '/health', interval: expect.any(String), timeout: expect.any(String) })
    const env = templates(exporter).find((t) => t.env === true)
    expect(env.destination).toMatch(/^secrets\//)
    expect(env.data.trim()).toBe(`${SECRET_REF}REDIS_PASSWORD={{ .Data.data.valkey_password | toJSON }}{{ end }}`)
  })

  it('reaches Vault one of two ways, chosen by var.vault_auth: workload identity and a role (1.7+, the only way on 1.10+) or the legacy policies', () => {
    const vault = group.dynamic.vault
    expect(vault.map((b: any) => b.for_each)).toEqual(['${var.vault_auth == "identity" ? [var.vault_role] : []}', '${var.vault_auth == "token" ? [var.vault_policies] : []}'])
    expect(vault[0].content[0].role).toBe('${vault.value}')
    expect(vault[1].content[0].policies).toBe('${vault.value}')
    expect(group.vault).toBeUndefined()
    expect(spec.variable.vault_auth[0].default).toBe('identity')
  })

  it('sets resources on every task', () => {
    for (const task of [valkey, exporter]) {
      expect(task.resources[0].cpu).toBeGreaterThan(0)
      expect(task.resources[0].memory).toBeGreaterThan(0)
    }
  })

  it('holds no password: every mention of it is a Vault template reference, none in args or env', () => {
    const mentions = text.match(/[^\n]*(requirepass|password)[^\n]*/gi) ?? []
    const code = mentions.filter((l) => !l.trim().startsWith('#'))
    expect(code.length).toBeGreaterThan(0)
    for (const line of code) expect(line).toMatch(/\{\{ \.Data\.data\.valkey_password( \| toJSON)? \}\}/)
    for (const task of [valkey, exporter]) {
      expect(JSON.stringify(task.config)).not.toMatch(/pass|auth/i)
      expect(Object.keys(task.env?.[0] ?? {})).not.toContain('REDIS_PASSWORD')
    }
    // Every Vault read goes through the one variable.
    expect(text.match(/with secret "[^"]*"/g)).toEqual(['with secret "${var.vault_secret}"', 'with secret "${var.vault_secret}"'])
  })
})
