// How the storefront and Valkey jobs reach Vault (and Consul), per Nomad version: the flow each
// cluster accepts, the submitter tokens a legacy cluster may demand, the plan's refusals read for
// what a person must do (deploy_valkey prints the one-time Vault setup; no script applies it).
//
// The facts (hashicorp/nomad, read at each tag):
// - 1.10.0 removed the token flow: `vault { policies }` is accepted and silently dropped
//   (command/agent/job_endpoint.go@v1.10.0); tasks log in with their workload identity and a role.
// - 1.7-1.9: workload identity when the servers set vault.default_identity, else the legacy flow;
//   a role-only block without default_identity fails "Task %s has a Vault block with an empty list of
//   policies", policies with it warn "... policies will be ignored" (nomad/job_endpoint_hooks.go@v1.9.7).
// - 1.6: no `role` in the job schema (api/tasks.go@v1.6.10): the LOCAL CLI refuses to parse it.
// - 1.6-1.9 with vault.allow_unauthenticated = false: plan and run fail "Vault used in the job but
//   missing Vault token" (nomad/job_endpoint_hook_vault.go@v1.9.7); with consul.allow_unauthenticated =
//   false only run fails "job-submitter consul token denied" (nomad/job_endpoint.go@v1.9.7), and it
//   comes after the -check-index check, so nothing reveals it before a real registration.
import { type Checks, refuse, secret } from './env.mts'
import { atLeast, nomadWithTokens, type Nomad, type Versions } from './nomad.mts'

export type VaultSettings = ReturnType<typeof vaultSettings>
export type Flow = 'identity' | 'token'

/** DEPLOY_VAULT_AUTH, STOREFRONT_VAULT_ROLE and the legacy submitter tokens (secrets, environment of nomad only). */
export function vaultSettings(check: Checks) {
  const auth = check.optional('DEPLOY_VAULT_AUTH')
  if (auth !== undefined && auth !== 'identity' && auth !== 'token')
    check.problem(`DEPLOY_VAULT_AUTH=${JSON.stringify(auth)} must be identity (workload identity, Nomad 1.7+) or token (legacy, Nomad 1.6-1.9); unset: chosen from the cluster's version`)
  const role = check.get('STOREFRONT_VAULT_ROLE', 'cedra-storefront')
  if (role && !/^[A-Za-z0-9_.-]+$/.test(role)) check.problem(`STOREFRONT_VAULT_ROLE=${JSON.stringify(role)} must be a Vault role name (letters, digits, _ . -)`)
  const vaultToken = secret(check.optional('DEPLOY_VAULT_SUBMIT_TOKEN'))
  const consulToken = secret(check.optional('DEPLOY_CONSUL_SUBMIT_TOKEN'))
  return { auth: auth as Flow | undefined, role, vaultToken, consulToken }
}

/**
 * The flow this cluster takes, or a refusal naming the fix (exit 2, before any build or run). On a
 * legacy cluster the submitter tokens, when given, go to nomad's environment (never argv).
 */
export function chooseFlow(nomad: Nomad, v: Versions, s: VaultSettings): { flow: Flow; vars: Record<string, string> } {
  let flow: Flow
  if (atLeast(v.server, '1.10')) {
    if (s.auth === 'token')
      refuse([`DEPLOY_VAULT_AUTH=token, but Nomad ${v.server} has no token flow (removed in 1.10.0; it would silently drop the policies and the tasks would get no secret): unset DEPLOY_VAULT_AUTH; the jobs use workload identity with the role ${s.role} (one-time Vault setup: DEPLOYMENT_GUIDE.md, "Vault with workload identity")`])
    const ignored = [s.vaultToken && 'DEPLOY_VAULT_SUBMIT_TOKEN', s.consulToken && 'DEPLOY_CONSUL_SUBMIT_TOKEN'].filter(Boolean)
    if (ignored.length) console.error(`warning: ${ignored.join(' and ')} ignored: Nomad ${v.server} takes no submitter token (1.10+); unset ${ignored.length > 1 ? 'them' : 'it'}`)
    flow = 'identity'
  } else if (!atLeast(v.server, '1.7')) {
    if (s.auth === 'identity')
      refuse([`DEPLOY_VAULT_AUTH=identity, but Nomad ${v.server} has no workload identity for Vault (1.7+): unset DEPLOY_VAULT_AUTH (the legacy token flow), or upgrade the cluster (DEPLOYMENT_GUIDE.md, "Upgrade to Nomad 2.0")`])
    flow = 'token'
  } else flow = s.auth ?? 'token'
  if (flow === 'identity' && !atLeast(v.cli, '1.7'))
    refuse([`the local nomad CLI is ${v.cli}: it cannot parse vault { role } (1.7+), and the servers run ${v.server}: install the CLI of the servers' version`])
  if (flow === 'token') nomadWithTokens(nomad, { VAULT_TOKEN: s.vaultToken, CONSUL_HTTP_TOKEN: s.consulToken })
  const how = flow === 'identity' ? `workload identity, Vault role ${s.role}` : `legacy token flow, policy cedra-storefront${s.vaultToken ? ', submitter Vault token from DEPLOY_VAULT_SUBMIT_TOKEN' : ''}${s.consulToken ? ', submitter Consul token from DEPLOY_CONSUL_SUBMIT_TOKEN' : ''}`
  console.error(`    Vault: ${how}${!atLeast(v.server, '1.10') && !s.auth ? ' (DEPLOY_VAULT_AUTH=identity once the servers set vault.default_identity)' : ''}`)
  return { flow, vars: { vault_auth: flow, ...(flow === 'identity' ? { vault_role: s.role } : {}) } }
}

/**
 * A plan or run refused for the Vault or Consul flow: what it means and what to do (undefined when
 * the text is something else). Texts: see the header.
 */
export function flowProblem(text: string, flow: Flow, version: string): string | undefined {
  if (/Vault used in the job but missing Vault token/.test(text))
    return `Nomad ${version} demands a Vault token from whoever submits the job (vault.allow_unauthenticated = false): set DEPLOY_VAULT_SUBMIT_TOKEN (environment or env file; it reaches nomad's environment only) to a token that holds the policy cedra-storefront — or, better, move to workload identity (DEPLOYMENT_GUIDE.md, "Upgrade to Nomad 2.0")`
  if (/job-submitter consul token denied/.test(text))
    return `Nomad ${version} demands a Consul token from whoever submits the job (consul.allow_unauthenticated = false): set DEPLOY_CONSUL_SUBMIT_TOKEN (environment or env file; nomad's environment only) to a Consul token allowed to register the job's services and read its templates' keys`
  if (/has a Vault block with an empty list of policies/.test(text) && flow === 'identity')
    return `Nomad ${version} has no Vault workload identity configured (the servers' vault.default_identity is not set): unset DEPLOY_VAULT_AUTH to use the legacy token flow, or configure workload identity first (DEPLOYMENT_GUIDE.md, "Vault with workload identity")`
  if (/policies but uses workload identity to authenticate with Vault, policies will be ignored/.test(text))
    return `Nomad ${version} uses workload identity for Vault (its servers set vault.default_identity) and would ignore the job's policies: set DEPLOY_VAULT_AUTH=identity (the role is STOREFRONT_VAULT_ROLE)`
}
