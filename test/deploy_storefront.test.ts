// deploy_storefront.mts, run as a user runs it: a REAL git repository for the tag, the docker and
// nomad test doubles for the build, the push and the cluster.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { root, sandbox, type Sandbox } from './helpers.ts'

const SCRIPT = 'deploy_storefront.mts'
const JOBFILE = path.join(root, 'jobs/cedra-storefront.nomad')
const IMAGE = 'registry.test:5000/cedra/storefront'
let sb: Sandbox
let src: string

beforeEach(() => {
  sb = sandbox()
  sb.stub('docker')
  src = path.join(sb.dir, 'cedra-storefront')
  mkdirSync(src)
  writeFileSync(path.join(src, 'Dockerfile'), 'FROM oven/bun:1 AS build\nWORKDIR /app\nCOPY . .\nRUN bun install --frozen-lockfile && bun run build\n')
  writeFileSync(path.join(src, 'package.json'), '{"name":"cedra-storefront"}\n')
  git('init', '-q', '-b', 'main')
  commitAll('first')
})

function git(...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=Test', '-c', 'user.email=test@example.com', ...args], { cwd: src, encoding: 'utf8' }).trim()
}
/** Change the app and commit it: a new commit, a new tag. */
function commitAll(message: string): string {
  writeFileSync(path.join(src, 'version.ts'), `export const version = ${JSON.stringify(message)}\n`)
  git('add', '-A')
  git('commit', '-q', '-m', message)
  return git('rev-parse', '--short=12', 'HEAD')
}
const head = () => git('rev-parse', '--short=12', 'HEAD')
const env = (extra: Record<string, string | undefined> = {}) => ({ env: { STOREFRONT_SOURCE_DIR: src, STOREFRONT_IMAGE: IMAGE, ...extra } })
// The Vault variables come last: the cluster's version decides them (2.0.5 by default: workload identity).
const VAULT = ' -var=vault_auth=identity -var=vault_role=cedra-storefront'
const plan = (tag: string, extra = '') => `job plan -var=image=${IMAGE} -var=image_tag=${tag} -var=vault_secret=secret/data/cedra/prod${extra}${VAULT} ${JOBFILE}`
const run = (index: number, tag: string, extra = '') => `job run -check-index ${index} -detach -var=image=${IMAGE} -var=image_tag=${tag} -var=vault_secret=secret/data/cedra/prod${extra}${VAULT} ${JOBFILE}`
// Before the plan: is a canary waiting for promotion? (a deploy would replace it: refused without --replace-canary)
const LATEST = 'job deployments -latest -json cedra-storefront'
// The job's lock, taken before anything is read (its holder file's random temporary path normalised).
const LOCK = 'var lock -early-return -shell=false nomad/jobs/cedra-storefront/lock @HOLDER sh -c echo locked; exec cat >/dev/null'
/** The nomad calls, the lock's holder file normalised to @HOLDER. */
const nomadCalls = () => sb.commands('nomad').map((c) => c.replace(/@\S+\/holder\.json/, '@HOLDER'))
// Who the tag's description names: the OS user and host (the sandbox's env has no CI variables).
const BY = `${os.userInfo().username}@${os.hostname()}`
// A good release tagged storefront-<image tag> (after reading the versions), then the record read and written (check-and-set).
const tagApply = (tag: string, version: number) => `job tag apply -name storefront-${tag} -description commit ${tag}, image ${IMAGE}:${tag}, by ${BY} -version ${version} cedra-storefront`
const RECORD_GET = 'var get -out json nomad/jobs/cedra-storefront/releases'
const recordPut = (index: number) => `var put -check-index ${index} -in=json -out=none -`
/** The job's modify index in the double (what the next plan reports, and the run must give as -check-index). */
const jobIndex = () => Number(sb.readState().jobs['cedra-storefront'].modifyIndex)
/** The release record's modify index in the double (0: not written yet). */
const recordIndex = () => Number(sb.readState().vars?.['nomad/jobs/cedra-storefront/releases']?.ModifyIndex ?? 0)
const record = () => JSON.parse(sb.readState().vars['nomad/jobs/cedra-storefront/releases'].Items.history)
const dockerCalls = (tag: string) => [
  'version --format {{.Server.Version}}',
  'buildx version',
  `build --platform linux/amd64 --load -t ${IMAGE}:${tag} ${src}`,
  `push ${IMAGE}:${tag}`,
]

