// Host volume directories (the two volume scripts): look, make, and the block a person adds by hand.
import { fail, refuse, report, step } from './env.mts'
import { sshDryRun, unframed, type Ssh, type SshTarget } from './ssh.mts'

// Fixed remote scripts; the path arrives as "$1". LOOK only reads: "absent", "dir MODE" or "other".
const LOOK_DIR = 'if [ -d "$1" ]; then echo "dir $(stat -L -c %a -- "$1")"; elif [ -e "$1" ] || [ -L "$1" ]; then echo other; else echo absent; fi'
const MAKE_DIR = 'mkdir -p -- "$1" && chmod 755 -- "$1"'

/** The commands a dry run of a volume script prints (the second runs only when needed). */
export function volumeCommands(target: SshTarget, dir: string): string[] {
  return sshDryRun(target, [
    { name: 'LOOK', what: `what is at ${dir}: "absent", "dir MODE" or "other" (reads only)`, script: LOOK_DIR, args: [dir] },
    { name: 'MAKE', what: `create ${dir}, mode 755 (a real run: only when LOOK says absent or another mode)`, script: MAKE_DIR, args: [dir] },
  ])
}

/** What is at `dir` on the server: "absent" or "dir MODE"; something else there is refused (exit 2). */
export async function lookAtVolume(ssh: Ssh, target: SshTarget, dir: string, variable: string): Promise<string> {
  const look = await ssh.run(LOOK_DIR, [dir])
  if (!look.ok) fail(`looking at ${dir} on ${target.destination}: ${ssh.why(look)}`)
  if (!look.framed) {
    await ssh.close()
    refuse([unframed(target)])
  }
  const state = look.stdout.trim()
  if (state !== 'absent' && state !== 'other' && !/^dir [0-7]{3,4}$/.test(state)) {
    await ssh.close()
    refuse([`looking at ${dir} on ${target.destination} printed ${JSON.stringify(state.slice(0, 80))}, not what the fixed remote script prints: nothing was changed`])
  }
  if (state === 'other') {
    await ssh.close()
    refuse([`${dir} exists on ${target.destination} but is not a directory: move it away or set ${variable}`])
  }
  return state
}

/** Create `dir` with mode 755 (or fix its mode); idempotent: says so when nothing had to change. */
export async function makeVolume(ssh: Ssh, target: SshTarget, dir: string, state: string): Promise<string> {
  report({ host: target.host })
  if (state === 'dir 755') {
    const line = `${dir} already exists on ${target.destination} with mode 755: nothing changed`
    report({ outcome: 'unchanged', message: line })
    return line
  }
  report({ acted: true })
  step(state === 'absent' ? `Create ${dir} (mode 755)` : `Set mode 755 on ${dir} (was ${state.slice(4)})`)
  const made = await ssh.run(MAKE_DIR, [dir])
  if (!made.ok) fail(`creating ${dir} on ${target.destination}: ${ssh.why(made)}`)
  const line = state === 'absent' ? `${dir} created on ${target.destination} with mode 755` : `${dir} on ${target.destination}: mode ${state.slice(4)} changed to 755`
  report({ outcome: 'done', message: line })
  return line
}

/** The client configuration a person adds by hand for a host volume (no script ever applies it). */
export function hostVolumeBlock(volume: string, dir: string, host = 'the client that runs the job'): string {
  return `Add by hand to /etc/nomad.d/nomad.hcl on ${host}, inside its client block (no script does this):
  client {
    host_volume "${volume}" {
      path      = "${dir}"
      read_only = false
    }
  }
then restart Nomad on that server: sudo systemctl restart nomad`
}
