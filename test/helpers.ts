// A bats-like harness: each test gets a fresh sandbox (temp dir, stub bin dir first on PATH, its own
// HOME and env file), runs a script as a child process exactly as a user does, and reads back the
// stubs' call log (one JSON line per call: argv, chosen env vars, stdin).
import { execFileSync, execSync, spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '')
const tsx = path.join(root, 'node_modules/tsx/dist/esm/index.mjs')

/** The nomad double's node (its default, one client at 127.0.0.1: DEPLOY_SSH_HOST in baseEnv). */
export const NODE_ID = '4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59'
/** The read-only calls every Nomad script makes first (the versions) and every script that needs the clients (the nodes). */
const PROBES = ['version', 'server members -json', 'node status -json']

export type Call = { tool: string; argv: string[]; env: Record<string, string>; stdin?: string }
export type Result = { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; output: string; pid?: number; trace?: string }

/** The variables every script run gets unless a test overrides them (a dev-agent nomad, no TLS). */
export const baseEnv = {
  NOMAD_ADDR: 'http://127.0.0.1:4646',
  DEPLOY_POLL_SECONDS: '0.05',
  // The client the agent runs on (deploy_nomad pins the job to its node): the nomad double's node-1.
  DEPLOY_SSH_HOST: '127.0.0.1',
}

// Sandboxes are removed after each test file (test/setup.ts) and at the end of the bench;
// KEEP_SANDBOX=1 keeps them, to look inside.
const sandboxes: string[] = []
export function removeSandboxes() {
  if (!process.env.KEEP_SANDBOX) for (const d of sandboxes.splice(0)) rmSync(d, { recursive: true, force: true })
}