/** A first deployment of the current commit, successful (version 0). */
async function firstDeploy() {
  const r = await sb.run(SCRIPT, [], env())
  expect(r.code, r.stderr).toBe(0)
  return r
}

describe('deploy_storefront: the three outcomes', () => {
  it('first deploy: plans BEFORE any docker call, builds for linux/amd64, pushes, runs with the plan\'s check-index, deployment successful', async () => {
    const tag = head()
    expect(tag).toMatch(/^[0-9a-f]{12}$/)
    const r = await firstDeploy()
    expect(nomadCalls()).toEqual([
      LOCK,
      LATEST,
      plan(tag),
      run(0, tag),
      'job history -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      // successful: tagged, then recorded (no record yet: check-index 0)
      'job history -json cedra-storefront',
      tagApply(tag, 0),
      RECORD_GET,
      recordPut(0),
    ])
    expect(sb.commands('docker')).toEqual(dockerCalls(tag))
    // Order across tools: the lock and the plan first, the run only after the push, the tag and the record last.
    const tools = sb.calls().map((c) => `${c.tool} ${c.argv[0]} ${c.argv[1] ?? ''}`.trim())
    expect(tools).toEqual(['nomad version', 'nomad server members', 'nomad var lock', 'nomad job deployments', 'nomad job plan', 'docker version --format', 'docker buildx version', `docker build --platform`, `docker push ${IMAGE}:${tag}`,
      'nomad job run', 'nomad job history', 'nomad job deployments', 'nomad job deployments', 'nomad job history', 'nomad job tag', 'nomad var get', 'nomad var put'])
    expect(sb.readState().jobs['cedra-storefront'].versions[0].versionTag).toMatchObject({ Name: `storefront-${tag}` })
    expect(record()).toEqual([expect.objectContaining({ job: 'cedra-storefront', version: 0, action: 'deploy', outcome: 'deployed', commit: tag, image: `${IMAGE}:${tag}`, tag: `storefront-${tag}` })])
    expect(r.stdout).toContain(`Release: storefront-${tag} = cedra-storefront version 0 (deployed)`)
    expect(r.stdout).toMatch(/^cedra-storefront version 0: deployment [0-9a-f]{8} successful \(Deployment completed successfully\)$/m)
    expect(r.stdout).not.toContain('promote_storefront')
    expect(r.stdout).toContain('nomad alloc logs -f -job cedra-storefront')
    expect(sb.readState('docker').pushed).toEqual([`${IMAGE}:${tag}`])
  })

  it('streams the build\'s and the push\'s progress to stderr, not stdout', async () => {
    const r = await firstDeploy()
    expect(r.stderr).toContain('#1 [internal] load build definition from Dockerfile')
    expect(r.stderr).toContain(`#7 naming to ${IMAGE}:${head()} done`)
    expect(r.stderr).toContain(`The push refers to repository [${IMAGE}]`)
    expect(r.stdout).not.toMatch(/#\d+ |The push refers/)
  })

  it('a new commit: the canary is healthy and waits for promotion (exit 0), with the promote and revert commands', async () => {
    await firstDeploy()
    const tag = commitAll('second')
    const before = sb.commands('nomad').length
    const [index, recorded] = [jobIndex(), recordIndex()]
    expect(recorded).toBeGreaterThan(0)
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code, r.stderr).toBe(0)
    expect(nomadCalls().slice(before)).toEqual([
      LOCK,
      LATEST,
      plan(tag),
      run(index, tag),
      'job history -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      'job deployments -latest -json cedra-storefront',
      // a canary waiting: recorded, not tagged (promote_storefront tags it)
      RECORD_GET,
      recordPut(recorded),
      'job history -json cedra-storefront',
    ])
    expect(record()[0]).toMatchObject({ version: 1, action: 'deploy', outcome: 'canary-waiting', commit: tag })
    expect(record()[0].tag).toBeUndefined()
    expect(r.stdout).toContain(`Release: cedra-storefront version 1 (canary-waiting: tagged storefront-${tag} once promoted)`)
    expect(r.stdout).toMatch(/^cedra-storefront version 1: canary healthy, deployment [0-9a-f]{8} waiting for promotion$/m)
    expect(r.stdout).toMatch(/^ {2}promote it to every instance: +npx tsx deploy\/promote_storefront\.mts$/m)
    expect(r.stdout).toMatch(/^ {2}or roll back to version 0: +npx tsx deploy\/revert_storefront\.mts 0$/m)
    expect(r.stdout).toMatch(/^ {2}nomad job promote cedra-storefront$/m)
    expect(r.stdout).toMatch(/^ {2}nomad job revert cedra-storefront 0$/m)
  })

  it('the revert command names the last STABLE version, not merely the previous one', async () => {
    await firstDeploy() // version 0, stable
    commitAll('second')
    expect((await sb.run(SCRIPT, [], env())).code).toBe(0) // version 1: canary waiting, never promoted
    commitAll('third')
    // Over a waiting canary: refused (it would be replaced), unless --replace-canary says so.
    const refused = await sb.run(SCRIPT, [], env())
    expect(refused.code).toBe(2)
    expect(refused.stderr).toMatch(/a canary of cedra-storefront version 1 waits for promotion \(deployment [0-9a-f]{8}\): promote it .* or pass --replace-canary/)
    expect(sb.calls('docker').filter((c) => c.argv[0] === 'build')).toHaveLength(2)
    const r = await sb.run(SCRIPT, ['--replace-canary'], env()) // version 2 supersedes it
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('warning: replacing the canary of version 1')
    expect(r.stdout).toMatch(/cedra-storefront version 2: canary healthy/)
    expect(r.stdout).toMatch(/^ {2}nomad job revert cedra-storefront 0$/m)
  })

  it('a failing canary: exit 1 with Nomad\'s reason, and it says the job rolled back', async () => {
    const first = head()
    await firstDeploy()
    const broken = commitAll('broken')
    sb.setState({ outcome: 'failed' })
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^cedra-storefront version 1: deployment [0-9a-f]{8} failed: Failed due to unhealthy allocations - rolling back to job version 0; Nomad's rollback is done: version 2 \(the specification of version 0\), deployment [0-9a-f]{8} successful$/m)
    expect(r.stdout).not.toContain('promote_storefront')
    // Nomad registered version 0 again as version 2 (the stub's auto-revert).
    const images = sb.readState().jobs['cedra-storefront'].versions.map((v: { image: string }) => v.image)
    expect(images).toEqual([`${IMAGE}:${first}`, `${IMAGE}:${broken}`, `${IMAGE}:${first}`])
    // The canary that failed is named (the deployment's own unhealthy allocation, not any of the job's),
    // with the command for what it printed; that command, run, shows the task's error.
    const deployment = sb.readState().jobs['cedra-storefront'].deployments[1]
    const canary = deployment.TaskGroups.storefront.PlacedCanaries[0]
    expect(r.stdout).toContain(`The allocation that failed it: ${canary.slice(0, 8)} (task storefront, last event: `)
    const logs = r.stdout.match(/^ {2}(nomad alloc logs -stderr [0-9a-f]{8} storefront) /m)![1]
    const printed = execFileSync(path.join(sb.bin, 'nomad'), logs.split(' ').slice(1), { env: { ...process.env, STUB_STATE: sb.state, NOMAD_ADDR: 'http://127.0.0.1:4646' }, encoding: 'utf8' })
    expect(printed).toMatch(/^Error: /m)
  })

  it('--timeout bounds the wait: exit 1, and the deployment goes on in Nomad', async () => {
    sb.setState({ polls: 100_000 })
    const r = await sb.run(SCRIPT, ['--timeout', '1'], env())
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/^cedra-storefront version 0: deployment [0-9a-f]{8} still running after 1s \(--timeout\); it goes on in Nomad$/m)
  })

  it('auto-promote (STOREFRONT_AUTO_PROMOTE=true): Nomad promotes the healthy canary itself, the deployment ends successful', async () => {
    await firstDeploy()
    const tag = commitAll('second')
    const index = jobIndex()
    const r = await sb.run(SCRIPT, [], env({ STOREFRONT_AUTO_PROMOTE: 'true' }))
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad')).toContain(run(index, tag, ' -var=auto_promote=true'))
    expect(sb.commands('nomad')).toContain(tagApply(tag, 1))
    expect(r.stdout).toMatch(/^cedra-storefront version 1: deployment [0-9a-f]{8} successful/m)
    expect(r.stdout).not.toContain('waiting for promotion')
  })
})

