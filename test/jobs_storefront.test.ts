// jobs/cedra-storefront.nomad parsed by HashiCorp's own HCL2 parser (WebAssembly), with an assertion
// for every property the deployment relies on; jobs/haproxy.cfg checked by the REAL `haproxy -c`.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { parseHcl, root } from './helpers.ts'

const JOBFILE = path.join(root, 'jobs/cedra-storefront.nomad')
const HAPROXY_CFG = path.join(root, 'jobs/haproxy.cfg')
let hcl: any
let job: any
let group: any
let task: any
beforeAll(async () => {
  hcl = await parseHcl(JOBFILE)
  job = hcl.job['cedra-storefront'][0]
  group = Object.values(job.group as Record<string, any[]>)[0][0]
  task = Object.values(group.task as Record<string, any[]>)[0][0]
})

describe('jobs/cedra-storefront.nomad', () => {
  it('is one service job named cedra-storefront, with one task group', () => {
    expect(Object.keys(hcl.job)).toEqual(['cedra-storefront'])
    expect(job.type).toBe('service')
    expect(Object.keys(job.group)).toHaveLength(1)
  })

  it('declares the variables the deploy gives: image_tag without default (never latest), image, count >= 2, auto_promote', () => {
    const v = (name: string) => hcl.variable[name][0]
    expect(v('image_tag').type).toBe('${string}')
    expect(v('image_tag')).not.toHaveProperty('default')
    expect(v('image_tag').validation[0].condition).toMatch(/var\.image_tag != "latest"/)
    expect(v('image').type).toBe('${string}')
    // The job's default image is the one .env.example documents as STOREFRONT_IMAGE.
    const example = readFileSync(path.join(root, '.env.example'), 'utf8').match(/^STOREFRONT_IMAGE=(.*)$/m)?.[1]
    expect(v('image').default).toBe(example)
    expect(v('count').type).toBe('${number}')
    expect(v('count').default).toBe(2)
    expect(v('count').validation[0].condition).toBe('${var.count >= 2}')
    expect(v('count').validation[0].error_message).toMatch(/^[A-Z].*\.$/) // Nomad wants a sentence
    expect(v('auto_promote').type).toBe('${bool}')
    expect(v('auto_promote').default).toBe(false)
    expect(group.count).toBe('${var.count}')
  })

  it('rolls out by canary: one canary, 60 s healthy, consistent deadlines, auto-revert, auto-promote from the variable', () => {
    const update = (group.update ?? job.update)[0]
    expect(update.canary).toBe(1)
    expect(update.max_parallel).toBe(1)
    expect(update.min_healthy_time).toBe('60s')
    expect(update.auto_revert).toBe(true)
    expect(update.auto_promote).toBe('${var.auto_promote}')
    expect(update.health_check ?? 'checks').toBe('checks')
    const seconds = (d: string) => Number(d.match(/^(\d+)(s|m)$/)![1]) * (d.endsWith('m') ? 60 : 1)
    expect(seconds(update.healthy_deadline)).toBeGreaterThan(seconds(update.min_healthy_time))
    expect(seconds(update.progress_deadline)).toBeGreaterThan(seconds(update.healthy_deadline))
  })

  it('runs the image given by the variables, with the Docker driver, on port 3000', () => {
    expect(task.driver).toBe('docker')
    expect(task.config[0].image).toBe('${var.image}:${var.image_tag}')
    expect(task.config[0].ports).toEqual(['http'])
    expect(group.network[0].port.http[0].to).toBe(3000)
  })

  it('registers the Consul service with an http check on /api/health and the tags HAProxy selects by', () => {
    const service = group.service[0]
    expect(service.name).toBe('cedra-storefront')
    expect(service.provider ?? 'consul').toBe('consul')
    expect(service.port).toBe('http')
    const check = service.check[0]
    expect(check).toMatchObject({ type: 'http', path: '/api/health' })
    expect(check.interval).toMatch(/^\d+s$/)
    expect(check.timeout).toMatch(/^\d+s$/)
    const cfg = readFileSync(HAPROXY_CFG, 'utf8')
    const used = [...cfg.matchAll(/_cedra-storefront\._([a-z0-9-]+)\.service\.consul/g)].map((m) => m[1])
    expect(used.sort()).toEqual(['haproxy', 'lang-en', 'lang-fr', 'lang-nl'])
    for (const tag of used) expect(service.tags).toContain(tag)
    // The canary takes its share of traffic: it carries the same tags.
    for (const tag of service.tags) expect(service.canary_tags).toContain(tag)
  })

  it('reads the secrets from Vault KV v2 (var.vault_secret, default secret/data/cedra/prod) through a template into the environment', () => {
    // The path is a variable that deploy_storefront sets from STOREFRONT_VAULT_PATH, like deploy_valkey.
    expect(hcl.variable.vault_secret[0].default).toBe('secret/data/cedra/prod')
    const secrets = task.template.find((t: any) => t.data.includes('secret "${var.vault_secret}"'))
    expect(secrets).toBeDefined()
    expect(secrets.env).toBe(true)
    expect(secrets.destination).toMatch(/^secrets\//)
    for (const key of ['revalidate_secret', 'session_secret', 'valkey_password']) expect(secrets.data).toContain(`.Data.data.${key}`)
    // Two dynamic vault blocks, one per flow, chosen by var.vault_auth (HashiCorp's parser keeps them as written).
    const vault = task.dynamic.vault
    expect(vault.map((b: any) => b.for_each)).toEqual(['${var.vault_auth == "identity" ? [var.vault_role] : []}', '${var.vault_auth == "token" ? [var.vault_policies] : []}'])
    expect(vault[0].content[0].role).toBe('${vault.value}')
    expect(vault[1].content[0].policies).toBe('${vault.value}')
    expect(hcl.variable.vault_auth[0].default).toBe('identity')
    expect(hcl.variable.vault_role[0].default).toBe('cedra-storefront')
    expect(hcl.variable.vault_policies[0].default).toEqual(['cedra-storefront'])
    // The group's consul block gives the Consul template its identity on 1.10+ (#25298).
    expect(group.consul).toEqual([{}])
    // No secret value, nor a variable for one, in the job file.
    expect(Object.keys(hcl.variable).filter((k) => /secret|password|token/i.test(k))).toEqual(['vault_secret'])
  })

  it('finds Valkey through Consul in a template, and sets resources', () => {
    const valkey = task.template.find((t: any) => /{{\s*range service "valkey"\s*}}/.test(t.data))
    expect(valkey).toBeDefined()
    expect(valkey.env).toBe(true)
    expect(valkey.data).toMatch(/{{ \.Address }}/)
    expect(valkey.data).toMatch(/{{ \.Port }}/)
    expect(task.resources[0].cpu).toBeGreaterThan(0)
    expect(task.resources[0].memory).toBeGreaterThan(0)
  })
})

describe('jobs/haproxy.cfg', () => {
  const haproxy = ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy', '/usr/bin/haproxy'].find((p) => existsSync(p))
  const check = (file: string) => spawnSync(haproxy!, ['-c', '-f', file], { encoding: 'utf8' })

  it('is valid for the real haproxy (-c)', () => {
    expect(haproxy, 'haproxy is not installed: apt-get install haproxy (Debian), then run the tests again').toBeDefined()
    const r = check(HAPROXY_CFG)
    expect(r.status, r.stderr + r.stdout).toBe(0)
    expect(r.stdout + r.stderr).toContain('Configuration file is valid')
    expect(r.stderr).not.toMatch(/\[WARNING\]/)
  })

  it('(the check is real: a broken copy is refused)', () => {
    expect(haproxy, 'haproxy is not installed: apt-get install haproxy (Debian), then run the tests again').toBeDefined()
    const broken = path.join(tmpdir(), `haproxy-broken-${process.pid}.cfg`)
    writeFileSync(broken, readFileSync(HAPROXY_CFG, 'utf8').replace('resolvers consul\n', 'resolvers consul\n    nameserver\n'))
    expect(check(broken).status).not.toBe(0)
  })

  it('routes /fr, /nl and /en to storefront instances found through Consul DNS, health-checked on /api/health', () => {
    const cfg = readFileSync(HAPROXY_CFG, 'utf8')
    expect(cfg).toMatch(/^resolvers consul\n\s+nameserver \S+ 127\.0\.0\.1:8600$/m)
    for (const lang of ['fr', 'nl', 'en']) {
      expect(cfg).toMatch(new RegExp(`acl lang_${lang} path /${lang} or path_beg /${lang}/`))
      expect(cfg).toMatch(new RegExp(`use_backend storefront_${lang} if lang_${lang}`))
    }
    const backends = cfg.split(/^backend /m).slice(1)
    expect(backends).toHaveLength(4)
    for (const b of backends) {
      expect(b).toContain('option httpchk GET /api/health')
      expect(b).toContain('http-check expect status 200')
      expect(b).toMatch(/server-template \w+ \d+ _cedra-storefront\._[a-z-]+\.service\.consul resolvers consul resolve-prefer ipv4 .*check$/m)
    }
    expect(cfg).toMatch(/^# EXAMPLE HAProxy configuration .* No script applies it/m)
  })
})