export function sandbox() {
  const dir = mkdtempSync(path.join(tmpdir(), 'deploy-test-'))
  sandboxes.push(dir)
  const bin = path.join(dir, 'bin')
  const home = path.join(dir, 'home')
  const state = path.join(dir, 'state')
  for (const d of [bin, home, state]) mkdirSync(d, { recursive: true })
  const envFile = path.join(dir, 'test.env')
  writeFileSync(envFile, '')

  const sb = {
    dir, bin, home, state, envFile,
    /** An executable stub: a shell script body, or one of test/stubs/<name>.mjs when omitted. */
    stub(name: string, body?: string) {
      const file = path.join(bin, name)
      const code = body ?? `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(root, 'test/stubs', `${name}.mjs`))} "$@"\n`
      writeFileSync(file, code)
      chmodSync(file, 0o755)
      return file
    },
    /** Every recorded call, in order; optionally only one tool's. */
    calls(tool?: string): Call[] {
      const log = path.join(state, 'calls.jsonl')
      if (!existsSync(log)) return []
      const all = readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Call)
      return tool ? all.filter((c) => c.tool === tool) : all
    },
    /**
     * The argv of each call of a tool, joined by spaces (for readable assertions). For nomad, the
     * read-only calls by which a script learns the versions (`nomad version`, `nomad server members
     * -json`) and the clients (`nomad node status -json`) are left out unless `probes` is set:
     * test/nomad_versions.test.ts and test/multi_client.test.ts assert them.
     */
    commands(tool: string, { probes = false } = {}): string[] {
      const all = sb.calls(tool).map((c) => c.argv.join(' '))
      return tool === 'nomad' && !probes ? all.filter((c) => !PROBES.includes(c)) : all
    },
    readState(tool = 'nomad') {
      const f = path.join(state, `${tool}.json`)
      return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) : {}
    },
    setState(patch: Record<string, unknown>, tool = 'nomad') {
      writeFileSync(path.join(state, `${tool}.json`), JSON.stringify({ ...sb.readState(tool), ...patch }, null, 2))
    },
    /** A PATH holding every system executable except the named ones (to simulate a missing tool). */
    pathWithout(...tools: string[]) {
      const only = path.join(dir, `path-without-${tools.join('-')}`)
      mkdirSync(only, { recursive: true })
      for (const d of [bin, '/usr/local/bin', '/usr/bin', '/usr/sbin']) {
        if (!existsSync(d)) continue
        for (const name of readdirSync(d)) {
          const target = path.join(only, name)
          if (!tools.includes(name) && !existsSync(target)) symlinkSync(path.join(d, name), target)
        }
      }
      return only
    },
    /** Call the nomad double directly (as an operator at a terminal would), outside any script: its stdout. */
    nomad(...args: string[]): string {
      return execFileSync(path.join(bin, 'nomad'), args, { env: { ...process.env, STUB_STATE: state, NOMAD_ADDR: baseEnv.NOMAD_ADDR }, encoding: 'utf8' })
    },
    /**
     * Run `deploy/<script>` as a user does (node + tsx, or through `launcher`), with the sandbox env file
     * unless the args name one. Resolves when the process ends; `onStart` gets the child (for signals).
     */
    run(script: string, args: string[] = [], opts: { env?: Record<string, string | undefined>; input?: string; timeoutMs?: number; cwd?: string; onStart?: (pid: number) => void; trace?: boolean; launcher?: string[] } = {}): Promise<Result> {
      const argv = [...args]
      if (!argv.includes('--env-file') && !argv.includes('--help') && !argv.includes('-h')) argv.push('--env-file', envFile)
      const env: Record<string, string> = {
        PATH: `${bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin`,
        HOME: home,
        LANG: 'C.UTF-8',
        STUB_STATE: state,
        ...baseEnv,
      }
      for (const [k, v] of Object.entries(opts.env ?? {})) {
        if (v === undefined) delete env[k]
        else env[k] = v
      }
      // trace: every execve of the script and its descendants (zx's own `bash -c` included), by strace.
      const traceFile = path.join(dir, `execve-${Date.now()}.log`)
      // launcher: the command line a runbook uses instead, e.g. ['npx', 'tsx'] or ['timeout', '3', 'npx', 'tsx'] (run from the repository root).
      const node = opts.launcher ? [...opts.launcher, `deploy/${script}`, ...argv] : [process.execPath, '--import', tsx, path.join(root, 'deploy', script), ...argv]
      const [cmd, ...cmdArgs] = opts.trace ? ['strace', '-f', '-qq', '-e', 'trace=execve', '-s', '65535', '-o', traceFile, ...node] : node
      return new Promise((resolve, reject) => {
        const child = spawn(cmd, cmdArgs, { cwd: opts.cwd ?? (opts.launcher ? root : dir), env, stdio: ['pipe', 'pipe', 'pipe'] })
        let stdout = ''
        let stderr = ''
        let output = ''
        child.stdout.on('data', (d) => { stdout += d; output += d })
        child.stderr.on('data', (d) => { stderr += d; output += d })
        child.stdin.on('error', () => {}) // a child that exits at once (Node 20's own --env-file check) closes stdin: EPIPE
        child.stdin.end(opts.input ?? '')
        opts.onStart?.(child.pid!)
        const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
        child.on('error', reject)
        child.on('close', (code, signal) => {
          clearTimeout(timer)
          const trace = opts.trace ? readFileSync(traceFile, 'utf8') : undefined
          resolve({ code, signal, stdout, stderr, output, pid: child.pid, trace })
        })
      })
    },
  }
  sb.stub('nomad')
  return sb
}

export type Sandbox = ReturnType<typeof sandbox>

/**
 * Another run holding the lock of `job` (nomad var lock), as the nomad double keeps it: the lock variable
 * with its holder's items, and the server's timer (test/stubs/nomad.mjs varLocks), for `seconds`.
 */