describe('deploy_storefront: nothing needless, nothing overwritten', () => {
  it('the same commit again: the plan shows no change, so no build, no push, no run — and it says so', async () => {
    await firstDeploy()
    const nomadBefore = sb.commands('nomad').length
    const dockerBefore = sb.calls('docker').length
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`cedra-storefront already runs ${IMAGE}:${head()} (the plan shows no change): nothing was built, pushed or run`)
    expect(nomadCalls().slice(nomadBefore)).toEqual([LOCK, LATEST, plan(head())])
    expect(sb.calls('docker').slice(dockerBefore)).toEqual([])
    expect(sb.readState().jobs['cedra-storefront'].versions).toHaveLength(1)
  })

  it('passes STOREFRONT_COUNT as -var count, the plan\'s modify index as -check-index', async () => {
    await firstDeploy()
    const tag = commitAll('second')
    const index = jobIndex()
    const r = await sb.run(SCRIPT, [], env({ STOREFRONT_COUNT: '3' }))
    expect(r.code, r.stderr).toBe(0)
    expect(sb.commands('nomad')).toContain(plan(tag, ' -var=count=3'))
    expect(sb.commands('nomad')).toContain(run(index, tag, ' -var=count=3'))
    expect(sb.readState().jobs['cedra-storefront'].versions[1].count).toBe(3)
  })

  it('stops without overwriting when the job changed during the build (check-index)', async () => {
    await firstDeploy()
    commitAll('second')
    sb.setState({ raceAfterPlan: true })
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cedra-storefront changed on the cluster since the plan \(.*conflicting job modify index.*\): nothing was overwritten/)
    expect(sb.readState().jobs['cedra-storefront'].versions.at(-1).key).toBe('someone-else')
  })
})

