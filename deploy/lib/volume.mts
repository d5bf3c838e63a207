// Host volumes (the two volume scripts, whose whole run is volumeScript): the directory over ssh (look,
// make), and how Nomad learns of it: on Nomad 1.10+ a dynamic host volume registered through the API (no configuration edit, no
// restart); before, the static block a person adds by hand. No script deletes or deregisters a volume.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { EXIT, exit, fail, onExit, refuse, report, shq, start, step } from './env.mts'
import { atLeast, nomadConnection, nomadError, nomadVersions, type Nomad } from './nomad.mts'
import { clientNodes, type Node } from './nodes.mts'
import { openSsh, sshDryRun, sshTargets, unframed, type Ssh, type SshTarget } from './ssh.mts'

// Fixed remote scripts; the path arrives as "$1". LOOK only reads: "absent", "dir MODE" or "other".
const LOOK_DIR = 'if [ -d "$1" ]; then echo "dir $(stat -L -c %a -- "$1")"; elif [ -e "$1" ] || [ -L "$1" ]; then echo other; else echo absent; fi'
const MAKE_DIR = 'mkdir -p -- "$1" && chmod 755 -- "$1"'

/**
 * The whole run of a volume script (deploy_arango_volume, deploy_valkey_volume: the same job for two
 * volumes): check -> ask Nomad which clients the hosts are -> look at each host -> make the directory
 * and register it (1.10+) -> report per host.
 */
export async function volumeScript(o: { url: string; volume: string; variable: string; fallback: string; service: string; next: string }) {
  const { volume, variable, next } = o
  // Check
  const { check, dryRun } = start(o.url)
  const targets = sshTargets(check)
  const nomad = nomadConnection(check)
  const dir = check.remotePath(variable, o.fallback)
  check.done()
  report({ host: targets[0]?.host })

  if (dryRun) {
    console.log(`# a real run first checks in Nomad that each host is a ready, eligible client with docker
# (nomad node status -json), then sends these over one ssh connection per host; MAKE only when
# ${dir} is missing or not 755`)
    console.log(nomad.exportLine)
    for (const target of targets) console.log([`# ${target.destination}`, ...volumeCommands(target, dir)].join('\n'))
    console.log(registerCommands(volume, dir).join('\n'))
    console.log(`# Nomad 1.6-1.9 instead:\n${hostVolumeBlock(volume, dir).replace(/^/gm, '# ')}`)
    exit(EXIT.done)
  }

  // Nomad: each host is a client that can run the service (docker); its version says how the volume is declared
  step(`Ask Nomad at ${nomad.addr} which clients ${targets.map((t) => t.host).join(', ')} are`)
  const { server } = await nomadVersions(nomad)
  const nodes = await clientNodes(nomad, targets.map((t) => t.host), 'docker')
  const dynamic = atLeast(server, '1.10')
  const known = dynamic ? await knownVolumes(nomad, nodes, volume, dir, variable) : undefined

  // Look at each server (one authenticated connection per host)
  const looked = []
  for (const target of targets) {
    step(`Connect to ${target.destination} (port ${target.port}) and look at ${dir}`)
    const ssh = await openSsh(target)
    looked.push({ target, ssh, state: await lookAtVolume(ssh, target, dir, variable) })
  }

  // --- point of no return ---
  const done: { host: string; outcome: Done['outcome']; message: string }[] = []
  for (const { target, ssh, state } of looked) {
    const made = await makeVolume(ssh, target, dir, state)
    await ssh.close()
    const registered = known && (await registerVolume(nomad, target.host, nodes.get(target.host)!, volume, dir, known.get(target.host)!))
    const outcome = made.outcome === 'done' || registered?.outcome === 'done' ? 'done' : 'unchanged'
    done.push({ host: target.host, outcome, message: [made.message, registered?.message].filter(Boolean).join('; ') })
  }

  // Report
  const changed = done.some((d) => d.outcome === 'done')
  report({ outcome: changed ? 'done' : 'unchanged', message: done.map((d) => d.message).join('; '), hosts: done, next: [next] })
  console.log(done.map((d) => d.message).join('\n'))
  console.log(dynamic
    ? `\nNomad ${server} knows "${volume}" on ${[...nodes.values()].map((n) => n.Name).join(', ')}: ${o.service} uses it by name; no configuration edit, no restart.`
    : `\nNomad ${server} has no dynamic host volumes (1.10+): declare it by hand, once per client.\n${targets.map((t) => hostVolumeBlock(volume, dir, t.host)).join('\n')}`)
  console.log(`
Useful commands:
${targets.map((t) => `  ${t.login} ls -ld ${dir}`).join('\n')}
  ${dynamic ? `nomad volume status -type host ${volume}` : `nomad node status -verbose <node-id>   ("Host Volumes" lists ${volume} once Nomad has restarted)`}
  ${next}`)
}

