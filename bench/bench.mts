// bench: `npm run bench` — the five speed figures of issue 6, from one run, printed as a table.
//   1. time to refusal: deploy_storefront and deploy_nomad against a cluster that refuses the token
//      (403) or cannot be reached, beside `--help` (goal: at most 1.5x), and no build/push/upload ran;
//   2. ssh authentications per run of deploy_binary, deploy_arango_volume, deploy_valkey_volume,
//      counted in a real sshd's log (goal: 1);
//   3. bytes sent to the server by deploy_binary for a changed and an unchanged binary, counted by a
//      TCP relay between ssh and sshd (goal: unchanged sends no binary, far less than its size);
//   4. `nomad job run` calls when the plan shows no change (goal: 0);
//   5. `--help` of every script: median wall time beside `npx tsx` on an empty module (goal: 1.25x).
// Figures are medians of a few runs on this machine; nothing here is a test, nothing fails a build.
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import path from 'node:path'
import { removeSandboxes, root, sandbox, stageBinary, write } from '../test/helpers.ts'

const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const rows: string[][] = []
const row = (figure: string, measured: string, goal: string, met: boolean | undefined) =>
  rows.push([figure, measured, goal, met === undefined ? '-' : met ? 'met' : 'NOT MET'])

function time(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<{ ms: number; code: number | null; out: string }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint()
    const child = spawn(cmd, args, { cwd: opts.cwd ?? root, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('close', (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code, out }))
  })
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
async function medianOf(cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv; cwd?: string }) {
  const ms: number[] = []
  let last
  for (let i = 0; i < RUNS; i++) {
    last = await time(cmd, args, opts)
    ms.push(last.ms)
  }
  return { ms: median(ms), code: last!.code, out: last!.out }
}
const f = (ms: number) => `${(ms / 1000).toFixed(2)} s`

// 5. Startup -------------------------------------------------------------------------------------
const empty = path.join(root, 'bench/out/empty.mts')
mkdirSync(path.dirname(empty), { recursive: true })
writeFileSync(empty, 'export {}\n')
const baseline = (await medianOf('npx', ['tsx', empty])).ms
const scripts = readdirSync(path.join(root, 'deploy')).filter((s) => s.endsWith('.mts')).sort()
const helpTimes: Record<string, number> = {}
for (const s of scripts) {
  helpTimes[s] = (await medianOf('npx', ['tsx', `deploy/${s}`, '--help'])).ms
  row(`5. --help ${s}`, `${f(helpTimes[s])} = ${(helpTimes[s] / baseline).toFixed(2)}x empty (${f(baseline)})`, '<= 1.25x', helpTimes[s] / baseline <= 1.25)
}

// 1. Time to refusal, and 4. no needless redeploy ------------------------------------------------
const stubEnv = (sb: ReturnType<typeof sandbox>, extra: Record<string, string> = {}) => ({
  PATH: `${sb.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin`, HOME: sb.home, LANG: 'C.UTF-8', STUB_STATE: sb.state,
  NOMAD_ADDR: 'http://127.0.0.1:4646', DEPLOY_POLL_SECONDS: '0.05', DEPLOY_SSH_HOST: '127.0.0.1', ...extra,
})
for (const script of ['deploy_nomad.mts', 'deploy_storefront.mts']) {
  if (!scripts.includes(script)) continue
  for (const mode of ['forbidden', 'unreachable']) {
    const sb = sandbox()
    sb.stub('docker')
    const app = storefrontSource(sb.dir)
    sb.setState({ mode })
    const env = stubEnv(sb, { STOREFRONT_SOURCE_DIR: app, STOREFRONT_IMAGE: 'registry.test/cedra/storefront' })
    const r = await medianOf('npx', ['tsx', `deploy/${script}`, '--env-file', sb.envFile], { env })
    const heavy = sb.calls().filter((c) => c.tool === 'docker' && /^(build|push|buildx)/.test(c.argv[0] ?? '')).length
    const ratio = r.ms / helpTimes[script]
    row(`1. refusal ${script} (${mode === 'forbidden' ? '403' : 'unreachable'})`,
      `${f(r.ms)} = ${ratio.toFixed(2)}x --help, exit ${r.code}, ${heavy} build/push`, '<= 1.5x, 0 build', ratio <= 1.5 && heavy === 0 && r.code !== 0)
  }
}
{
  const sb = sandbox()
  stageBinary(sb) // the build deploy_binary records: what deploy_nomad deploys
  const env = stubEnv(sb)
  await time('npx', ['tsx', 'deploy/deploy_nomad.mts', '--env-file', sb.envFile], { env })
  const before = sb.commands('nomad').filter((c) => c.startsWith('job run')).length
  const second = await time('npx', ['tsx', 'deploy/deploy_nomad.mts', '--env-file', sb.envFile], { env })
  const runs = sb.commands('nomad').filter((c) => c.startsWith('job run')).length - before
  row('4. job run calls, unchanged plan (deploy_nomad)', `${runs} (exit ${second.code})`, '0', runs === 0 && second.code === 0)
}

