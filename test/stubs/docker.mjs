#!/usr/bin/env node
// Test double of the docker CLI (Docker 27 with buildx as the `docker build` front end), for the
// commands the storefront deploy uses: `docker version`, `docker buildx version`, `docker build`,
// `docker push`. No engine runs here; the double keeps the images it "built" in its state, so that a
// push of a tag that was never built fails as docker does. Flags may come before or after the
// positional argument (cobra); an unknown flag is a usage error (exit 125).
// State lives in $STUB_STATE/docker.json; every call is appended to $STUB_STATE/calls.jsonl.
//
// Knobs in the state file (tests set them with setState(..., 'docker')):
//   mode: "ok" | "no-daemon" (the engine is not running) | "no-buildx" | "build-fails"
//         | "push-denied" (not logged in / no right on the repository) | "hang-build"
//   images: the tags that exist locally (the double adds each one it builds)
//   fail: ["push", "build", "version", "buildx version"] — these subcommands fail with a realistic error
//   builder: "docker-container" — the current buildx builder is not the default one: a build without
//            --load (or --push) leaves its result in the build cache only, with buildx's warning
//            (docs.docker.com/build/drivers: "No output specified with docker-container driver"),
//            so the image does not exist locally and a push of it fails
// Concurrent calls (two deploys at once) keep each other's images: a call merges what it built or
// pushed into the state file as it is then, under a lock file, and writes it atomically (rename).
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { err, hang, lock, logCall, out, readState, writeState } from './common.mjs'

const load = () => readState('docker', (s) => {
  s.mode ??= 'ok'
  s.images ??= []
  s.pushed ??= []
  return s
})
const state = load()
const before = new Set(state.images.map((i) => JSON.stringify(i)))
/** Merge this call's new images and pushes into the current state (another call may have saved meanwhile). */
const save = () => {
  lock('docker')
  const now = load()
  for (const image of state.images.filter((i) => !before.has(JSON.stringify(i))))
    now.images = [...now.images.filter((i) => i.ref !== image.ref), image]
  for (const ref of state.pushed) if (!now.pushed.includes(ref)) now.pushed.push(ref)
  writeState('docker', now)
}

const argv = process.argv.slice(2)
logCall('docker', argv, ['DOCKER_HOST', 'DOCKER_CONFIG', 'DOCKER_BUILDKIT', 'NOMAD_TOKEN', 'VAULT_TOKEN', 'CONSUL_HTTP_TOKEN', 'REGISTRY_PASSWORD'])

const die = (msg, code = 1) => { err(msg); process.exit(code) }
const NO_DAEMON = 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?'

const [cmd, ...rest] = argv
const FAULTS = {
  version: 'Error response from daemon: client version 1.47 is too new. Maximum supported API version is 1.43',
  'buildx version': 'ERROR: open /root/.docker/buildx/current: permission denied',
  build: 'ERROR: failed to solve: oven/bun:1: failed to resolve source metadata for docker.io/oven/bun:1: unexpected status from HEAD request: 500 Internal Server Error',
  push: 'received unexpected HTTP status: 500 Internal Server Error',
}
const sub = cmd === 'buildx' ? `buildx ${rest[0]}` : cmd
if (state.fail?.includes(sub)) die(FAULTS[sub] ?? `docker ${sub}: failed (test double fault)`)
switch (cmd) {
  case 'version': version(rest); break
  case 'buildx': buildx(rest); break
  case 'build': await build(rest); break
  case 'push': push(rest); break
  default: die(`docker: '${cmd}' is not a docker command (not in this test double).\nSee 'docker --help'`, 1)
}
save()

// ------------------------------------------------------------------------------------------------





/** cobra-style flags: -x v, -x=v, --name v, --name=v, anywhere among the positionals. */
function parseFlags(list, known, usage) {
  const flags = {}
  const args = []
  for (let i = 0; i < list.length; i++) {
    const a = list[i]
    if (a === '--') { args.push(...list.slice(i + 1)); break }
    if (!a.startsWith('-') || a === '-') { args.push(a); continue }
    let [name, value] = a.split(/=(.*)/s)
    const spec = known[name]
    if (!spec) die(`unknown ${name.startsWith('--') ? 'flag' : 'shorthand flag'}: ${JSON.stringify(name.replace(/^-+/, ''))} in ${a}\nSee '${usage} --help'.`, 125)
    const key = spec.name
    if (spec.arity === 0) { flags[key] = true; continue }
    if (value === undefined) {
      if (i + 1 >= list.length) die(`flag needs an argument: ${name}\nSee '${usage} --help'.`, 125)
      value = list[++i]
    }
    if (spec.arity === 2) (flags[key] ??= []).push(value)
    else flags[key] = value
  }
  return { flags, args }
}