describe('deploy_storefront: the image tag comes from git', () => {
  it('refuses a tree with uncommitted changes (exit 2, no call at all) and names them', async () => {
    writeFileSync(path.join(src, 'package.json'), '{"name":"changed"}\n')
    writeFileSync(path.join(src, 'new.ts'), 'export {}\n')
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/STOREFRONT_SOURCE_DIR \(.*\) has uncommitted changes \(2 files: package\.json, new\.ts\): commit them, or pass --allow-dirty/)
    expect(sb.calls()).toEqual([])
  })

  it('--allow-dirty deploys them as <commit>-dirty-<hash of the changes>, warns, and the same changes give the same tag', async () => {
    const commit = head()
    writeFileSync(path.join(src, 'new.ts'), 'export const a = 1\n')
    const r = await sb.run(SCRIPT, ['--allow-dirty'], env())
    expect(r.code, r.stderr).toBe(0)
    const tag = sb.readState('docker').pushed[0].split(':').at(-1)
    expect(tag).toMatch(new RegExp(`^${commit}-dirty-[0-9a-f]{12}$`))
    expect(r.stderr).toMatch(new RegExp(`warning: STOREFRONT_SOURCE_DIR .* has uncommitted changes \\(new\\.ts\\): deploying them as ${tag} \\(--allow-dirty\\)`))
    expect(nomadCalls().slice(0, 3)).toEqual([LOCK, LATEST, plan(tag)])
    // Same changes: same tag, nothing to do. Other changes: another tag.
    const again = await sb.run(SCRIPT, ['--allow-dirty'], env())
    expect(again.stdout).toContain(`already runs ${IMAGE}:${tag}`)
    writeFileSync(path.join(src, 'new.ts'), 'export const a = 2\n')
    const other = await sb.run(SCRIPT, ['--allow-dirty'], env())
    expect(other.code, other.stderr).toBe(0)
    expect(sb.readState('docker').pushed[1]).toMatch(new RegExp(`:${commit}-dirty-[0-9a-f]{12}$`))
    expect(sb.readState('docker').pushed[1]).not.toBe(sb.readState('docker').pushed[0])
  })

  it('--allow-dirty: an untracked nested git repository is hashed by its commit and changes (no EISDIR); a retargeted symlink gives another tag', async () => {
    const nested = path.join(src, 'vendor-lib')
    mkdirSync(nested)
    writeFileSync(path.join(nested, 'a.ts'), 'export const x = 1\n')
    execFileSync('git', ['-c', 'user.name=T', '-c', 'user.email=t@example.com', 'init', '-q'], { cwd: nested })
    execFileSync('git', ['-c', 'user.name=T', '-c', 'user.email=t@example.com', 'add', '-A'], { cwd: nested })
    execFileSync('git', ['-c', 'user.name=T', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'x'], { cwd: nested })
    symlinkSync('target-one', path.join(src, 'link'))
    const r = await sb.run(SCRIPT, ['--allow-dirty', '--dry-run'], env())
    expect(r.code, r.stderr).toBe(0)
    const tag = (r.stderr.match(/deploying them as (\S+) \(--allow-dirty\)/) ?? [])[1]
    expect(tag).toMatch(/-dirty-[0-9a-f]{12}$/)
    rmSync(path.join(src, 'link'))
    symlinkSync('target-two', path.join(src, 'link'))
    const again = await sb.run(SCRIPT, ['--allow-dirty', '--dry-run'], env())
    expect((again.stderr.match(/deploying them as (\S+) \(--allow-dirty\)/) ?? [])[1]).not.toBe(tag)
  })

  it('a checkout owned by another user ("dubious ownership") is named as such, with the safe.directory fix', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run'], env({ GIT_TEST_ASSUME_DIFFERENT_OWNER: '1' }))
    expect(r.stderr).toContain('belongs to another user and git refuses to read it ("dubious ownership"): if you trust it, git config --global --add safe.directory')
    expect(r.stderr).not.toContain('make a commit first')
  })

  it('refuses a source without a Dockerfile (exit 2, no call at all)', async () => {
    rmSync(path.join(src, 'Dockerfile'))
    commitAll('no dockerfile')
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/STOREFRONT_SOURCE_DIR \(.*cedra-storefront\) has no Dockerfile/)
    expect(sb.calls()).toEqual([])
  })

  it('refuses a source that is not a git work tree, or does not exist', async () => {
    rmSync(path.join(src, '.git'), { recursive: true })
    let r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/STOREFRONT_SOURCE_DIR \(.*\) is not a git work tree: the image tag is its commit/)
    r = await sb.run(SCRIPT, [], env({ STOREFRONT_SOURCE_DIR: path.join(sb.dir, 'nope') }))
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/STOREFRONT_SOURCE_DIR \(.*nope\) does not exist/)
    expect(sb.calls()).toEqual([])
  })

  it('STOREFRONT_SOURCE_DIR defaults to ../cedra-storefront, relative to the repository root', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run'], env({ STOREFRONT_SOURCE_DIR: undefined }))
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`docker build --platform linux/amd64 --load -t "${IMAGE}:$TAG" ${path.resolve(root, '../cedra-storefront')}`)
  })
})

