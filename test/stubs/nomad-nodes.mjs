// The client nodes of the nomad test double (test/stubs/nomad.mjs): the nodes, the scheduler's
// feasibility checks that choose one for each allocation, dynamic host volumes (1.10+), and the
// commands that read or write them: `node status`, `volume register`, `volume status`. Each
// behaviour names the source it imitates (path@tag in hashicorp/nomad).
//
// State knobs (in $STUB_STATE/nomad.json):
//   nodes: [{ ID, Name, Address, Datacenter, NodePool, NodeClass, Status, SchedulingEligibility,
//             Drain, Drivers: { docker: { Detected, Healthy, HealthDescription } },
//             HostVolumes: { name: { Path, ReadOnly } } (static, from the client's config),
//             Attributes, Meta, Version, CreateIndex, ComputedClass, MissingPaths: [dirs] }]
//     Every field may be left out: ID (a UUID derived from the Name), Name node-N, Address
//     127.0.0.1, dc1, pool "default", ready, eligible (ineligible when draining), drivers docker and
//     raw_exec detected and healthy, no host volume, CreateIndex N (the list shows the newest first).
//     ComputedClass: nodes of one class share the scheduler's per-class feasibility verdict
//     (default: each node its own class, as machines that differ). MissingPaths: directories that
//     do not exist on that client (volume register then fails as the client does).
//     Default, when the state has no `nodes`: one node, node-1 (4f3c2b1a-...), 127.0.0.1, with the
//     static host volumes arangodb_data (/opt/arangodb_data) and valkey_data (/opt/valkey_data).
//   hostVolumes: the dynamic host volumes the servers know (api.HostVolume, plus a `stub` field).
//   volumeReadyAfter: n — the next n nomad calls (that succeed) after a registration still see the
//            new volume "pending" (default 1); then it is "ready":
//            the client sends its node update with the new volume about 5 s later
//            (client/client.go@v2.0.5 watchNodeUpdates, nodeUpdateRetryIntv = 5s); until then the
//            scheduler cannot use it.
//   namespaces: ["default", ...] — the namespaces that exist (for a volume spec's namespace).
//
// Simplifications: the scheduler visits the nodes in the state's order (Nomad shuffles them), and
// puts each allocation on the feasible node with the fewest allocations of the same job and group
// (then the first in order), where Nomad ranks a few candidates by bin-packing and job
// anti-affinity; no resources (CPU, memory, ports), devices, networks, spread or affinities; a
// single-node-single-writer volume does not look at the other groups' claims; no sticky claims, no
// per_alloc; an allocation on a node that becomes draining or down stays there. `node status <id>`
// leaves out node events, resources and host stats; -filter, -per-page, -allocs, -stats, -t are
// refused. No CSI volume; no `volume create` nor `volume delete`.
import { createHash } from 'node:crypto'

export const DEFAULT_NODE_ID = '4f3c2b1a-7d6e-4c5b-9a8f-0e1d2c3b4a59'
const BOOT = '2024-01-01T00:00:00Z'
const BOOT_NS = Date.parse(BOOT) * 1e6
const DEFAULT_NODES = [{
  ID: DEFAULT_NODE_ID, Name: 'node-1', Address: '127.0.0.1',
  HostVolumes: { arangodb_data: { Path: '/opt/arangodb_data', ReadOnly: false }, valkey_data: { Path: '/opt/valkey_data', ReadOnly: false } },
}]
// drivers/docker/fingerprint.go@v2.0.5 L118-125, drivers/rawexec/driver.go@v2.0.5 L295-310.
const NOT_HEALTHY = { docker: 'Failed to connect to docker daemon', raw_exec: 'disabled' }
// scheduler/feasible/feasible.go@v2.0.5 L26-40 (scheduler/feasible.go@v1.6.10: the same texts).
export const FILTER_HOST_VOLUMES = 'missing compatible host volumes'
export const FILTER_DRIVERS = 'missing drivers'