function version(list) {
  const { flags } = parseFlags(list, { '--format': { name: 'format', arity: 1 }, '-f': { name: 'format', arity: 1 } }, 'docker version')
  if (flags.format === '{{.Client.Version}}') return out('27.3.1')
  if (state.mode === 'no-daemon') {
    if (!flags.format) out('Client:\n Version:           27.3.1\n API version:       1.47\n OS/Arch:           linux/amd64')
    die(NO_DAEMON)
  }
  if (flags.format === '{{.Server.Version}}') return out('27.3.1')
  if (flags.format) die(`template not supported by the test double: ${flags.format}`)
  out('Client:\n Version:           27.3.1\n API version:       1.47\n OS/Arch:           linux/amd64\n\nServer: Docker Engine - Community\n Engine:\n  Version:          27.3.1\n  API version:      1.47 (minimum version 1.24)\n  OS/Arch:          linux/amd64')
}

function buildx(list) {
  if (state.mode === 'no-buildx') die(`docker: 'buildx' is not a docker command.\nSee 'docker --help'`)
  if (list[0] === 'version') return out('github.com/docker/buildx v0.17.1 257815a6fb95ddb0e2a1a2f4cb2e6bd5cbb8f8bc')
  die(`buildx ${list.join(' ')}: not in this test double`)
}