describe('deploy_storefront: a cluster that refuses or cannot be reached costs seconds, not a build', () => {
  it('a refused token (403): exit 2 before the plan, and NO docker command ran', async () => {
    sb.setState({ mode: 'forbidden' })
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/Nomad at http:\/\/127\.0\.0\.1:4646 refused the token \(403\): check NOMAD_TOKEN/)
    expect(nomadCalls()).toEqual([LOCK]) // taking the job's lock already meets the 403
    expect(sb.calls('docker')).toEqual([])
  })

  it('an unreachable cluster: exit 1 at the plan, a connection problem, and NO docker command ran', async () => {
    sb.setState({ mode: 'unreachable' })
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/cannot reach Nomad at http:\/\/127\.0\.0\.1:4646: a connection problem/)
    expect(sb.calls('docker')).toEqual([])
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })
})

describe('deploy_storefront: docker', () => {
  it('a docker engine that does not answer: refused (exit 2) after the plan, before any build', async () => {
    sb.setState({ mode: 'no-daemon' }, 'docker')
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/docker version failed \(Cannot connect to the Docker daemon at .*\): is the engine running\? Start Docker Desktop/)
    expect(sb.commands('docker')).toEqual(dockerCalls(head()).slice(0, 2))
    expect(nomadCalls()).toEqual([LOCK, LATEST, plan(head())])
  })

  it('without buildx: refused (exit 2), says how to install it', async () => {
    sb.setState({ mode: 'no-buildx' }, 'docker')
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/docker buildx version failed .*: install the buildx plugin/)
    expect(sb.commands('docker')).not.toContainEqual(expect.stringMatching(/^build /))
  })

  it('a failed build: exit 1 with docker\'s error, nothing pushed, nothing run', async () => {
    sb.setState({ mode: 'build-fails' }, 'docker')
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/✗ Build .* failed: docker build of .* failed \(exit 1\): ERROR: failed to solve: process "\/bin\/sh -c bun run build" did not complete successfully: exit code: 1 \(its output is above\)/)
    expect(sb.commands('docker')).not.toContainEqual(expect.stringMatching(/^push /))
    expect(nomadCalls()).toEqual([LOCK, LATEST, plan(head())])
  })

  it('a refused push: exit 1, says to docker login to the registry, nothing run', async () => {
    sb.setState({ mode: 'push-denied' }, 'docker')
    const r = await sb.run(SCRIPT, [], env())
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/docker push .* failed \(exit 1\): denied: requested access to the resource is denied; log in first: docker login registry\.test:5000/)
    expect(nomadCalls()).toEqual([LOCK, LATEST, plan(head())])
  })

  it.each([
    ['docker', /docker not found on PATH \(install Docker with buildx/],
    ['git', /git not found on PATH \(install git\)/],
  ])('refuses without %s on PATH (exit 2, says how to install it), no call at all', async (tool, message) => {
    const r = await sb.run(SCRIPT, [], { env: { ...env().env, PATH: sb.pathWithout(tool) } })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(r.stderr.match(/^ {2}- /gm)).toHaveLength(1) // that problem only
    expect(sb.calls()).toEqual([])
  })

  it('gives docker none of the tokens, and no secret reaches any argv or the output', async () => {
    const secrets = { NOMAD_TOKEN: 'canary-nomad-token-5711', VAULT_TOKEN: 'canary-vault-token-5712', SESSION_SECRET: 'canary-session-5713' }
    const r = await sb.run(SCRIPT, [], env(secrets))
    expect(r.code, r.stderr).toBe(0)
    for (const call of sb.calls('docker')) expect(call.env).toEqual({})
    for (const call of sb.calls()) expect(call.argv.join(' ')).not.toMatch(/canary-/)
    expect(sb.calls('nomad').every((c) => c.env.NOMAD_TOKEN === secrets.NOMAD_TOKEN && c.env.VAULT_TOKEN === undefined)).toBe(true)
    expect(r.output).not.toMatch(/canary-/)
  })
})