/** A UUID derived from a name, so that a node without an ID keeps the same one from call to call. */
function uuidOf(name) {
  const h = createHash('sha256').update(`node:${name}`).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`
}

/** The nodes as the servers hold them (nomad/structs.Node), every default filled in. */
export function nodesOf(state, version) {
  return (state.nodes ?? DEFAULT_NODES).map((n, i) => {
    const Name = n.Name ?? `node-${i + 1}`
    const ID = n.ID ?? uuidOf(Name)
    const Address = n.Address ?? '127.0.0.1'
    const Drain = Boolean(n.Drain)
    const Drivers = Object.fromEntries(Object.entries(n.Drivers ?? { docker: {}, raw_exec: {} }).map(([d, info]) => {
      const Detected = info.Detected ?? true
      const Healthy = Detected && (info.Healthy ?? true)
      // client/pluginmanager/drivermanager/instance.go@v2.0.5 L404: Detected unless the fingerprint says "undetected".
      return [d, { Attributes: info.Attributes ?? (Detected ? { [`driver.${d}`]: 'true' } : null), Detected, Healthy,
        HealthDescription: info.HealthDescription ?? (Healthy ? 'Healthy' : NOT_HEALTHY[d] ?? 'Unhealthy'), UpdateTime: info.UpdateTime ?? BOOT }]
    }))
    const Version = n.Version ?? version
    // client/node_updater.go@v2.0.5 L304-311: "driver.<name>" = "1" while the driver is detected.
    const driverAttrs = Object.fromEntries(Object.entries(Drivers).filter(([, d]) => d.Detected).map(([d]) => [`driver.${d}`, '1']))
    return {
      ID, Name, Address, HTTPAddr: `${Address}:4646`, Datacenter: n.Datacenter ?? 'dc1', NodePool: n.NodePool ?? 'default', NodeClass: n.NodeClass ?? '',
      Status: n.Status ?? 'ready', StatusDescription: n.StatusDescription ?? '', Drain,
      // A drain makes the node ineligible (nomad/node_endpoint.go@v2.0.5 UpdateDrain).
      SchedulingEligibility: n.SchedulingEligibility ?? (Drain ? 'ineligible' : 'eligible'),
      Drivers, Version,
      Attributes: { 'cpu.arch': 'amd64', 'kernel.name': 'linux', 'os.name': 'ubuntu', 'nomad.version': Version, 'unique.hostname': Name, 'unique.network.ip-address': Address, ...driverAttrs, ...n.Attributes },
      Meta: n.Meta ?? {},
      HostVolumes: Object.fromEntries(Object.entries(n.HostVolumes ?? {}).map(([k, v]) => [k, { Path: v.Path, ReadOnly: Boolean(v.ReadOnly) }])),
      LastDrain: n.LastDrain ?? null, CreateIndex: n.CreateIndex ?? i + 1, ModifyIndex: n.ModifyIndex ?? n.CreateIndex ?? i + 1,
      ComputedClass: n.ComputedClass ?? `v1:${parseInt(createHash('sha256').update(ID).digest('hex').slice(0, 12), 16)}`,
      MissingPaths: n.MissingPaths ?? [],
    }
  })
}

/**
 * The servers' view of the nodes: the static host volumes of the client's configuration, with the
 * dynamic ones the client has fingerprinted (state "ready") under the same map, keyed by name; a
 * dynamic volume takes the place of a static one of the same name
 * (client/hostvolumemanager/volume_fingerprint.go@v2.0.5 UpdateVolumeMap, "overriding static host
 * volume with dynamic"; the same at v1.10.0). Before 1.10 there are no dynamic volumes.
 */
export function serverNodes(state, version) {
  const nodes = nodesOf(state, version)
  if (!atLeast(version, '1.10')) return nodes
  for (const v of state.hostVolumes ?? []) {
    const n = nodes.find((x) => x.ID === v.NodeID)
    if (n && v.State === 'ready') n.HostVolumes[v.Name] = { Path: v.HostPath, ReadOnly: false, ID: v.ID }
  }
  return nodes
}

/** Is "1.10.5" at least "1.10"? */
export const atLeast = (v, w) => { const a = v.split('.').map(Number), b = w.split('.').map(Number); for (let i = 0; i < b.length; i++) if ((a[i] ?? 0) !== b[i]) return (a[i] ?? 0) > b[i]; return true }

// ----- the job file: what the scheduler needs of it ---------------------------------------------

/**
 * The direct items of an HCL2 body: attributes (name, expression text) and blocks (type, labels,
 * body text), with their offsets in the file. Strings (with ${...} templates), heredocs and comments
 * are skipped over, so that their braces do not count.
 */
export function hclItems(text, base = 0) {
  const items = []
  let i = 0
  while (i < text.length) {
    i = skipBlank(text, i, true)
    const m = /^[A-Za-z_][\w-]*/.exec(text.slice(i))
    if (!m) { i = i < text.length ? nextLine(text, i) : i; continue }
    const name = m[0]
    i = skipBlank(text, i + name.length, false)
    if (text[i] === '=' && text[i + 1] !== '=') {
      const start = skipBlank(text, i + 1, false)
      const end = endOfExpression(text, start)
      items.push({ kind: 'attr', name, expr: text.slice(start, end).trim(), pos: base + start })
      i = end
      continue
    }
    const labels = []
    for (;;) {
      if (text[i] === '"') { const j = skipString(text, i); labels.push(text.slice(i + 1, j - 1)); i = skipBlank(text, j, false) }
      else { const l = /^[A-Za-z_][\w-]*/.exec(text.slice(i)); if (!l) break; labels.push(l[0]); i = skipBlank(text, i + l[0].length, false) }
    }
    if (text[i] !== '{') { i = nextLine(text, i); continue }
    const end = matchBrace(text, i)
    items.push({ kind: 'block', type: name, labels, body: text.slice(i + 1, end), pos: base + i + 1 })
    i = end + 1
  }
  return items
}

const nextLine = (t, i) => { const j = t.indexOf('\n', i); return j < 0 ? t.length : j + 1 }
function skipBlank(t, i, newlines) {
  for (;;) {
    if (t[i] === ' ' || t[i] === '\t' || t[i] === '\r' || (newlines && (t[i] === '\n' || t[i] === ','))) i++
    else if (t[i] === '#' || t.startsWith('//', i)) { const j = t.indexOf('\n', i); i = j < 0 ? t.length : (newlines ? j + 1 : j) }
    else if (t.startsWith('/*', i)) { const j = t.indexOf('*/', i + 2); i = j < 0 ? t.length : j + 2 }
    else return i
  }
}
function skipString(t, i) {
  let j = i + 1
  while (j < t.length) {
    if (t[j] === '\\') j += 2
    else if (t[j] === '"') return j + 1
    else if ((t[j] === '$' || t[j] === '%') && t[j + 1] === '{') j = matchBrace(t, j + 1) + 1
    else j++
  }
  return j
}
function skipHeredoc(t, i) {
  const m = /^<<-?([A-Za-z_]\w*)[^\n]*\n/.exec(t.slice(i))
  if (!m) return i + 2
  let j = i + m[0].length
  for (;;) {
    const e = t.indexOf('\n', j)
    const line = t.slice(j, e < 0 ? t.length : e)
    if (line.trim() === m[1] || e < 0) return e < 0 ? t.length : e
    j = e + 1
  }
}
/** The index of the brace that closes the one at `i`. */
function matchBrace(t, i) {
  let depth = 0
  for (let j = i; j < t.length;) {
    const c = t[j]
    if (c === '"') { j = skipString(t, j); continue }
    if (t.startsWith('<<', j) && /^<<-?[A-Za-z_]/.test(t.slice(j, j + 4))) { j = skipHeredoc(t, j); continue }
    if (c === '#' || t.startsWith('//', j) || t.startsWith('/*', j)) { j = skipBlank(t, j, false); if (t[j] === '\n') j++; continue }
    if (c === '{' || c === '[' || c === '(') depth++
    else if (c === '}' || c === ']' || c === ')') { depth--; if (depth === 0) return j }
    j++
  }
  return t.length
}
function endOfExpression(t, i) {
  let depth = 0
  for (let j = i; j < t.length;) {
    const c = t[j]
    if (c === '"') { j = skipString(t, j); continue }
    if (t.startsWith('<<', j) && /^<<-?[A-Za-z_]/.test(t.slice(j, j + 4))) { j = skipHeredoc(t, j); continue }
    if (depth === 0 && (c === '\n' || c === '#' || t.startsWith('//', j))) return j
    if (c === '{' || c === '[' || c === '(') depth++
    else if (c === '}' || c === ']' || c === ')') { if (depth === 0) return j; depth-- }
    j++
  }
  return t.length
}

/**
 * The few HCL2 expressions the jobs use where the scheduler looks: string literals (only ${var.X}
 * is interpolated: jobspec2 keeps ${node.unique.id}, ${attr.*}... for the scheduler), var.X, lists,
 * join(sep, list), numbers and booleans. undefined: another form.
 */
export function evalExpr(src, valueOf) {
  const s = src.trim()
  if (/^"/.test(s) && skipString(s, 0) === s.length)
    return JSON.parse(s.replace(/\$\{\s*var\.(\w+)\s*\}/g, (_, k) => { const v = valueOf(k); return typeof v === 'string' ? v.replace(/["\\]/g, '\\$&') : `\${var.${k}}` }).replace(/\n/g, '\\n'))
  const ref = /^var\.(\w+)$/.exec(s)
  if (ref) return valueOf(ref[1])
  if (s.startsWith('[') && matchBrace(s, 0) === s.length - 1) {
    const inner = s.slice(1, -1)
    const parts = []
    for (let i = 0; i < inner.length;) {
      i = skipBlank(inner, i, true)
      if (i >= inner.length) break
      const end = endOfExpression(inner.replace(/,/g, '\n'), i)
      parts.push(evalExpr(inner.slice(i, end), valueOf))
      i = end + 1
    }
    return parts.some((p) => p === undefined) ? undefined : parts
  }
  const join = /^join\(\s*("(?:[^"\\]|\\.)*")\s*,([\s\S]*)\)$/.exec(s)
  if (join) { const l = evalExpr(join[2], valueOf); return Array.isArray(l) ? l.join(JSON.parse(join[1])) : undefined }
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s)
  if (s === 'true' || s === 'false') return s === 'true'
  return undefined
}

/** Line and column (1-based) of an offset in a text. */
function lineCol(text, pos) {
  const before = text.slice(0, pos)
  const line = before.split('\n').length
  return { line, col: pos - before.lastIndexOf('\n') }
}

/**
 * What the scheduler needs of a job file (jobspec2 decoding): datacenters, node pool, constraints
 * of the job, of each group and of its tasks (scheduler/util.go@v1.6.10 taskGroupConstraints, and
 * scheduler/feasible/stack.go@v2.0.5 SetTaskGroup: a group's and its tasks' constraints are checked
 * together), each group's task drivers and host volume requests. `fail(message)` for a job the CLI
 * refuses to parse.
 */
export function placementSpec(text, file, valueOf, fail) {
  const top = hclItems(text)
  const job = top.find((b) => b.kind === 'block' && b.type === 'job')
  if (!job) return undefined
  const items = hclItems(job.body, job.pos)
  const attr = (list, name) => list.find((x) => x.kind === 'attr' && x.name === name)
  const blocks = (list, type) => list.filter((x) => x.kind === 'block' && x.type === type)
  const value = (a, fallback) => {
    if (!a) return fallback
    const v = evalExpr(a.expr, valueOf)
    if (v === undefined) fail(`test double: the expression ${a.expr} (${a.name}) is not supported`)
    return v
  }
  /** jobspec2/hcl_conversions.go@v2.0.5 decodeConstraint (the same at v1.6.10): string attributes, the shortcuts it knows. */
  const constraint = (b) => {
    const its = hclItems(b.body, b.pos)
    const str = (name) => {
      const a = attr(its, name)
      if (!a) return ''
      const v = value(a)
      // hcl/v2 hcldec AttrSpec{Type: cty.String}: a list does not convert to a string.
      if (Array.isArray(v) || (v !== null && typeof v === 'object')) {
        const { line, col } = lineCol(text, a.pos)
        fail(`${file}:${line},${col}-${col + a.expr.length}: Incorrect attribute value type; Inappropriate value for attribute "${name}": string required.`)
      }
      return String(v)
    }
    const c = { LTarget: str('attribute'), RTarget: str('value'), Operand: str('operator') }
    for (const op of ['version', 'semver', 'regexp', 'set_contains']) if (str(op)) Object.assign(c, { Operand: op, RTarget: str(op) })
    const dh = attr(its, 'distinct_hosts')
    if (dh) Object.assign(c, { Operand: 'distinct_hosts', RTarget: String(value(dh)) })
    if (str('distinct_property')) Object.assign(c, { Operand: 'distinct_property', LTarget: str('distinct_property') })
    if (!c.Operand) c.Operand = '='
    return c
  }
  const datacenters = value(attr(items, 'datacenters'), ['*'])
  const groups = {}
  for (const g of blocks(items, 'group')) {
    const gi = hclItems(g.body, g.pos)
    const tasks = blocks(gi, 'task')
    groups[g.labels[0]] = {
      constraints: [...blocks(gi, 'constraint'), ...tasks.flatMap((t) => blocks(hclItems(t.body, t.pos), 'constraint'))].map(constraint),
      drivers: [...new Set(tasks.map((t) => value(attr(hclItems(t.body, t.pos), 'driver'), '')).filter(Boolean))],
      volumes: blocks(gi, 'volume').map((v) => {
        const vi = hclItems(v.body, v.pos)
        return { name: v.labels[0], type: value(attr(vi, 'type'), ''), source: value(attr(vi, 'source'), ''), readOnly: Boolean(value(attr(vi, 'read_only'), false)),
          accessMode: value(attr(vi, 'access_mode'), ''), attachmentMode: value(attr(vi, 'attachment_mode'), ''), perAlloc: Boolean(value(attr(vi, 'per_alloc'), false)), sticky: Boolean(value(attr(vi, 'sticky'), false)) }
      }).filter((v) => v.type === 'host'),
    }
  }
  return { datacenters: Array.isArray(datacenters) ? datacenters : [datacenters], nodePool: value(attr(items, 'node_pool'), 'default'), constraints: blocks(items, 'constraint').map(constraint), groups }
}

// ----- the scheduler's feasibility checks ------------------------------------------------------

/** nomad/structs/structs.go@v2.0.5 Constraint.String (the text of a filter in the plan's metrics). */
export const constraintText = (c) => `${c.LTarget} ${c.Operand} ${c.RTarget}`

/** nomad/structs/node_class.go@v2.0.5 constraintTargetEscapes: a unique target escapes the computed class. */
const escapes = (c) => [c.LTarget, c.RTarget].some((t) => /^\$\{(node\.unique\.|unique\.|attr\.unique\.|meta\.unique\.)/.test(t))

/** scheduler/feasible/feasible.go@v2.0.5 resolveTarget (the same at v1.6.10). */
function resolveTarget(target, node) {
  if (!target.startsWith('${')) return [target, true]
  const fixed = { '${node.unique.id}': node.ID, '${node.datacenter}': node.Datacenter, '${node.unique.name}': node.Name, '${node.class}': node.NodeClass, '${node.pool}': node.NodePool }
  if (target in fixed) return [fixed[target], true]
  const m = /^\$\{(attr|meta)\.(.*)\}$/.exec(target)
  if (m) { const map = m[1] === 'attr' ? node.Attributes : node.Meta; return [map[m[2]], m[2] in map] }
  return ['', false]
}

/** scheduler/feasible/feasible.go@v2.0.5 checkConstraint (L1136-1171; scheduler/feasible.go@v1.6.10 L833-868). */
function checkConstraint(op, l, r, lOk, rOk) {
  const set = (x) => new Set(String(x).split(',').map((s) => s.trim()))
  const rs = () => String(r).split(',').map((s) => s.trim())
  switch (op) {
    case 'distinct_hosts': case 'distinct_property': return true
    case '=': case '==': case 'is': return lOk && rOk && l === r
    case '!=': case 'not': return l !== r
    case 'is_set': return lOk
    case 'is_not_set': return !lOk
    case 'regexp': { if (!(lOk && rOk)) return false; try { return new RegExp(r).test(l) } catch { return false } }
    case 'set_contains': case 'set_contains_all': return lOk && rOk && rs().every((x) => set(l).has(x))
    case 'set_contains_any': return lOk && rOk && rs().some((x) => set(l).has(x))
    case '<': case '<=': case '>': case '>=': {
      if (!(lOk && rOk)) return false
      const [a, b] = /^-?\d+(\.\d+)?$/.test(l) && /^-?\d+(\.\d+)?$/.test(r) ? [Number(l), Number(r)] : [l, r]
      return { '<': a < b, '<=': a <= b, '>': a > b, '>=': a >= b }[op]
    }
    case 'version': case 'semver': throw new Error(`test double: constraint operator ${op} is not supported`)
    default: return false
  }
}

/** nomad/structs/structs.go@v2.0.5 Node.IsInAnyDC: glob patterns. */
const inDC = (node, dcs) => dcs.some((p) => new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`).test(node.Datacenter))

