// The Nomad clients behind the ssh hosts (the volume scripts, deploy_binary, deploy_nomad): each host
// is matched to ONE node of this cluster, and that node must be able to run the job. Read-only.
//
// The rule, the same for every script (so the binary's hosts and the agent's constraint cannot drift):
// a node matches a host when its Address is the host (an IP address), or one of the addresses the host
// name resolves to here, or when its Name is the host name or its first label (client-1 for
// client-1.example.com: a node's name defaults to the machine's hostname). Addresses first: Nomad
// fingerprints them and a person writes them in DEPLOY_SSH_HOST; names only when the address says
// nothing (a client behind NAT). Exactly one node must match; none or several is refused.
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { EXIT, fail, refuse, report } from './env.mts'
import { nomadError, type Nomad } from './nomad.mts'

/** api.NodeListStub (api/nodes.go@v1.6.10 and @v2.0.5): the fields the checks read. */
export type Node = {
  ID: string; Name: string; Address: string; Status: string; SchedulingEligibility: string; Drain: boolean
  Drivers?: Record<string, { Detected?: boolean; Healthy?: boolean; HealthDescription?: string } | null> | null
}

/** Every client of the cluster (`nomad node status -json`, read-only: node:read). */
export async function listNodes(nomad: Nomad): Promise<Node[]> {
  const out = await nomad.$`nomad node status -json`
  if (!out.ok) {
    const { message, code } = nomadError(nomad, out)
    if (code === EXIT.refused) refuse([`nomad node status: ${message} (the kit checks that each host is a client of this cluster: the token needs node:read)`])
    fail(`nomad node status: ${message}`)
  }
  try {
    return (JSON.parse(out.stdout) as Node[] | null) ?? []
  } catch {
    fail('nomad node status -json printed no JSON list')
  }
}

/** The addresses a host name resolves to here (none when it does not resolve within 5 s). */
async function addressesOf(host: string): Promise<string[]> {
  if (isIP(host)) return [host]
  const timer = new Promise<[]>((resolve) => setTimeout(() => resolve([]), 5000).unref())
  const found = lookup(host, { all: true }).then((all) => all.map((a) => a.address), () => [] as string[])
  return Promise.race([found, timer])
}

/** Each host's node by the rule above; a host with no node or several is a problem (a line naming the fix). */
export async function matchNodes(nomad: Nomad, nodes: Node[], hosts: string[]): Promise<{ found: Map<string, Node>; problems: string[] }> {
  const found = new Map<string, Node>()
  const problems: string[] = []
  const known = nodes.map((n) => `${n.Name} (${n.Address})`).sort().join(', ') || 'none'
  for (const host of hosts) {
    const addresses = await addressesOf(host)
    const short = host.split('.')[0]
    const byAddress = nodes.filter((n) => addresses.includes(n.Address))
    const matches = byAddress.length ? byAddress : nodes.filter((n) => n.Name === host || (!isIP(host) && n.Name === short))
    if (!matches.length)
      problems.push(`${host} is not a client of the Nomad cluster at ${nomad.addr}: no node has that address${addresses.length && !isIP(host) ? ` (${addresses.join(', ')})` : ''} or name (nodes: ${known}); give the host as Nomad knows it (nomad node status)`)
    else if (matches.length > 1)
      problems.push(`${host} matches ${matches.length} Nomad nodes (${matches.map((n) => `${n.Name} ${n.ID.slice(0, 8)}`).sort().join(', ')}): give the host by the address of one of them`)
    else found.set(host, matches[0])
  }
  return { found, problems }
}

/** Why a node cannot take a job on `driver` (none: it can): ready, eligible, not draining, the driver healthy. */
export function nodeProblems(host: string, n: Node, driver: string): string[] {
  const which = `${host} (node ${n.Name}, ${n.ID.slice(0, 8)})`
  const problems: string[] = []
  if (n.Status !== 'ready') problems.push(`${which} is ${n.Status}, not ready: start its Nomad client, then check: nomad node status ${n.ID.slice(0, 8)}`)
  if (n.SchedulingEligibility !== 'eligible') problems.push(`${which} is not eligible for new allocations: nomad node eligibility -enable ${n.ID.slice(0, 8)} (by hand, once its owner agrees)`)
  if (n.Drain) problems.push(`${which} is draining: wait for the drain to end, or nomad node drain -disable ${n.ID.slice(0, 8)} (by hand)`)
  const d = n.Drivers?.[driver]
  if (!d?.Detected || !d.Healthy)
    problems.push(`${which} has no healthy ${driver} driver${d?.HealthDescription ? ` (${d.HealthDescription})` : ''}: ${driver === 'raw_exec'
      ? 'enable it in the client configuration, plugin "raw_exec" { config { enabled = true } }, and restart the client (by hand: DEPLOYMENT_GUIDE.md, section 2)'
      : `start Docker on that host (systemctl start docker), then check: nomad node status -verbose ${n.ID.slice(0, 8)}`}`)
  return problems
}

/**
 * Each host's node, checked for a job on `driver`. Every problem of every host is refused at once
 * (exit 2), each naming the host and the fix; nothing is changed (a fix on the cluster is printed,
 * never applied).
 */
export async function clientNodes(nomad: Nomad, hosts: string[], driver: string): Promise<Map<string, Node>> {
  const { found, problems } = await matchNodes(nomad, await listNodes(nomad), hosts)
  for (const [host, n] of found) problems.push(...nodeProblems(host, n, driver))
  if (problems.length) refuse(problems)
  for (const [host, n] of found) console.error(`    ${host}: Nomad node ${n.Name} (${n.ID.slice(0, 8)}), ready, eligible, ${driver} healthy`)
  report({ nodes: [...found].map(([host, n]) => ({ host, id: n.ID, name: n.Name })) })
  return found
}
