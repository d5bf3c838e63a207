#!/usr/bin/env -S npx tsx
// deploy_valkey_volume: create the Valkey data directory on the Nomad client(s) over ssh, mode 755, and
// make it the host volume "valkey_data" (registered through Nomad's API on 1.10+).
//
// Usage: npx tsx deploy/deploy_valkey_volume.mts [--dry-run] [--env-file PATH]
//
// First asks Nomad which client each host is (its node, matched by address or else name) and refuses a
// host that is not a ready, eligible client with a healthy docker driver. Then, over one ssh connection
// per host: looks at VALKEY_DATA_DIR and creates it with mode 755 (or sets 755 on it); when it is
// already there with mode 755, changes nothing and says so. On Nomad 1.10+ it registers the directory
// as the dynamic host volume "valkey_data" of that node (`nomad volume register`: no configuration
// edit, no client restart; one already there on that path is "nothing changed", on another path
// refused). On Nomad 1.6-1.9 it prints the host_volume block to add BY HAND to /etc/nomad.d/nomad.hcl
// and the restart step. It never edits the Nomad configuration, restarts Nomad, nor deletes a volume.
// Valkey runs one instance: with several hosts, each gets its own empty directory, and Nomad places
// Valkey on one of them (its data does not follow it to another).
//
// Needs: ssh (OpenSSH client), nomad CLI 1.6+ (the servers' version; 2.0 is current); on the server:
//        sh, stat, mkdir, chmod.
// Reads: DEPLOY_SSH_HOST (one host) or DEPLOY_SSH_HOSTS (several, separated by spaces or commas),
//        DEPLOY_SSH_USER (default root), DEPLOY_SSH_PORT (default 22),
//        DEPLOY_SSH_KEY (identity file, optional), DEPLOY_SSH_KNOWN_HOSTS (known_hosts file, optional),
//        VALKEY_DATA_DIR (default /opt/valkey_data),
//        NOMAD_ADDR, NOMAD_TOKEN (node:read; host-volume register on 1.10+), NOMAD_CACERT, NOMAD_CLIENT_CERT,
//        NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME, NOMAD_NAMESPACE, NOMAD_REGION,
//        DEPLOY_COMMAND_TIMEOUT (default 60: seconds each ssh or nomad command may take).
// Options:
//   --dry-run         print the commands a real run would execute; run nothing, contact nothing, need no token
//   --json            one JSON result on stdout at the end (deploy/lib/result.schema.json); the rest to stderr
//   --env-file PATH   read the configuration from PATH instead of .env
//   -h, --help        this help
// Exit: 0 done (or already there), 1 a step failed (ssh included), 2 refused before changing anything.
import { volumeScript } from './lib/volume.mts'

await volumeScript({ url: import.meta.url, volume: 'valkey_data', variable: 'VALKEY_DATA_DIR', fallback: '/opt/valkey_data', service: 'Valkey', next: 'npx tsx deploy/deploy_valkey.mts' })