// 2 and 3. ssh: authentications and bytes --------------------------------------------------------
try {
  const { startSshd, ensureUsers, requireTools, userDir, USERS, goEnv } = await import('../test/sshd.ts')
  requireTools()
  ensureUsers()
  const sb = sandbox()
  const sshd = await startSshd()
  const relay = await countingRelay(sshd.port)
  // The relay listens on another port: known_hosts names the server by [127.0.0.1]:port.
  const hostKey = readFileSync(path.join(sshd.dir, 'host_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ')
  const knownHosts = write(sb.dir, 'known_hosts', `[127.0.0.1]:${relay.port} ${hostKey}\n`)
  const user = USERS.bash
  const remote = path.join(userDir(user), `bench-${process.pid}`)
  // The scripts ask Nomad (the double) which client the host is: one node at 127.0.0.1, no static volume.
  sb.setState({ nodes: [{ Name: 'node-1', Address: '127.0.0.1' }] })
  const env = (extra: Record<string, string>) => ({
    ...process.env, ...goEnv, HOME: sb.home, PATH: `${sb.bin}:${process.env.PATH}`, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646',
    ...sshd.env(user), DEPLOY_SSH_PORT: String(relay.port), DEPLOY_SSH_KNOWN_HOSTS: knownHosts, ...extra,
  })
  const cases: [string, Record<string, string>][] = [
    ['deploy_arango_volume.mts', { ARANGO_DATA_DIR: `${remote}/arango` }],
    ['deploy_valkey_volume.mts', { VALKEY_DATA_DIR: `${remote}/valkey` }],
    ['deploy_binary.mts', { AGENT_REMOTE_DIR: `${remote}/bin`, AGENT_SOURCE_DIR: path.join(root, 'test/fixtures/agent') }],
  ]
  for (const [script, extra] of cases) {
    if (!scripts.includes(script)) continue
    const before = sshd.accepted()
    relay.reset()
    const r = await time('npx', ['tsx', `deploy/${script}`, '--env-file', sb.envFile], { env: env(extra) })
    const auths = sshd.accepted() - before
    row(`2. ssh authentications ${script}`, `${auths} (exit ${r.code})`, '1', auths === 1 && r.code === 0)
    if (script === 'deploy_binary.mts') {
      const changed = relay.sent()
      relay.reset()
      const again = await time('npx', ['tsx', `deploy/${script}`, '--env-file', sb.envFile], { env: env(extra) })
      const unchanged = relay.sent()
      // The release file: bin/agent-<sha256> (one build: the only one there).
      const size = statSync(path.join(remote, 'bin', readdirSync(path.join(remote, 'bin')).find((f) => /^agent-[0-9a-f]{64}$/.test(f))!)).size
      row('3. bytes sent, changed binary', `${changed.toLocaleString('en')} B (binary ${size.toLocaleString('en')} B)`, '-', undefined)
      row('3. bytes sent, unchanged binary', `${unchanged.toLocaleString('en')} B (exit ${again.code}, says unchanged: ${/unchanged/.test(again.out)})`,
        'no binary bytes', unchanged < size && /unchanged/.test(again.out))
    }
  }
  relay.close()
  await sshd.stop()
  rmSync(remote, { recursive: true, force: true })
} catch (e) {
  row('2-3. ssh figures', `not measured: ${(e as Error).message.split('\n')[0]}`, '-', false)
}

// Report -----------------------------------------------------------------------------------------
const widths = [0, 1, 2, 3].map((i) => Math.max(...[['figure', 'measured', 'goal', 'goal met'], ...rows].map((r) => r[i].length)))
const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
console.log(line(['figure', 'measured', 'goal', 'goal met']))
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`)
for (const r of rows) console.log(line(r))
console.log(`\n${RUNS} runs each (BENCH_RUNS), medians; node ${process.version}, ${new Date().toISOString()}`)
removeSandboxes()

// ------------------------------------------------------------------------------------------------

/** A git checkout with a Dockerfile, as deploy_storefront expects. */
function storefrontSource(dir: string) {
  const app = path.join(dir, 'app')
  write(app, 'Dockerfile', 'FROM oven/bun:1\n')
  const git = (...a: string[]) => spawnSyncOk('git', ['-C', app, ...a])
  git('init', '-q')
  git('-c', 'user.email=b@b', '-c', 'user.name=bench', 'add', '.')
  git('-c', 'user.email=b@b', '-c', 'user.name=bench', 'commit', '-qm', 'app')
  return app
}
function spawnSyncOk(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`)
}

/** A TCP relay on 127.0.0.1 that counts the bytes the client sends to the server. */
function countingRelay(target: number): Promise<{ port: number; sent: () => number; reset: () => void; close: () => void }> {
  let sent = 0
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1')
    client.on('data', (d) => (sent += d.length))
    client.pipe(upstream).pipe(client)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: (server.address() as { port: number }).port, sent: () => sent, reset: () => void (sent = 0), close: () => server.close(),
  })))
}