export function holdLock(sb: Sandbox, job: string, seconds = 120, holder = { by: 'ops@bastion', script: 'deploy_storefront.mts', pid: '4242', since: '2026-12-07T09:00:00.000Z' }) {
  const path = `nomad/jobs/${job}/lock`
  const state = sb.readState()
  const index = Number(state.index ?? 10) + 1
  sb.setState({
    index,
    vars: { ...state.vars, [path]: { Namespace: 'default', Path: path, CreateIndex: index, ModifyIndex: index, CreateTime: 1, ModifyTime: 1, Items: holder, Lock: { ID: 'held-by-the-test', TTL: '15s', LockDelay: '15s' } } },
    varLocks: { ...state.varLocks, [path]: { ID: 'held-by-the-test', pid: process.pid, ttlMs: 15_000, delayMs: 15_000, expiresAt: Date.now() + seconds * 1000 } },
  })
}

/** A sha256 for the agent builds the tests stage (any 64 hex digits: the doubles never read the file). */
export const AGENT_SHA = 'a9e1c0d4b5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6'
/**
 * A build deploy_binary recorded, as it records it: the Nomad Variable nomad/jobs/agent-economique/releases,
 * item binaries (newest first), in the nomad double's state. deploy_nomad deploys it from there.
 */
export function stageBinary(sb: Sandbox, sha = AGENT_SHA, { commit = '0123456789ab', hosts = ['127.0.0.1'] } = {}) {
  const path = 'nomad/jobs/agent-economique/releases'
  const state = sb.readState()
  const vars = state.vars ?? {}
  const index = Math.max(Number(state.index ?? 10), 10) + 1
  const before = vars[path]?.Items?.binaries ? JSON.parse(vars[path].Items.binaries) : []
  const binaries = [{ sha256: sha, commit, uploaded: new Date().toISOString(), by: 'test@laptop', hosts }, ...before.filter((b: { sha256: string }) => b.sha256 !== sha)]
  vars[path] = { Namespace: 'default', Path: path, CreateIndex: vars[path]?.CreateIndex ?? index, ModifyIndex: index, CreateTime: 1, ModifyTime: 1, Items: { ...vars[path]?.Items, binaries: JSON.stringify(binaries) } }
  sb.setState({ index, vars })
}

/** Parse an HCL2 file with HashiCorp's own parser (compiled to WebAssembly). */
export async function parseHcl(file: string): Promise<any> {
  const { parse } = await import('@cdktf/hcl2json')
  return parse(path.basename(file), readFileSync(file, 'utf8'))
}

/** Write files into a sandbox-relative path and return the absolute path. */
export function write(dir: string, rel: string, content: string, mode?: number) {
  const file = path.join(dir, rel)
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, content)
  if (mode !== undefined) chmodSync(file, mode)
  return file
}

/**
 * Real TLS files made with openssl: a CA, a client certificate it issued and its key, an expired
 * certificate from the same CA, a key that matches nothing, and a second CA.
 */
