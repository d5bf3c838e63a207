// The agent's releases (deploy_binary, deploy_nomad, revert_agent, status): each build is a file named
// by its content, AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256>; the record's item `binaries` says which
// builds are on which hosts, and the job's meta which one a version runs.
import type { JobVersion, Release } from './release.mts'

/** A build deploy_binary recorded (item binaries of the record), newest first: where it is kept. */
export type Binary = { sha256: string; commit?: string; uploaded: string; by: string; hosts: string[] }

/** The sha256 of the binary a version of the agent's job runs: its meta, else the release name in its command. */
export function agentSha(v: JobVersion): string | undefined {
  const meta = v.Meta?.binary_sha256
  if (meta && /^[0-9a-f]{64}$/.test(meta)) return meta
  const command = (v.TaskGroups ?? []).flatMap((g) => g.Tasks ?? []).map((t) => t.Config?.command).find(Boolean)
  return command?.match(/-([0-9a-f]{64})$/)?.[1]
}

/** The binary path a version of the agent's job runs (its raw_exec command). */
export function agentPath(v: JobVersion): string | undefined {
  return (v.TaskGroups ?? []).flatMap((g) => g.Tasks ?? []).map((t) => t.Config?.command).find(Boolean)
}

/**
 * The build a deploy of the agent applies by default (deploy_nomad, and status to plan it): the newest
 * build deploy_binary recorded when it was never deployed (nor tried: a failed one is not offered
 * again), else what the current version runs. Undefined: nothing recorded, or a job that runs a
 * binary without a release name (deployed before releases).
 */
export function defaultAgentBuild(current: JobVersion | undefined, binaries: Binary[], history: Release[]): { sha: string; commit: string; why: string } | undefined {
  const running = current && agentSha(current)
  const staged = binaries[0]
  if (staged && staged.sha256 !== running && !history.some((h) => h.sha256 === staged.sha256))
    return { sha: staged.sha256, commit: staged.commit ?? '', why: `staged by deploy_binary (${staged.by}, ${staged.uploaded})` }
  if (running) return { sha: running, commit: current!.Meta?.commit ?? '', why: 'what runs now, applied again' }
  return undefined
}