describe('deploy_storefront: flags and configuration', () => {
  it('--help prints the header: purpose, usage, tools, variables, exit codes', async () => {
    const r = await sb.run(SCRIPT, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^deploy_storefront: build the CEDRA storefront image/)
    for (const s of ['Usage: npx tsx deploy/deploy_storefront.mts', 'Needs: nomad CLI 1.6+ (the servers\' version; 2.0 is current); docker with buildx', 'STOREFRONT_SOURCE_DIR (default ../cedra-storefront',
      'STOREFRONT_IMAGE (required', 'STOREFRONT_COUNT', 'STOREFRONT_AUTO_PROMOTE', '--allow-dirty', '--timeout D', 'docker login', 'Exit: 0'])
      expect(r.stdout).toContain(s)
    expect(sb.calls()).toEqual([])
  })

  it('reports ALL missing and invalid variables in one message, runs nothing', async () => {
    const r = await sb.run(SCRIPT, ['--timeout', 'soon'], env({ STOREFRONT_IMAGE: undefined, STOREFRONT_SOURCE_DIR: '', STOREFRONT_COUNT: '1', STOREFRONT_AUTO_PROMOTE: 'yes' }))
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('refused (nothing was changed):')
    expect(r.stderr).toContain('STOREFRONT_IMAGE is not set')
    expect(r.stderr).toContain('STOREFRONT_SOURCE_DIR is empty (unset it to use the default ../cedra-storefront)')
    expect(r.stderr).toContain('STOREFRONT_COUNT="1" must be a whole number of at least 2')
    expect(r.stderr).toContain('STOREFRONT_AUTO_PROMOTE="yes" must be true or false')
    expect(r.stderr).toContain('--timeout soon: give a positive duration')
    expect(sb.calls()).toEqual([])
  })

  it.each([
    ['a tag', `${IMAGE}:latest`, /must be an image repository without a tag: the script tags it with the commit \(registry\.test:5000\/cedra\/storefront\)/],
    ['a digest', `${IMAGE}@sha256:${'a'.repeat(64)}`, /must be an image repository without a digest/],
    ['upper case', 'registry.test/Cedra/Storefront', /lowercase letters, digits and \. _ -/],
    ['a space', 'registry.test/cedra storefront', /lowercase letters, digits and \. _ -/],
  ])('refuses a STOREFRONT_IMAGE with %s (exit 2)', async (_what, image, message) => {
    const r = await sb.run(SCRIPT, [], env({ STOREFRONT_IMAGE: image }))
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
    expect(sb.calls()).toEqual([])
  })

  it('--dry-run prints every command of a real run, in order, and runs nothing', async () => {
    const tag = head()
    const r = await sb.run(SCRIPT, ['--dry-run'], env({ STOREFRONT_COUNT: '4' }))
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.trim().split('\n')).toEqual([
      'export NOMAD_ADDR=http://127.0.0.1:4646',
      '# vault_auth: identity on Nomad 1.10+ (workload identity); token on 1.6 (legacy policies); on 1.7-1.9 DEPLOY_VAULT_AUTH, default token',
      `nomad job plan -var=image=${IMAGE} -var=image_tag=${tag} -var=vault_secret=secret/data/cedra/prod -var=count=4${VAULT} ${JOBFILE}`,
      `docker build --platform linux/amd64 --load -t ${IMAGE}:${tag} ${src}`,
      `docker push ${IMAGE}:${tag}`,
      `nomad job run -check-index "$JOB_MODIFY_INDEX_FROM_PLAN" -detach -var=image=${IMAGE} -var=image_tag=${tag} -var=vault_secret=secret/data/cedra/prod -var=count=4${VAULT} ${JOBFILE}`,
      '# then follow the deployment: nomad job deployments -latest cedra-storefront',
      '# held meanwhile (Nomad 1.7+): the lock nomad var lock nomad/jobs/cedra-storefront/lock',
      '# once it is successful (Nomad 1.9+; a canary: once promote_storefront.mts has promoted it), VERSION being the version the run registered:',
      `nomad job tag apply -name storefront-${tag} -description 'commit ${tag}, image ${IMAGE}:${tag}, by ${BY}' -version "$VERSION" cedra-storefront`,
      '# every outcome is written to the release record (nomad var put -check-index); read it with:',
      'nomad var get -item history nomad/jobs/cedra-storefront/releases',
    ])
    expect(sb.calls()).toEqual([])
  })

  it('--dry-run with .env.example, no storefront checkout, no nomad nor docker: the whole plan, with warnings', async () => {
    const r = await sb.run(SCRIPT, ['--dry-run', '--env-file', path.join(root, '.env.example')], {
      env: { PATH: sb.pathWithout('nomad', 'docker'), NOMAD_ADDR: undefined, STOREFRONT_SOURCE_DIR: path.join(sb.dir, 'absent') }, cwd: root,
    })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/warning: a real run would refuse: nomad not found on PATH/)
    expect(r.stderr).toMatch(/warning: a real run would refuse: docker not found on PATH/)
    expect(r.stderr).toMatch(/warning: a real run would refuse: STOREFRONT_SOURCE_DIR \(.*absent\) does not exist/)
    expect(r.stdout).toContain(`TAG=$(git -C ${path.join(sb.dir, 'absent')} rev-parse --short=12 HEAD)`)
    expect(r.stdout).toContain('nomad job plan -var=image=registry.example.internal/cedra/storefront "-var=image_tag=$TAG" -var=vault_secret=secret/data/cedra/prod -var=vault_auth=identity -var=vault_role=cedra-storefront jobs/cedra-storefront.nomad')
    expect(r.stdout).toContain('docker push "registry.example.internal/cedra/storefront:$TAG"')
    expect(r.stdout).not.toContain('00000000-0000-0000-0000-000000000000')
    expect(sb.calls()).toEqual([])
  })
})