/**
 * One evaluation of the scheduler for a job (spec: placementSpec), over the servers' nodes.
 * `proposed`: the job's allocations that keep running ({ ID, NodeID, TaskGroup }).
 * select(group): a node for one more allocation of the group, or null, the failure counted in
 * `failures[group]` (api.AllocationMetric: the first failed placement's metrics, later ones coalesced).
 */
export function evaluation({ state, version, spec, proposed = [] }) {
  const nodes = serverNodes(state, version)
  const volumes = state.hostVolumes ?? []
  const jobElig = new Map()
  const tgElig = new Map()
  // scheduler/feasible/context.go@v2.0.5 EvalEligibility.SetJob: job constraints and group (+ task) constraints escape separately.
  const jobEscaped = spec.constraints.some(escapes)
  const placed = proposed.map((a) => ({ ID: a.ID, NodeID: a.NodeID, TaskGroup: a.TaskGroup }))
  const failures = {}

  /** scheduler/util.go@v2.0.5 readyNodesInDCsAndPool: ready, not draining, eligible, in a datacenter and the pool of the job. */
  const candidates = () => nodes.filter((n) => n.Status === 'ready' && !n.Drain && n.SchedulingEligibility === 'eligible' && inDC(n, spec.datacenters)
    && (spec.nodePool === 'all' || n.NodePool === spec.nodePool))

  /** scheduler/feasible/feasible.go@v2.0.5 HostVolumeChecker (L300-510; @v1.10.5 L204-330; @v1.6.10 L185-220). */
  function hasVolumes(node, tg) {
    for (const req of tg.volumes) {
      const cfg = node.HostVolumes[req.source]
      if (!cfg) return false
      if (cfg.ID) {
        const vol = volumes.find((v) => v.ID === cfg.ID && v.Namespace === 'default')
        if (!vol || vol.State !== 'ready') return false
        const access = req.accessMode || (req.readOnly ? 'single-node-reader-only' : 'single-node-writer')
        const attach = req.attachmentMode || 'file-system'
        if (!(vol.RequestedCapabilities ?? []).some((c) => c.AccessMode === access && c.AttachmentMode === attach)) return false
        if (access === 'single-node-reader-only' && !req.readOnly) return false
        if (access === 'single-node-writer' && req.readOnly) return false
        continue
      }
      if (req.sticky && atLeast(version, '2.0')) return false
      if (!req.readOnly && cfg.ReadOnly) return false
    }
    return true
  }

  /** scheduler/feasible/feasible.go@v2.0.5 DriverChecker.hasDrivers: detected and healthy. */
  const hasDrivers = (node, tg) => tg.drivers.every((d) => node.Drivers[d] ? node.Drivers[d].Detected && node.Drivers[d].Healthy : node.Attributes[`driver.${d}`] === '1')

  /** The first constraint the node fails, or null. */
  function failing(constraints, node) {
    for (const c of constraints) {
      const [l, lOk] = resolveTarget(c.LTarget, node)
      const [r, rOk] = resolveTarget(c.RTarget, node)
      if (!checkConstraint(c.Operand, l, r, lOk, rOk)) return c
    }
    return null
  }

  /**
   * Is the node feasible for one more allocation of the group? scheduler/feasible/feasible.go@v2.0.5
   * FeasibilityWrapper.Next (L1450-1545): the job's constraints, then the group's checks (drivers,
   * constraints), each verdict remembered per computed class unless escaped; then the checks that
   * can change from one allocation to the next (host volumes); then distinct_hosts
   * (DistinctHostsIterator). `filter(reason)` counts why it was not.
   */
  function feasible(node, group, filter) {
    const tg = spec.groups[group] ?? { constraints: [], drivers: [], volumes: [] }
    const cls = node.ComputedClass
    if (!jobEscaped && jobElig.get(cls) === false) return filter('computed class ineligible')
    const bad = failing(spec.constraints.filter((c) => c.Operand !== 'distinct_hosts'), node)
    if (bad) { if (!jobEscaped) jobElig.set(cls, false); return filter(constraintText(bad)) }
    if (!jobEscaped) jobElig.set(cls, true)
    const tgEscaped = tg.constraints.some(escapes)
    const key = `${group}\0${cls}`
    if (!tgEscaped && tgElig.get(key) === false) return filter('computed class ineligible')
    if (tgEscaped || tgElig.get(key) !== true) {
      if (!hasDrivers(node, tg)) { if (!tgEscaped) tgElig.set(key, false); return filter(FILTER_DRIVERS) }
      const badTg = failing(tg.constraints.filter((c) => c.Operand !== 'distinct_hosts'), node)
      if (badTg) { if (!tgEscaped) tgElig.set(key, false); return filter(constraintText(badTg)) }
      if (!tgEscaped) tgElig.set(key, true)
    }
    if (!hasVolumes(node, tg)) return filter(FILTER_HOST_VOLUMES)
    // scheduler/feasible/feasible.go@v2.0.5 DistinctHostsIterator: the job's (or the group's) allocations already there.
    const jobDistinct = spec.constraints.some((c) => c.Operand === 'distinct_hosts' && c.RTarget !== 'false')
    const tgDistinct = tg.constraints.some((c) => c.Operand === 'distinct_hosts' && c.RTarget !== 'false')
    if ((jobDistinct || tgDistinct) && placed.some((a) => a.NodeID === node.ID && (jobDistinct || a.TaskGroup === group))) return filter('distinct_hosts')
    return true
  }

  function newMetrics() {
    const byDC = {}
    for (const n of candidates()) byDC[n.Datacenter] = (byDC[n.Datacenter] ?? 0) + 1
    return { NodesEvaluated: 0, NodesFiltered: 0, NodesInPool: candidates().length, NodesAvailable: byDC, ClassFiltered: {}, ConstraintFiltered: {}, NodesExhausted: 0, CoalescedFailures: 0 }
  }

  function select(group) {
    const metrics = newMetrics()
    const ok = []
    for (const node of candidates()) {
      metrics.NodesEvaluated++
      const filter = (reason) => {
        metrics.NodesFiltered++
        if (node.NodeClass) metrics.ClassFiltered[node.NodeClass] = (metrics.ClassFiltered[node.NodeClass] ?? 0) + 1
        metrics.ConstraintFiltered[reason] = (metrics.ConstraintFiltered[reason] ?? 0) + 1
        return false
      }
      if (feasible(node, group, filter)) ok.push(node)
    }
    if (!ok.length) {
      if (failures[group]) failures[group].CoalescedFailures++
      else failures[group] = metrics
      return null
    }
    const load = (n) => placed.filter((a) => a.NodeID === n.ID && a.TaskGroup === group).length
    const node = ok.reduce((best, n) => (load(n) < load(best) ? n : best))
    return node
  }

  /** scheduler/generic_sched.go@v2.0.5 inplaceUpdate: the allocation's own node, checked again for the new version. */
  function fits(group, nodeID) {
    const node = candidates().find((n) => n.ID === nodeID)
    return Boolean(node) && feasible(node, group, () => false)
  }

  return {
    select, fits, failures, candidates,
    propose: (a) => placed.push({ ID: a.ID, NodeID: a.NodeID, TaskGroup: a.TaskGroup }),
    release: (a) => { const i = placed.findIndex((x) => x.ID === a.ID); if (i >= 0) placed.splice(i, 1) },
    node: (id) => nodes.find((n) => n.ID === id),
  }
}