/** The commands a dry run of a volume script prints (the second runs only when needed). */
function volumeCommands(target: SshTarget, dir: string): string[] {
  return sshDryRun(target, [
    { name: 'LOOK', what: `what is at ${dir}: "absent", "dir MODE" or "other" (reads only)`, script: LOOK_DIR, args: [dir] },
    { name: 'MAKE', what: `create ${dir}, mode 755 (a real run: only when LOOK says absent or another mode)`, script: MAKE_DIR, args: [dir] },
  ])
}

/** What is at `dir` on the server: "absent" or "dir MODE"; something else there is refused (exit 2). */
async function lookAtVolume(ssh: Ssh, target: SshTarget, dir: string, variable: string): Promise<string> {
  const look = await ssh.run(LOOK_DIR, [dir])
  if (!look.ok) fail(`looking at ${dir} on ${target.destination}: ${ssh.why(look)}`)
  if (!look.framed) refuse([unframed(target)])
  const state = look.stdout.trim()
  if (state !== 'absent' && state !== 'other' && !/^dir [0-7]{3,4}$/.test(state))
    refuse([`looking at ${dir} on ${target.destination} printed ${JSON.stringify(state.slice(0, 80))}, not what the fixed remote script prints: nothing was changed`])
  if (state === 'other') refuse([`${dir} exists on ${target.destination} but is not a directory: move it away or set ${variable}`])
  return state
}

type Done = { outcome: 'done' | 'unchanged'; message: string }

/** Create `dir` with mode 755 (or fix its mode); idempotent: says so when nothing had to change. */
async function makeVolume(ssh: Ssh, target: SshTarget, dir: string, state: string): Promise<Done> {
  if (state === 'dir 755') return { outcome: 'unchanged', message: `${dir} already exists on ${target.destination} with mode 755: nothing changed` }
  report({ acted: true })
  step(state === 'absent' ? `Create ${dir} on ${target.host} (mode 755)` : `Set mode 755 on ${dir} on ${target.host} (was ${state.slice(4)})`)
  const made = await ssh.run(MAKE_DIR, [dir])
  if (!made.ok) fail(`creating ${dir} on ${target.destination}: ${ssh.why(made)}`)
  return { outcome: 'done', message: state === 'absent' ? `${dir} created on ${target.destination} with mode 755` : `${dir} on ${target.destination}: mode ${state.slice(4)} changed to 755` }
}

/** What Nomad has for the volume on a node: a dynamic host volume, a static one, or none. */
type Known = { kind: 'dynamic'; id: string; path: string } | { kind: 'static'; path: string } | { kind: 'none' }

/**
 * Nomad 1.10+: what each node already has under the volume's name (read-only). The name on another
 * path is refused (exit 2): a job would mount that directory, not this one.
 */
async function knownVolumes(nomad: Nomad, nodes: Map<string, Node>, volume: string, dir: string, variable: string): Promise<Map<string, Known>> {
  // No volume at all: nothing on stdout, "No dynamic host volumes" on stderr (command/volume_status_host.go@v2.0.5).
  const list = await nomadJson<{ ID: string; Name: string; NodeID: string }[] | undefined>(nomad, ['volume', 'status', '-type', 'host', '-json'])
  const known = new Map<string, Known>()
  const problems: string[] = []
  for (const [host, node] of nodes) {
    const stub = (list ?? []).find((v) => v.Name === volume && v.NodeID === node.ID)
    let k: Known = { kind: 'none' }
    if (stub) {
      const vol = await nomadJson<{ HostPath: string }>(nomad, ['volume', 'status', '-type', 'host', '-json', stub.ID])
      k = { kind: 'dynamic', id: stub.ID, path: vol.HostPath }
    } else {
      const full = await nomadJson<{ HostVolumes?: Record<string, { Path: string }> | null }>(nomad, ['node', 'status', '-json', node.ID])
      const own = full.HostVolumes?.[volume]
      if (own) k = { kind: 'static', path: own.Path }
    }
    if (k.kind !== 'none' && k.path !== dir)
      problems.push(`${host} (node ${node.Name}) already has the ${k.kind} host volume "${volume}" at ${k.path}, not ${dir}: set ${variable}=${k.path}, or ${k.kind === 'dynamic' ? `deregister it by hand first (DEPLOYMENT_GUIDE.md, "Host volumes"; its data stays on disk): nomad volume delete -type host ${k.id.slice(0, 8)}` : 'change the client configuration by hand'}`)
    known.set(host, k)
  }
  if (problems.length) refuse(problems)
  return known
}

