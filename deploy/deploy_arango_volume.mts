#!/usr/bin/env -S npx tsx
// deploy_arango_volume: create the ArangoDB data directory on the Nomad client, over ssh, mode 755.
//
// Usage: npx tsx deploy/deploy_arango_volume.mts [--dry-run] [--env-file PATH]
//
// Over ONE ssh connection: looks at ARANGO_DATA_DIR on the server and creates it with mode 755 (or
// sets 755 on it); when it is already there with mode 755, changes nothing and says so. Then prints
// the host_volume block "arangodb_data" to add BY HAND to /etc/nomad.d/nomad.hcl and the restart
// step: it never edits the Nomad configuration nor restarts Nomad.
//
// Needs: ssh (OpenSSH client); on the server: sh, stat, mkdir, chmod.
// Reads: DEPLOY_SSH_HOST (required), DEPLOY_SSH_USER (default root), DEPLOY_SSH_PORT (default 22),
//        DEPLOY_SSH_KEY (identity file, optional), DEPLOY_SSH_KNOWN_HOSTS (known_hosts file, optional),
//        ARANGO_DATA_DIR (default /opt/arangodb_data),
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each ssh command may take).
// Options:
//   --dry-run         print the ssh commands a real run would execute; run nothing
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or already there), 1 a step failed (ssh included), 2 refused before changing anything.
import { exit, start, step } from './lib/env.mts'
import { openSsh, sshTarget } from './lib/ssh.mts'
import { hostVolumeBlock, lookAtVolume, makeVolume, volumeCommands } from './lib/volume.mts'

const VOLUME = 'arangodb_data'

// Check
const { check, dryRun } = start(import.meta.url)
const target = sshTarget(check)
const dir = check.remotePath('ARANGO_DATA_DIR', '/opt/arangodb_data')
check.done()

if (dryRun) {
  console.log(`# a real run sends these over one ssh connection; the second only when ${dir} is missing or not 755`)
  console.log(volumeCommands(target, dir).join('\n'))
  console.log(`#\n${hostVolumeBlock(VOLUME, dir, target.host).replace(/^/gm, "# ")}`)
  exit(0)
}

// Look at the server (the one authenticated connection of this run)
step(`Connect to ${target.destination} (port ${target.port}) and look at ${dir}`)
const ssh = await openSsh(target)
const state = await lookAtVolume(ssh, target, dir, 'ARANGO_DATA_DIR')

// --- point of no return ---
const result = await makeVolume(ssh, target, dir, state)
await ssh.close()

// Report
console.log(`${result}

${hostVolumeBlock(VOLUME, dir, target.host)}

Useful commands:
  ${target.login} ls -ld ${dir}
  nomad node status -verbose <node-id>   ("Host Volumes" lists ${VOLUME} once Nomad has restarted)
  npx tsx deploy/deploy_arangodb.mts`)