export function makeCerts(dir: string) {
  const d = path.join(dir, 'certs')
  mkdirSync(path.join(d, 'db'), { recursive: true })
  const sh = (cmd: string) => execSync(cmd, { cwd: d, stdio: 'pipe' })
  const ec = '-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'
  sh(`openssl req -x509 ${ec} -keyout ca-key.pem -out ca.pem -subj /CN=test-ca -days 365`)
  sh(`openssl req -x509 ${ec} -keyout other-ca-key.pem -out other-ca.pem -subj /CN=other-ca -days 365`)
  sh(`openssl req -x509 ${ec} -keyout soon-key.pem -out soon.pem -subj /CN=soon -days 10`)
  sh(`openssl req ${ec} -keyout client-key.pem -out client.csr -subj /CN=client`)
  sh(`openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client.pem -days 365`)
  sh(`openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out wrong-key.pem`)
  writeFileSync(path.join(d, 'db/index'), '')
  writeFileSync(path.join(d, 'db/serial'), '1000\n')
  writeFileSync(path.join(d, 'ca.cnf'), '[ca]\ndefault_ca=d\n[d]\ndatabase=db/index\nnew_certs_dir=db\nserial=db/serial\npolicy=p\ndefault_md=sha256\n[p]\ncommonName=supplied\n')
  sh('openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca-key.pem -in client.csr -out expired.pem -startdate 20200101000000Z -enddate 20210101000000Z -notext')
  writeFileSync(path.join(d, 'not-pem.pem'), 'this is not a certificate\n')
  // An intermediate CA, a client certificate it issued, sent with it (leaf then intermediate).
  writeFileSync(path.join(d, 'ca-ext.cnf'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n')
  sh(`openssl req ${ec} -keyout int-key.pem -out int.csr -subj /CN=test-intermediate`)
  sh('openssl x509 -req -in int.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out int.pem -days 365 -extfile ca-ext.cnf')
  sh(`openssl req ${ec} -keyout leaf-key.pem -out leaf.csr -subj /CN=client-via-intermediate`)
  sh('openssl x509 -req -in leaf.csr -CA int.pem -CAkey int-key.pem -CAcreateserial -out leaf.pem -days 365')
  writeFileSync(path.join(d, 'leaf-chain.pem'), readFileSync(path.join(d, 'leaf.pem'), 'utf8') + readFileSync(path.join(d, 'int.pem'), 'utf8'))
  // A CA bundle during a rotation: an expired certificate beside the valid CA.
  writeFileSync(path.join(d, 'bundle-rotating.pem'), readFileSync(path.join(d, 'expired.pem'), 'utf8') + readFileSync(path.join(d, 'ca.pem'), 'utf8'))
  sh('openssl pkey -in client-key.pem -aes256 -passout pass:secret-passphrase -out client-key-encrypted.pem')
  const f = (n: string) => path.join(d, n)
  return { ca: f('ca.pem'), cert: f('client.pem'), key: f('client-key.pem'), expired: f('expired.pem'), soon: f('soon.pem'), wrongKey: f('wrong-key.pem'), otherCa: f('other-ca.pem'), notPem: f('not-pem.pem'),
    leafChain: f('leaf-chain.pem'), leafKey: f('leaf-key.pem'), leafAlone: f('leaf.pem'), rotatingBundle: f('bundle-rotating.pem'), encryptedKey: f('client-key-encrypted.pem') }
}

/**
 * A git checkout of a storefront app in the sandbox (a Dockerfile, one commit): `commit(message)`
 * changes a file and commits it (a new commit: a new image tag) and returns the 12-digit tag.
 */
export function storefrontCheckout(sb: Sandbox) {
  const src = path.join(sb.dir, 'cedra-storefront')
  mkdirSync(src, { recursive: true })
  writeFileSync(path.join(src, 'Dockerfile'), 'FROM oven/bun:1\nRUN bun run build\n')
  const git = (...args: string[]) => execFileSync('git', ['-c', 'user.name=T', '-c', 'user.email=t@example.com', ...args], { cwd: src, encoding: 'utf8' }).trim()
  const commit = (message: string) => {
    writeFileSync(path.join(src, 'version.ts'), `export const v = ${JSON.stringify(message)}\n`)
    git('add', '-A')
    git('commit', '-q', '-m', message)
    return git('rev-parse', '--short=12', 'HEAD')
  }
  git('init', '-q', '-b', 'main')
  commit('first')
  return { src, git, commit }
}

/**
 * The --json result of a run: stdout parsed as ONE JSON object (nothing else on stdout), validated
 * against deploy/lib/result.schema.json by Ajv (JSON Schema 2020-12); throws with Ajv's errors.
 */
export async function jsonResult(stdout: string): Promise<Record<string, any>> {
  const { default: Ajv } = await import('ajv/dist/2020.js')
  const schema = JSON.parse(readFileSync(path.join(root, 'deploy/lib/result.schema.json'), 'utf8'))
  const ajv = new (Ajv as any)({ allErrors: true, strict: true })
  ajv.addFormat('date-time', (s: string) => !Number.isNaN(Date.parse(s)) && /T.*Z$/.test(s))
  const validate = ajv.compile(schema)
  const value = JSON.parse(stdout)
  if (!validate(value)) throw new Error(`the result does not match deploy/lib/result.schema.json: ${ajv.errorsText(validate.errors)}\n${stdout}`)
  return value
}