/**
 * Register `dir` as the dynamic host volume `volume` on the node (Nomad 1.10+: `nomad volume register`
 * with a spec naming the node and the path; no client restart). Idempotent: a volume already there
 * on that path, dynamic or static, is "nothing changed".
 */
async function registerVolume(nomad: Nomad, host: string, node: Node, volume: string, dir: string, known: Known): Promise<Done> {
  if (known.kind === 'dynamic') return { outcome: 'unchanged', message: `Nomad node ${node.Name} already has the dynamic host volume "${volume}" at ${dir} (${known.id.slice(0, 8)}): nothing registered` }
  if (known.kind === 'static') return { outcome: 'unchanged', message: `Nomad node ${node.Name} declares "${volume}" at ${dir} in its client configuration (a static host volume): nothing registered` }
  report({ acted: true })
  step(`Register ${dir} on ${host} as the host volume "${volume}" of Nomad node ${node.Name}`)
  const specDir = mkdtempSync(path.join(os.tmpdir(), 'deploy-volume-'))
  onExit(() => rmSync(specDir, { recursive: true, force: true }))
  const spec = path.join(specDir, `${volume}.volume.hcl`)
  writeFileSync(spec, volumeSpec(volume, node.ID, dir))
  const out = await nomad.$`nomad volume register ${spec}`
  if (!out.ok) fail(`nomad volume register ${volume} on node ${node.Name}: ${nomadError(nomad, out).message}`)
  const id = out.stdout.match(/with ID (\S+)/)?.[1]
  return { outcome: 'done', message: `registered ${dir} as the host volume "${volume}" of Nomad node ${node.Name}${id ? ` (ID ${id})` : ''}: no client restart needed` }
}

/** The dynamic host volume's spec (command/volume_register_host.go@v2.0.5: node_id and host_path, no plugin). */
function volumeSpec(volume: string, nodeId: string, dir: string): string {
  return `type      = "host"
name      = ${JSON.stringify(volume)}
node_id   = ${JSON.stringify(nodeId)}
host_path = ${JSON.stringify(dir)}

capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}
`
}

/** The dry run's registration lines (Nomad 1.10+), as comments: the node's ID is known only to a real run. */
function registerCommands(volume: string, dir: string): string[] {
  return [`# Nomad 1.10+: then register ${dir} as the dynamic host volume "${volume}" of each host's node`,
    '# (NODE_ID: the node whose Address, or else Name, is the host: nomad node status -json), unless it is there already:',
    ...[`cat > ${shq(`${volume}.volume.hcl`)} <<EOF`, ...volumeSpec(volume, '$NODE_ID', dir).trimEnd().split('\n'), 'EOF', `nomad volume register ${shq(`${volume}.volume.hcl`)}`].map((l) => `#   ${l}`)]
}

/** What a job script says of its host volume: registered by the volume script on 1.10+, else the block to add by hand. */
export function volumeReminder(nomad: Nomad, volume: string, dir: string, script: string): string {
  return atLeast(nomad.versions?.server ?? '0.0.0', '1.10')
    ? `  - the host volume "${volume}" on the client that runs it: ${script} creates ${dir} and registers it (Nomad 1.10+: no configuration edit, no restart).`
    : `  - the host volume "${volume}" on the client that runs it (${script} creates the directory).\n${hostVolumeBlock(volume, dir)}`
}

/** The client configuration a person adds by hand for a host volume (Nomad 1.6-1.9; no script ever applies it). */
function hostVolumeBlock(volume: string, dir: string, host = 'the client that runs the job'): string {
  return `Add by hand to /etc/nomad.d/nomad.hcl on ${host}, inside its client block (no script does this):
  client {
    host_volume "${volume}" {
      path      = "${dir}"
      read_only = false
    }
  }
then restart Nomad on that server: sudo systemctl restart nomad`
}

/** A nomad read whose output is JSON (a failure stops the run: exit 2 when refused, else 1). */
async function nomadJson<T>(nomad: Nomad, args: string[]): Promise<T> {
  const out = await nomad.$`nomad ${args}`
  if (!out.ok) {
    const { message, code } = nomadError(nomad, out)
    if (code === 2) refuse([`nomad ${args.join(' ')}: ${message}`])
    fail(`nomad ${args.join(' ')}: ${message}`)
  }
  try {
    return (out.stdout.trim() ? JSON.parse(out.stdout) : undefined) as T
  } catch {
    fail(`nomad ${args.join(' ')} printed no JSON`)
  }
}