/**
 * command/monitor.go@v2.0.5 formatAllocMetrics (L332-428; @v1.6.10 L323-370): the lines of one
 * group's failure. Go ranges over maps in random order; here, in the order the filters were met.
 * From 1.11.2 (not at v1.11.1) a "missing drivers" line is red when the output is coloured (`colour`).
 */
export function metricsLines(m, prefix, colour) {
  const out = []
  if (m.NodesEvaluated === 0) out.push(`${prefix}* No nodes were eligible for evaluation`)
  for (const [dc, n] of Object.entries(m.NodesAvailable)) if (n === 0) out.push(`${prefix}* No nodes are available in datacenter "${dc}"`)
  for (const [cls, n] of Object.entries(m.ClassFiltered)) out.push(`${prefix}* Class "${cls}": ${n} nodes excluded by filter`)
  for (const [c, n] of Object.entries(m.ConstraintFiltered)) {
    const line = `${prefix}* Constraint ${JSON.stringify(c)}: ${n} nodes excluded by filter`
    out.push(colour && c.includes(FILTER_DRIVERS) ? `\x1b[31m${line}\x1b[0m` : line)
  }
  if (m.NodesExhausted > 0) out.push(`${prefix}* Resources exhausted on ${m.NodesExhausted} nodes`)
  return out
}

/**
 * command/job_plan.go@v2.0.5 formatDryRun (L440-491; @v1.6.10 L424-475): the "Scheduler dry-run:"
 * lines. Groups in name order (sortedTaskGroupFromMetrics), a blank line between two groups.
 */
export function dryRunLines(failures, colour) {
  const groups = Object.keys(failures).sort()
  if (!groups.length) return ['- All tasks successfully allocated.']
  const out = ['- WARNING: Failed to place all allocations.']
  groups.forEach((g, i) => {
    const m = failures[g]
    if (i > 0) out.push('')
    out.push(`  Task Group "${g}" (failed to place ${m.CoalescedFailures + 1} allocation${m.CoalescedFailures > 0 ? 's' : ''}):`, ...metricsLines(m, '    ', colour))
  })
  return out
}

// ----- commands ---------------------------------------------------------------------------------

/**
 * The node and volume commands, over the double's state and helpers (see nomad.mjs):
 * ctx = { state(), version, cli(w), server(w), flags, args, die, out, err, hint, stdin, readFile, nowNs, nextIndex(), addr, allocsOf(node) }.
 */