describe('the docker test double answers as docker does', () => {
  const docker = (...args: string[]) => spawnSync(path.join(sb.bin, 'docker'), args, { env: { ...process.env, STUB_STATE: sb.state }, encoding: 'utf8' })

  it('build: needs a Dockerfile in the context, streams progress on stderr; push: only a tag that was built', () => {
    const empty = path.join(sb.dir, 'empty')
    mkdirSync(empty)
    let r = docker('build', '--platform', 'linux/amd64', '-t', `${IMAGE}:abc`, empty)
    expect(r.status).toBe(1)
    expect(r.stderr).toContain('ERROR: failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory')
    r = docker('push', `${IMAGE}:abc`)
    expect(r.status).toBe(1)
    expect(r.stderr).toBe(`An image does not exist locally with the tag: ${IMAGE}\n`)
    r = docker('build', '--platform', 'linux/amd64', '-t', `${IMAGE}:abc`, src)
    expect(r.status).toBe(0)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain(`#7 naming to ${IMAGE}:abc done`)
    expect(docker('push', `${IMAGE}:other`).stderr).toBe(`tag does not exist: ${IMAGE}:other\n`)
    r = docker('push', `${IMAGE}:abc`)
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/^abc: digest: sha256:[0-9a-f]{64} size: \d+$/m)
    expect(docker('build', '--platfrom', 'linux/amd64', src).status).toBe(125)
    expect(docker('build', '-t', 'Bad:Tag', src).stderr).toContain('invalid reference format')
  })
})