/** A valid image reference with a tag (docker's grammar, simplified but strict on what matters). */
function validRef(ref) {
  const m = ref.match(/^((?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*(?::\d+)?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)(?::([\w][\w.-]{0,127}))?$/)
  return m ? { repo: m[1], tag: m[2] ?? 'latest' } : null
}

async function build(list) {
  const { flags, args } = parseFlags(list, {
    '--platform': { name: 'platform', arity: 1 }, '-t': { name: 'tag', arity: 2 }, '--tag': { name: 'tag', arity: 2 },
    '-f': { name: 'file', arity: 1 }, '--file': { name: 'file', arity: 1 }, '--progress': { name: 'progress', arity: 1 },
    '--pull': { name: 'pull', arity: 0 }, '--no-cache': { name: 'no-cache', arity: 0 }, '--build-arg': { name: 'build-arg', arity: 2 },
    '--label': { name: 'label', arity: 2 }, '-q': { name: 'quiet', arity: 0 }, '--quiet': { name: 'quiet', arity: 0 },
    '--load': { name: 'load', arity: 0 }, '--push': { name: 'push', arity: 0 },
  }, 'docker buildx build')
  if (args.length !== 1) die(`ERROR: "docker buildx build" requires exactly 1 argument.\nSee 'docker buildx build --help'.\n\nUsage:  docker buildx build [OPTIONS] PATH | URL | -\n\nStart a build`)
  for (const t of flags.tag ?? []) if (!validRef(t)) die(`ERROR: invalid tag ${JSON.stringify(t)}: invalid reference format`)
  if (flags.platform && !/^[a-z0-9]+\/[a-z0-9_]+(\/v\d)?(,[a-z0-9]+\/[a-z0-9_]+(\/v\d)?)*$/.test(flags.platform))
    die(`ERROR: failed to parse platform ${flags.platform}: "${flags.platform}": unknown operating system or architecture: invalid argument`)
  if (state.mode === 'no-daemon') die(`ERROR: ${NO_DAEMON}`)
  const context = args[0]
  if (!existsSync(context) || !statSync(context).isDirectory()) die(`ERROR: unable to prepare context: path ${JSON.stringify(context)} not found`)
  const dockerfile = flags.file ?? path.join(context, 'Dockerfile')
  const shown = path.basename(dockerfile)
  const progress = (lines) => err(lines.join('\n'))
  const builder = state.builder ?? 'docker'
  progress([`#0 building with "${builder === 'docker' ? 'default' : 'builder'}" instance using ${builder} driver`, '', '#1 [internal] load build definition from ' + shown])
  if (!existsSync(dockerfile)) {
    progress([`#1 transferring dockerfile: 2B done`, '#1 DONE 0.0s'])
    die(`ERROR: failed to solve: failed to read dockerfile: open ${shown}: no such file or directory`)
  }
  const text = readFileSync(dockerfile, 'utf8')
  const from = text.match(/^FROM\s+(\S+)/im)?.[1] ?? 'scratch'
  progress([`#1 transferring dockerfile: ${text.length}B done`, '#1 DONE 0.0s', '',
    `#2 [internal] load metadata for docker.io/${from}`, '#2 DONE 0.6s', '',
    '#3 [internal] load .dockerignore', '#3 transferring context: 2B done', '#3 DONE 0.0s', '',
    `#4 [1/3] FROM docker.io/${from}`, '#4 CACHED', '',
    '#5 [2/3] RUN bun install --frozen-lockfile', '#5 0.412 bun install v1.1.30', '#5 DONE 2.1s', '',
    '#6 [3/3] RUN bun run build'])
  if (state.mode === 'hang-build') await hang()
  if (state.mode === 'build-fails') {
    progress(['#6 1.214 error: Module not found: Can\'t resolve \'@/lib/cache\'', '#6 ERROR: process "/bin/sh -c bun run build" did not complete successfully: exit code: 1'])
    die('ERROR: failed to solve: process "/bin/sh -c bun run build" did not complete successfully: exit code: 1')
  }
  const id = createHash('sha256').update(text).update(flags.platform ?? '').digest('hex')
  if (builder !== 'docker' && !flags.load && !flags.push) {
    progress(['#6 DONE 14.2s', `WARNING: No output specified with ${builder} driver. Build result will only remain in the build cache. To push result image into registry use --push or to load image into docker use --load`])
    return
  }
  progress(['#6 12.30 ✓ Compiled successfully', '#6 DONE 14.2s', '', '#7 exporting to image', '#7 exporting layers 0.3s done',
    `#7 writing image sha256:${id} done`, ...(flags.tag ?? []).map((t) => `#7 naming to ${t.includes('/') ? t : `docker.io/library/${t}`} done`), '#7 DONE 0.3s'])
  for (const t of flags.tag ?? []) {
    const ref = validRef(t)
    const name = `${ref.repo}:${ref.tag}`
    state.images = state.images.filter((i) => i.ref !== name)
    state.images.push({ ref: name, id, platform: flags.platform ?? 'linux/amd64', context: path.resolve(context) })
  }
}

function push(list) {
  const { args } = parseFlags(list, { '-a': { name: 'all-tags', arity: 0 }, '--all-tags': { name: 'all-tags', arity: 0 }, '-q': { name: 'quiet', arity: 0 }, '--quiet': { name: 'quiet', arity: 0 } }, 'docker push')
  if (args.length !== 1) die(`"docker push" requires exactly 1 argument.\nSee 'docker push --help'.\n\nUsage:  docker push [OPTIONS] NAME[:TAG]\n\nUpload an image to a registry`)
  const ref = validRef(args[0])
  if (!ref) die(`invalid reference format`)
  if (state.mode === 'no-daemon') die(NO_DAEMON)
  const name = `${ref.repo}:${ref.tag}`
  out(`The push refers to repository [${ref.repo.includes('/') && /[.:]|^localhost\//.test(ref.repo) ? ref.repo : `docker.io/${ref.repo.includes('/') ? ref.repo : `library/${ref.repo}`}`}]`)
  const image = state.images.find((i) => i.ref === name)
  if (!image) {
    if (state.images.some((i) => i.ref.startsWith(`${ref.repo}:`))) die(`tag does not exist: ${name}`)
    die(`An image does not exist locally with the tag: ${ref.repo}`)
  }
  out('5f70bf18a086: Preparing\n9c1b6dd6c1e6: Preparing')
  if (state.mode === 'push-denied') die('denied: requested access to the resource is denied')
  out(`5f70bf18a086: Pushed\n9c1b6dd6c1e6: Layer already exists\n${ref.tag}: digest: sha256:${image.id} size: 1570`)
  if (!state.pushed.includes(name)) state.pushed.push(name)
}