export function nodeCommands(ctx) {
  const { cli, server, flags, args, die, out, err, hint } = ctx
  const state = () => ctx.state()
  const json = (data) => out(JSON.stringify(data, null, 4))

  /** api.NodeListStub (api/nodes.go: the same fields at v1.6.10, v1.9.7, v1.10.5, v2.0.5), from nomad/structs Node.Stub: no HostVolumes (the API sends them, the CLI's struct drops them); Attributes only with -os; no resources. */
  const listStub = (n) => ({
    Address: n.Address, ID: n.ID, ...(flags.os ? { Attributes: { 'os.name': n.Attributes['os.name'] } } : {}), Datacenter: n.Datacenter, Name: n.Name, NodeClass: n.NodeClass,
    NodePool: n.NodePool, Version: n.Attributes['nomad.version'], Drain: n.Drain, SchedulingEligibility: n.SchedulingEligibility, Status: n.Status,
    StatusDescription: n.StatusDescription, Drivers: n.Drivers, LastDrain: n.LastDrain, CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex,
  })

  /** api.Node as the CLI decodes it: HostVolumeInfo.ID from 1.10.0, GCVolumesOnNodeGC and NodeMaxAllocs from 1.10.2 (api/nodes.go at those tags). */
  function apiNode(n) {
    const resources = { CPU: 4000, MemoryMB: 8192, DiskMB: 51200, IOPS: 0, Networks: null, Devices: null }
    const drain = n.Drain ? { Deadline: 3600e9, IgnoreSystemJobs: false, ForceDeadline: '2024-01-01T01:00:00Z', StartedAt: BOOT } : null
    return {
      ID: n.ID, Datacenter: n.Datacenter, Name: n.Name, HTTPAddr: n.HTTPAddr, TLSEnabled: false, Attributes: n.Attributes, Resources: resources, Reserved: null,
      NodeResources: { Cpu: { CpuShares: 4000, TotalCpuCores: 4, ReservableCpuCores: [0, 1, 2, 3] }, Memory: { MemoryMB: 8192 }, Disk: { DiskMB: 51200 }, Networks: null, Devices: null, NodeNetworks: null, MinDynamicPort: 20000, MaxDynamicPort: 32000 },
      ReservedResources: { Cpu: { CpuShares: 0, ReservedCpuCores: null }, Memory: { MemoryMB: 0 }, Disk: { DiskMB: 0 }, Networks: { ReservedHostPorts: '' } },
      Links: {}, Meta: n.Meta, NodeClass: n.NodeClass, NodePool: n.NodePool, CgroupParent: '/nomad', Drain: n.Drain, DrainStrategy: drain, SchedulingEligibility: n.SchedulingEligibility,
      Status: n.Status, StatusDescription: n.StatusDescription, StatusUpdatedAt: Math.floor(BOOT_NS / 1e9),
      Events: [{ Message: 'Node registered', Subsystem: 'Cluster', Details: null, Timestamp: BOOT, CreateIndex: 0 }],
      Drivers: n.Drivers,
      HostVolumes: Object.fromEntries(Object.entries(n.HostVolumes).map(([k, v]) => [k, { Path: v.Path, ReadOnly: v.ReadOnly, ...(cli('1.10') ? { ID: v.ID ?? '' } : {}) }])),
      ...(cli('1.10.2') ? { GCVolumesOnNodeGC: false } : {}),
      HostNetworks: {}, CSIControllerPlugins: null, CSINodePlugins: null, LastDrain: n.LastDrain, CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex,
      ...(cli('1.10.2') ? { NodeMaxAllocs: 0 } : {}),
    }
  }

  /**
   * `nomad node status [-json] [-verbose] [-short] [-os] [-quiet] [-self] [<node id prefix>]`:
   * command/node_status.go at v1.6.10, v1.9.7, v1.10.5, v2.0.5 (-ui from 1.10.0; otherwise the same
   * flags and texts). The list is api.Nodes.List, sorted newest first (api/nodes.go NodeIndexSort:
   * CreateIndex descending). The double leaves -filter, -per-page, -page-token, -allocs, -stats out.
   */
  function nodeStatus() {
    for (const f of ['filter', 'per-page', 'page-token', 'allocs', 'stats', 't']) if (flags[f] !== undefined) die(`test double: nomad node status -${f} is not supported`)
    if (args.length > 1) die(`This command takes either one or no arguments\nFor additional help try 'nomad node status -help'`)
    const nodes = serverNodes(state(), ctx.version).sort((a, b) => b.CreateIndex - a.CreateIndex)
    const length = flags.verbose ? 36 : 8
    const limit = (s) => s.slice(0, length)
    if (args.length === 0 && !flags.self) {
      if (flags.quiet && (flags.verbose || flags.json)) die('-quiet cannot be used with -verbose or -json')
      if (flags.json) return json(nodes.map(listStub))
      if (!nodes.length) return out('No nodes registered')
      if (flags.quiet) return out(nodes.map((n) => n.ID).join('\n'))
      const head = ['ID', 'Node Pool', 'DC', 'Name', 'Class', ...(flags.os ? ['OS'] : []), ...(flags.verbose ? ['Address', 'Version'] : []), 'Drain', 'Eligibility', 'Status']
      out(columns([head, ...nodes.map((n) => [limit(n.ID), n.NodePool, n.Datacenter, n.Name, n.NodeClass, ...(flags.os ? [n.Attributes['os.name']] : []),
        ...(flags.verbose ? [n.Address, n.Attributes['nomad.version']] : []), String(n.Drain), n.SchedulingEligibility, n.Status])]))
      return hint('View and manage Nomad clients', 'clients')
    }
    let id = args[0]
    if (flags.self) {
      // command/helpers.go@v2.0.5 getLocalNodeID: the agent at NOMAD_ADDR must be a client.
      const host = new URL(ctx.addr).hostname
      const self = nodes.find((n) => n.Address === host)
      if (!self) die('Nomad not running in client mode')
      id = self.ID
    }
    if (id.length === 1) die('Identifier must contain at least two characters.')
    id = sanitizeUUIDPrefix(id)
    const matches = nodes.filter((n) => n.ID.startsWith(id))
    if (!matches.length) die(`No node(s) with prefix "${id}" found`)
    if (matches.length > 1)
      die(`Prefix matched multiple nodes\n\n${columns([['ID', 'DC', 'Name', 'Class', 'Drain', 'Eligibility', 'Status'], ...matches.map((n) => [limit(n.ID), n.Datacenter, n.Name, n.NodeClass, String(n.Drain), n.SchedulingEligibility, n.Status])])}`)
    const n = matches[0]
    if (flags.json) return json(apiNode(n))
    formatNode(n, length)
  }

  /** command/node_status.go@v2.0.5 formatNode: the basic block, -verbose's tables, the allocations (no events, resources nor host stats here). */
  function formatNode(n, length) {
    const names = Object.keys(n.HostVolumes).sort()
    const drivers = Object.entries(n.Drivers).filter(([, d]) => d.Detected).map(([d, info]) => (info.Healthy ? d : `${d} (unhealthy)`)).sort()
    const basic = [['ID', n.ID], ['Name', n.Name], ['Node Pool', n.NodePool], ['Class', n.NodeClass], ['DC', n.Datacenter], ['Drain', n.Drain ? 'true; 2024-01-01T01:00:00Z deadline' : 'false'],
      ['Eligibility', n.SchedulingEligibility], ['Status', n.Status], ['CSI Controllers', ''], ['CSI Drivers', '']]
    if (flags.short) basic.push(['Host Volumes', names.join(',')], ['Host Networks', ''], ['CSI Volumes', ''], ['Drivers', Object.keys(n.Drivers).filter((d) => n.Drivers[d].Detected).sort().join(',')])
    else {
      basic.push(['Uptime', '72h0m0s'])
      if (!flags.verbose) basic.push(['Host Volumes', names.join(',')], ['Host Networks', ''], ['CSI Volumes', ''], ['Driver Status', drivers.join(',')])
    }
    const lines = [kv(basic)]
    if (!flags.short && flags.verbose) {
      if (names.length) lines.push('', 'Host Volumes', columns([['Name', 'ReadOnly', 'Source'], ...names.map((k) => [k, String(n.HostVolumes[k].ReadOnly), n.HostVolumes[k].Path])]))
      lines.push('', 'Drivers', columns([['Driver', 'Detected', 'Healthy', 'Message', 'Time'], ...Object.keys(n.Drivers).sort().map((d) => {
        const i = n.Drivers[d]
        return [d, String(i.Detected), String(i.Healthy), i.HealthDescription, i.UpdateTime]
      })]))
    }
    const allocs = ctx.allocsOf(n.ID)
    lines.push('', 'Allocations', allocs.length ? columns([['ID', 'Node ID', 'Task Group', 'Version', 'Desired', 'Status', 'Created', 'Modified'],
      ...allocs.map((a) => [a.ID.slice(0, length), a.NodeID.slice(0, length), a.TaskGroup, a.JobVersion, a.DesiredStatus, a.ClientStatus, 'now', 'now'])]) : 'No allocations placed')
    out(lines.join('\n'))
    hint('View client details and metrics', `clients/${n.ID}`)
  }

  // ----- dynamic host volumes ----------------------------------------------------------------

  /** api.HostVolumeStub (api/host_volumes.go@v1.10.0 and @v2.0.5). */
  const volumeStub = (v) => ({ Namespace: v.Namespace, ID: v.ID, Name: v.Name, PluginID: v.PluginID, NodePool: v.NodePool, NodeID: v.NodeID, CapacityBytes: v.CapacityBytes,
    State: v.State, CreateIndex: v.CreateIndex, CreateTime: v.CreateTime, ModifyIndex: v.ModifyIndex, ModifyTime: v.ModifyTime })
  /** api.HostVolume: Constraints, Parameters and Allocations left out when empty (json omitempty). */
  const volumeView = (v, allocations) => ({
    Namespace: v.Namespace, ID: v.ID, Name: v.Name, PluginID: v.PluginID, NodePool: v.NodePool, NodeID: v.NodeID, ...(v.Constraints?.length ? { Constraints: v.Constraints } : {}),
    RequestedCapacityMinBytes: v.RequestedCapacityMinBytes, RequestedCapacityMaxBytes: v.RequestedCapacityMaxBytes, CapacityBytes: v.CapacityBytes,
    RequestedCapabilities: v.RequestedCapabilities, ...(Object.keys(v.Parameters ?? {}).length ? { Parameters: v.Parameters } : {}), HostPath: v.HostPath, State: v.State,
    CreateIndex: v.CreateIndex, CreateTime: v.CreateTime, ModifyIndex: v.ModifyIndex, ModifyTime: v.ModifyTime, ...(allocations.length ? { Allocations: allocations } : {}),
  })
  /** nomad/state/state_store_host_volumes.go@v2.0.5 HostVolumeByID(withAllocs): the allocations on its node, not client-terminal, whose group mounts a host volume of its name. */
  const claims = (v) => ctx.allocsOf(v.NodeID).filter((a) => !['complete', 'failed', 'lost'].includes(a.ClientStatus) && (a.stub.volumes ?? []).includes(v.Name))

  /** command/volume_status_host.go@v2.0.5 getHostVolumeByPrefix: the server matches a prefix of the name or of the ID. */
  function byPrefix(prefix, why) {
    const vols = (state().hostVolumes ?? []).filter((v) => v.Name.startsWith(prefix) || v.ID.startsWith(prefix))
    if (vols.length === 0) die(`${why}no volumes with prefix or ID "${prefix}" found`)
    if (vols.length === 1) return [vols[0], null]
    const exact = vols.filter((v) => v.ID === prefix || v.Name === prefix)
    return exact.length === 1 ? [exact[0], null] : [null, vols]
  }
  /** command/volume_status_host.go@v2.0.5 formatHostVolumes: sorted by ID. */
  function volumeTable(vols, length = 8) {
    const list = [...vols].sort((a, b) => (a.ID < b.ID ? -1 : 1))
    return columns([['ID', 'Name', 'Namespace', 'Plugin ID', 'Node ID', 'Node Pool', 'State'], ...list.map((v) => [v.ID.slice(0, length), v.Name, v.Namespace, v.PluginID, v.NodeID.slice(0, length), v.NodePool, v.State])])
  }

  /**
   * `nomad volume register [-id <id>] [-policy-override] <file|->` for `type = "host"`:
   * command/volume_register.go and volume_register_host.go@v2.0.5 (the same at v1.10.0, v1.10.5),
   * the server's HostVolume.Register (nomad/host_volume_endpoint.go@v2.0.5 L298-411) and the
   * client's (client/hostvolumemanager/host_volumes.go@v2.0.5 Register, L153-195).
   * Before 1.10, the CLI knows only CSI volumes (command/volume_register.go@v1.9.7 L104-113).
   */
  function volumeRegister() {
    if (args.length !== 1) die(`This command takes one argument: <input>\nFor additional help try 'nomad volume register -help'`)
    let raw
    if (args[0] === '-') raw = ctx.stdin ?? ''
    else {
      try { raw = ctx.readFile(args[0]) } catch (e) { die(`Failed to read file: open ${args[0]}: no such file or directory`) }
    }
    const spec = parseVolumeSpec(raw)
    const type = String(spec.type ?? '').toLowerCase()
    if (type === 'csi') die('test double: CSI volumes are not modelled')
    if (type !== 'host' || !cli('1.10')) die(`Error unknown volume type: ${type}`)
    const vol = decodeHostVolume(spec)
    if (!vol.NodeID) die('Node ID is required for registering')
    const ns = vol.Namespace || process.env.NOMAD_NAMESPACE || 'default'
    if (flags.id !== undefined) {
      const [stub, possible] = byPrefix(flags.id, 'Could not update existing volume: ')
      if (possible) die(`Prefix matched multiple volumes\n\n${volumeTable(possible)}`)
      vol.ID = stub.ID
    }
    // A 1.10+ CLI against older servers: no /v1/volume/host/ route, the HTTP server's fallthrough answers 404 with no body
    // (command/agent/http.go@v1.9.7 handleRootFallthrough; api/error_unexpected_response.go@v2.0.5: no body, no parentheses).
    if (!server('1.10')) die('Error registering volume: Unexpected response code: 404')
    const fail = (msg) => die(`Error registering volume: Unexpected response code: 500 (${msg})`)
    if (!vol.NodeID) fail('cannot register volume: node ID is required')
    if (!vol.HostPath) fail('cannot register volume: host path is required')
    vol.Namespace = ns
    // validateVolumeUpdate: Validate (helper.FlattenMultierror: one error alone is shown bare), the namespace, then the update.
    const problems = []
    if (vol.ID && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(vol.ID)) problems.push(`invalid ID "${vol.ID}"`)
    if (!vol.Name) problems.push('missing name')
    if (vol.RequestedCapacityMaxBytes < vol.RequestedCapacityMinBytes) problems.push(`capacity_max (${vol.RequestedCapacityMaxBytes}) must be larger than capacity_min (${vol.RequestedCapacityMinBytes})`)
    for (const c of vol.RequestedCapabilities ?? []) {
      if (!['block-device', 'file-system'].includes(c.AttachmentMode)) problems.push(`invalid attachment mode: "${c.AttachmentMode}"`)
      else if (!['single-node-reader-only', 'single-node-writer', 'single-node-single-writer', 'single-node-multi-writer'].includes(c.AccessMode)) problems.push(`invalid access mode: "${c.AccessMode}"`)
    }
    if (problems.length) fail(`volume validation failed: ${multierror(problems)}`)
    if (!(state().namespaces ?? ['default']).includes(ns)) fail(`volume validation failed: no such namespace "${ns}"`)
    const volumes = (state().hostVolumes ??= [])
    let existing
    if (vol.ID) {
      existing = volumes.find((v) => v.ID === vol.ID && v.Namespace === ns)
      if (!existing) fail(`cannot update volume "${vol.ID}": volume does not exist`)
      // nomad/structs/host_volumes.go@v2.0.5 ValidateUpdate.
      const bad = []
      const using = claims(existing)
      if (using.length) bad.push(`cannot update a volume in use: claimed by allocs (${using.map((a) => a.ID).join(', ')})`)
      if (vol.NodeID && vol.NodeID !== existing.NodeID) bad.push('node ID cannot be updated')
      if (vol.NodePool && vol.NodePool !== existing.NodePool) bad.push('node pool cannot be updated')
      if (vol.RequestedCapacityMaxBytes > 0 && vol.RequestedCapacityMaxBytes < existing.CapacityBytes) bad.push(`capacity_max (${vol.RequestedCapacityMaxBytes}) cannot be less than existing provisioned capacity (${existing.CapacityBytes})`)
      if (bad.length) fail(`validating volume "${vol.ID}" update failed: ${goMultierror(bad)}`)
    }
    // CanonicalizeForRegister: a new ID, the default capability; an update keeps the node, the constraints, the creation time.
    const now = ctx.nowNs()
    if (!existing) {
      vol.ID = ctx.uuid()
      vol.CreateTime = now
      if (!vol.RequestedCapabilities) vol.RequestedCapabilities = [{ AttachmentMode: 'file-system', AccessMode: 'single-node-writer' }]
    } else {
      // An update keeps the node, the constraints, the creation time, but NOT the capabilities: a spec
      // without a capability block leaves the volume with none, and no group can then mount it
      // (nomad/structs/host_volumes.go@v2.0.5 CanonicalizeForRegister; feasible.go hostVolumeIsAvailable).
      Object.assign(vol, { PluginID: vol.PluginID || existing.PluginID, NodePool: vol.NodePool || existing.NodePool, NodeID: existing.NodeID, Constraints: existing.Constraints, CreateTime: existing.CreateTime })
    }
    vol.State = 'pending'
    vol.ModifyTime = now
    // validateVolumeForState: the node (and the pool) must exist.
    const node = nodesOf(state(), ctx.version).find((n) => n.ID === vol.NodeID)
    if (!node) fail(`validating volume "${vol.ID}" against state failed: node "${vol.NodeID}" does not exist`)
    if (vol.NodePool && vol.NodePool !== node.NodePool) fail(`validating volume "${vol.ID}" against state failed: node ID "${vol.NodeID}" is not in pool "${vol.NodePool}"`)
    // The client (nomad/client_host_volume_endpoint.go@v2.0.5 sendVolumeRPC wraps its error: "HostVolume.Register error: ...").
    // One volume of a name per client: another ID under the same name is refused (volLocker).
    if (node.Status === 'down') fail('No path to node') // nomad/structs/errors.go@v2.0.5 ErrNoNodeConn
    const clash = volumes.find((v) => v.NodeID === node.ID && v.Name === vol.Name && v.ID !== vol.ID)
    if (clash) fail('HostVolume.Register error: volume name already exists on this node')
    if (node.MissingPaths.includes(vol.HostPath)) fail(`HostVolume.Register error: could not verify host path for "${vol.Name}": stat ${vol.HostPath}: no such file or directory`)
    // nomad/state/state_store_host_volumes.go@v2.0.5 UpsertHostVolume: ready at once when the node already has a host volume of that name (an update, or a static one).
    const index = ctx.nextIndex()
    const known = serverNodes(state(), ctx.version).find((n) => n.ID === node.ID)
    if (known.HostVolumes[vol.Name]) vol.State = 'ready'
    const record = { ...vol, NodePool: node.NodePool, CreateIndex: existing?.CreateIndex ?? index, ModifyIndex: index,
      stub: { pendingCalls: vol.State === 'ready' ? 0 : state().volumeReadyAfter ?? 1, fresh: true } }
    if (existing) volumes.splice(volumes.indexOf(existing), 1, record)
    else volumes.push(record)
    out(`Registered host volume ${record.Name} with ID ${record.ID}`)
  }

  /**
   * `nomad volume status [-type host] [-json] [-t] [-verbose] [-short] [-node <id>] [-node-pool <pool>] [<id or name prefix>]`:
   * command/volume_status.go and volume_status_host.go@v2.0.5 (the same at v1.10.0). An empty list
   * prints nothing on stdout, "No dynamic host volumes" on stderr, and exits 0, -json or not.
   * Before 1.10 the CLI ignores -type and lists CSI volumes (command/volume_status.go@v1.9.7 L137: csiStatus).
   */
  function volumeStatus() {
    if (flags.t !== undefined) die('test double: nomad volume status -t is not supported')
    if (args.length > 1) die(`This command takes either no arguments or one: <id>\nFor additional help try 'nomad volume status -help'`)
    const id = args[0] ?? ''
    if (!cli('1.10')) return csiStatus(id)
    const type = flags.type ?? ''
    if (!['', 'host', 'csi'].includes(type)) die(`No such volume type "${type}"`)
    if (type === 'csi') {
      if (flags.node !== undefined || flags['node-pool'] !== undefined) die('-node and -node-pool can only be used with -type host')
      return csiStatus(id)
    }
    if (!id) {
      hostList()
      if (type === '') { out(''); csiStatus('') }
      return
    }
    if (flags.node !== undefined || flags['node-pool'] !== undefined) die('-node or -node-pool options can only be used when no ID is provided')
    const [v, possible] = byPrefix(id, 'Error listing host volumes: ')
    if (possible) die(`Prefix matched multiple host volumes\n\n${flags.json ? JSON.stringify([...possible].sort((a, b) => (a.ID < b.ID ? -1 : 1)).map(volumeStub), null, 4) : volumeTable(possible, flags.verbose ? 36 : 8)}`)
    const using = claims(v)
    if (flags.json) return json(volumeView(v, using.map(ctx.allocStub)))
    const length = flags.verbose ? 36 : 8
    const lines = [kv([['ID', v.ID], ['Name', v.Name], ['Namespace', v.Namespace], ['Plugin ID', v.PluginID], ['Node ID', v.NodeID], ['Node Pool', v.NodePool],
      ['Capacity', ibytes(v.CapacityBytes)], ['State', v.State], ['Host Path', v.HostPath]])]
    if (!flags.short) lines.push('', 'Capabilities', columns([['Access Mode', 'Attachment Mode'], ...(v.RequestedCapabilities ?? []).map((c) => [c.AccessMode, c.AttachmentMode])]),
      '', 'Allocations', using.length ? columns([['ID', 'Node ID', 'Task Group', 'Version', 'Desired', 'Status', 'Created', 'Modified'],
        ...using.map((a) => [a.ID.slice(0, length), a.NodeID.slice(0, length), a.TaskGroup, a.JobVersion, a.DesiredStatus, a.ClientStatus, 'now', 'now'])]) : 'No allocations placed')
    out(lines.join('\n'))
  }

  /** command/volume_status_host.go@v2.0.5 hostVolumeList; servers before 1.10 answer null for type=host (command/agent/csi_endpoint.go@v1.9.7 L26-28). */
  function hostList() {
    if (!flags.json) out('Dynamic Host Volumes')
    let vols = server('1.10') ? state().hostVolumes ?? [] : []
    if (flags.node !== undefined) vols = vols.filter((v) => v.NodeID === flags.node)
    if (flags['node-pool'] !== undefined) vols = vols.filter((v) => v.NodePool === flags['node-pool'])
    if (!vols.length) return err('No dynamic host volumes')
    if (flags.json) return json([...vols].sort((a, b) => (a.ID < b.ID ? -1 : 1)).map(volumeStub))
    out(volumeTable(vols, flags.verbose ? 36 : 8))
  }

  /** command/volume_status_csi.go@v1.9.7 (and @v2.0.5): the double has no CSI volume. */
  function csiStatus(id) {
    if (id) die(`Error listing volumes: no volumes with prefix or ID "${id}" found`)
    if (!flags.json) out('Container Storage Interface')
    err('No CSI volumes')
  }

  return { nodeStatus, volumeRegister, volumeStatus }
}

