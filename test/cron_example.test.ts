// examples/cron/status.crontab (the issue "Operable from a merge request, a CI job and cron"): read by
// Debian's own crontab(1), which refuses a table with errors, and its job run as cron runs it: a bare
// environment (env -i), from HOME, with only the crontab's variables.
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { jsonResult, root, sandbox, type Sandbox } from './helpers.ts'
import { ensureUsers, requireTools, USERS } from './sshd.ts'

const FILE = path.join(root, 'examples/cron/status.crontab')
const text = readFileSync(FILE, 'utf8')
const lines = text.split('\n').filter((l) => l.trim() && !l.startsWith('#'))
const variables = Object.fromEntries(lines.filter((l) => /^[A-Z_]+=/.test(l)).map((l) => l.split(/=(.*)/s).slice(0, 2)))
const jobs = lines.filter((l) => !/^[A-Z_]+=/.test(l))

let sb: Sandbox
beforeEach(() => {
  sb = sandbox()
})

/** crontab(1) -u <test user> <file>: its exit code and message (the table is removed again). */
function install(file: string) {
  const r = spawnSync('crontab', ['-u', USERS.dash, file], { encoding: 'utf8' })
  spawnSync('crontab', ['-u', USERS.dash, '-r'], { encoding: 'utf8' })
  return r
}

describe('the cron example', () => {
  it("Debian's crontab installs it; the same file with a broken schedule is refused (the check can fail)", () => {
    requireTools()
    ensureUsers()
    expect(install(FILE).status, install(FILE).stderr).toBe(0)
    const broken = path.join(sb.dir, 'broken.crontab')
    writeFileSync(broken, text.replace('*/15 * * * *', '*/15 * * *'))
    const r = install(broken)
    expect(r.status).not.toBe(0)
    expect(r.stderr).toMatch(/errors in crontab file/)
  })

  it('one job, every 15 minutes, with the cd, PATH and env file it needs, and no % (cron turns it into a newline)', () => {
    expect(jobs).toHaveLength(1)
    expect(jobs[0]).toMatch(/^\*\/15 \* \* \* \* cd \/opt\/nomad-deploy-kit && npx --no-install tsx deploy\/status\.mts --json --env-file \S+ > /)
    expect(jobs[0]).not.toContain('%')
    expect(variables.PATH.split(':')).toEqual(expect.arrayContaining(['/usr/local/bin', '/usr/bin', '/bin']))
    expect(variables.SHELL).toBe('/bin/sh')
  })

  it('its command, run as cron runs it: the JSON result in the file, the table in the log, the echo on exit 1', () => {
    const envFile = path.join(sb.dir, 'status.env')
    writeFileSync(envFile, 'NOMAD_ADDR=http://127.0.0.1:4646\n', { mode: 0o600 })
    const command = jobs[0].split(/\s+/).slice(5).join(' ')
      .replace('/opt/nomad-deploy-kit', root)
      .replace('/etc/nomad-deploy-kit/status.env', envFile)
      .replaceAll('/var/lib/nomad-deploy-kit', sb.dir)
      .replaceAll('/var/log/nomad-deploy-kit', sb.dir)
    // cron's environment: its own few variables and the crontab's; the nomad double first on PATH
    // (where the real CLI would be), and where the double keeps its state.
    const env = { ...variables, HOME: sb.home, LOGNAME: USERS.dash, PATH: `${sb.bin}:${variables.PATH}`, STUB_STATE: sb.state }
    const out = execFileSync('env', ['-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), '/bin/sh', '-c', command], { cwd: sb.home, encoding: 'utf8' })
    expect(out.trim()).toBe(`nomad-deploy-kit status: exit 1 (1 needs a look, 2 refused): ${sb.dir}/status.json`)
    return jsonResult(readFileSync(path.join(sb.dir, 'status.json'), 'utf8')).then((result) => {
      expect(result).toMatchObject({ script: 'status', outcome: 'drift', exitCode: 1 })
      const log = readFileSync(path.join(sb.dir, 'status.log'), 'utf8')
      expect(log).toMatch(/^JOB +VERSION +STATE/m)
      expect(log).not.toMatch(/npm notice/)
    })
  })
})
