#!/usr/bin/env bash
# The README's test command (`npm test`): installs what the tests need on a Debian machine when it is
# missing (openssh-server, golang-go, haproxy, git, openssl, dash, procps, strace, cron; npm packages with
# npm ci), then runs the whole suite. Extra arguments go to vitest (e.g. `npm test -- test/deploy_nomad.test.ts`).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have sshd    || need+=(openssh-server)
have ssh     || need+=(openssh-client)
have go      || need+=(golang-go)
have haproxy || need+=(haproxy)
have git     || need+=(git)
have openssl || need+=(openssl)
have dash    || need+=(dash)
have ps      || need+=(procps)
have strace  || need+=(strace)
have crontab || need+=(cron)
have script  || need+=(util-linux)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "The tests need: ${need[*]}. Install them (Debian: sudo apt-get install ${need[*]}) and run again." >&2
    exit 1
  fi
  echo "==> apt-get install ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -n "${CI:-}" ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci" >&2
  npm ci --no-audit --no-fund
fi

npx tsc --noEmit
exec npx vitest run "$@"