/**
 * After each call: a volume registered by an earlier call becomes "ready" once the client's node
 * update has reached the servers (volumeReadyAfter calls later; nomad/state/state_store_host_volumes.go@v2.0.5
 * upsertHostVolumeForNode sets it ready when the node's fingerprint lists it).
 */
export function fingerprintVolumes(state) {
  for (const v of state.hostVolumes ?? []) {
    if (!v.stub) continue
    if (v.stub.fresh) { delete v.stub.fresh; if (v.stub.pendingCalls <= 0) v.State = 'ready'; continue }
    if (v.State === 'pending' && --v.stub.pendingCalls <= 0) v.State = 'ready'
  }
}

// ----- the volume specification (HCL1 or JSON: command/volume_register.go@v2.0.5 parseVolumeType, hcl.Parse) ----

/** Enough of HCL1 for a volume spec: `key = value` (strings, numbers, booleans, lists) and blocks; JSON too. */
export function parseVolumeSpec(raw) {
  const fail = (msg) => { throw Object.assign(new Error(msg), { spec: true }) }
  try {
    if (raw.trim().startsWith('{')) {
      try { return JSON.parse(raw) } catch (e) { fail(`parse error: ${e.message}`) }
    }
    return hcl1Body(raw, fail)
  } catch (e) {
    if (!e.spec) throw e
    process.stderr.write(`Error parsing the volume type: ${e.message}\n`)
    process.exit(1)
  }
}

function hcl1Body(text, fail) {
  const obj = {}
  const add = (k, v, block) => {
    if (block) (obj[k] ??= []).push(v)
    else obj[k] = v
  }
  let i = 0
  while (i < text.length) {
    i = skipBlank(text, i, true)
    if (i >= text.length) break
    const m = /^([A-Za-z_][\w.-]*|"[^"]*")/.exec(text.slice(i))
    if (!m) fail(`parse error: At ${lineCol(text, i).line}:${lineCol(text, i).col}: expected: IDENT | STRING got: ${JSON.stringify(text[i])}`)
    const key = m[1].replace(/^"|"$/g, '')
    i = skipBlank(text, i + m[0].length, false)
    if (text[i] === '=') {
      i = skipBlank(text, i + 1, false)
      const end = endOfExpression(text, i)
      const src = text.slice(i, end).trim()
      const v = src.startsWith('{') ? hcl1Body(src.slice(1, -1), fail) : hcl1Value(src, fail, text, i)
      add(key, v, false)
      i = end
    } else if (text[i] === '{') {
      const end = matchBrace(text, i)
      add(key, hcl1Body(text.slice(i + 1, end), fail), true)
      i = end + 1
    } else fail(`parse error: At ${lineCol(text, i).line}:${lineCol(text, i).col}: key '${key}' expected start of object ('{') or assignment ('=')`)
  }
  return obj
}

function hcl1Value(src, fail, text, pos) {
  if (src.startsWith('"')) { try { return JSON.parse(src) } catch { fail(`parse error: At ${lineCol(text, pos).line}:${lineCol(text, pos).col}: literal not terminated`) } }
  if (/^-?\d+(\.\d+)?$/.test(src)) return Number(src)
  if (src === 'true' || src === 'false') return src === 'true'
  if (src.startsWith('[')) return src.slice(1, -1).split(',').map((x) => x.trim()).filter(Boolean).map((x) => hcl1Value(x, fail, text, pos))
  fail(`parse error: At ${lineCol(text, pos).line}:${lineCol(text, pos).col}: Unknown token: ${src.split(/\s/)[0]}`)
}

/** command/volume_create_host.go@v2.0.5 decodeHostVolume (mapstructure WeakDecode of the api.HostVolume tags). */
function decodeHostVolume(spec) {
  const one = (x) => (Array.isArray(x) ? Object.assign({}, ...x) : x ?? {})
  const str = (x) => (x === undefined || x === null ? '' : String(x))
  const capability = [spec.capability ?? []].flat().map((c) => ({ AttachmentMode: str(c.attachment_mode), AccessMode: str(c.access_mode) }))
  const constraint = [spec.constraint ?? []].flat().map((c) => ({ LTarget: str(c.attribute), RTarget: str(c.value), Operand: str(c.operator) || '=' }))
  return {
    Namespace: str(spec.namespace), ID: str(spec.id), Name: str(spec.name), PluginID: str(spec.plugin_id), NodePool: str(spec.node_pool), NodeID: str(spec.node_id),
    Constraints: constraint, RequestedCapacityMinBytes: bytes(spec.capacity_min, 'capacity_min'), RequestedCapacityMaxBytes: bytes(spec.capacity_max, 'capacity_max'),
    CapacityBytes: bytes(spec.capacity, 'capacity'), RequestedCapabilities: capability.length ? capability : null, Parameters: Object.fromEntries(Object.entries(one(spec.parameters)).map(([k, v]) => [k, str(v)])),
    HostPath: str(spec.host_path),
  }
}

/** github.com/dustin/go-humanize ParseBytes, as parseCapacityBytes uses it: "10GiB" (1024^3), "20G" and "15GB" (1000^3). */
function bytes(x, field) {
  if (x === undefined || x === null || x === '') return 0
  const m = /^\s*([\d.]+)\s*([kmgtpe]?)(i?)b?\s*$/i.exec(String(x))
  if (!m) {
    process.stderr.write(`Error decoding the volume definition: invalid ${field}: unhandled size name: ${String(x).replace(/^[\d.\s]+/, '').toLowerCase()}\n`)
    process.exit(1)
  }
  const exp = ' kmgtpe'.indexOf((m[2] || ' ').toLowerCase())
  return Math.round(Number(m[1]) * (m[2] ? (m[3] ? 1024 : 1000) ** exp : 1))
}

// ----- formatting helpers -----------------------------------------------------------------------

/** github.com/hashicorp/go-multierror, as helper.FlattenMultierror leaves it: one error bare, several listed. */
function multierror(list) {
  return list.length === 1 ? list[0] : goMultierror(list)
}
function goMultierror(list) {
  return `${list.length} error${list.length > 1 ? 's' : ''} occurred:\n${list.map((e) => `\t* ${e}`).join('\n')}\n\n`
}

/** command/helpers.go@v2.0.5 sanitizeUUIDPrefix. */
function sanitizeUUIDPrefix(prefix) {
  const digits = prefix.length - (prefix.match(/-/g) ?? []).length
  return prefix.slice(0, prefix.length - (digits % 2))
}

/** command/helpers.go formatList: columnize, two spaces apart, an empty cell shown as <none>. */
export function columns(rows) {
  const cells = rows.map((r) => r.map((x) => (String(x) === '' ? '<none>' : String(x))))
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => r[i].length)))
  return cells.map((r) => r.map((x, i) => (i === r.length - 1 ? x : x.padEnd(widths[i]))).join('  ').trimEnd()).join('\n')
}

/** command/helpers.go formatKV: "Key = Value", an empty value shown as <none>. */
function kv(pairs) {
  const w = Math.max(...pairs.map(([k]) => k.length))
  return pairs.map(([k, v]) => `${k.padEnd(w)} = ${String(v) === '' ? '<none>' : v}`).join('\n')
}

/** go-humanize IBytes. */
function ibytes(n) {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB']
  let v = n, i = -1
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v < 10 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`
}
