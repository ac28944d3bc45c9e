#!/usr/bin/env bash
# Installs what the test suite needs, only when it is missing (a no-op run takes well under a second):
#   - Debian packages: etcd-server (etcd), etcd-client (etcdctl), prometheus (promtool), util-linux (setpriv),
#     uwsgi + uwsgi-plugin-python3 (the uWSGI vassal tests run a real uWSGI serving a WSGI app),
#     chromium (the dashboard's browser tests drive it through puppeteer-core, which downloads no browser)
#   - node_modules via `npm ci` when missing or older than package-lock.json
# --runtime: only what running the emperor needs (`npm start`).
# --bench: what the tests need, plus the supervisors `npm run bench -- --peers` compares the emperor
#   with: supervisor (supervisord, supervisorctl); the uWSGI Emperor is the uwsgi above, PM2 an npm
#   devDependency. Not in the default set, so `npm test` never installs (or fetches) them.
# Prints one line per thing it did. Safe to run repeatedly; needs root (or sudo) only when installing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

did=0
say() { echo "setup: $*"; did=1; }

# binary -> Debian package that provides it
declare -A pkg_for=(
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [promtool]=prometheus
  [setpriv]=util-linux
  [uwsgi]=uwsgi
  [chromium]=chromium
  [supervisord]=supervisor
  [supervisorctl]=supervisor
)

runtime_only=0
bench=0
case "${1:-}" in
  --runtime) runtime_only=1 ;;
  --bench) bench=1 ;;
  "") ;;
  *) echo "setup: unknown option $1 (expected --runtime or --bench)" >&2; exit 2 ;;
esac

bins=(etcd etcdctl promtool setpriv uwsgi chromium)
((bench)) && bins+=(supervisord supervisorctl)
missing=()
for bin in "${bins[@]}"; do
  ((runtime_only)) && [[ $bin != setpriv ]] && continue
  if ! command -v "$bin" >/dev/null 2>&1; then
    missing+=("${pkg_for[$bin]}")
  fi
done
# The python3 plugin is a file, not a binary on PATH.
if ((!runtime_only)) && [[ ! -e /usr/lib/uwsgi/plugins/python3_plugin.so ]]; then
  missing+=(uwsgi-plugin-python3)
fi

if ((${#missing[@]} > 0)); then
  # supervisord and supervisorctl come in one package.
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
      echo "setup: need root to install ${missing[*]} (no sudo found)" >&2
      exit 1
    fi
  fi

  # Keep the packages' maintainer scripts from starting system etcd/prometheus daemons:
  # invoke-rc.d consults /usr/sbin/policy-rc.d, and exit code 101 means "action forbidden".
  # Any existing policy-rc.d is put back afterwards.
  policy=/usr/sbin/policy-rc.d
  policy_backup=""
  restore_policy() {
    if [[ -n "$policy_backup" ]]; then
      "${SUDO[@]}" mv -f "$policy_backup" "$policy"
    else
      "${SUDO[@]}" rm -f "$policy"
    fi
  }
  if [[ -e "$policy" ]]; then
    policy_backup="$(mktemp /usr/sbin/.policy-rc.d.setup-backup.XXXXXX 2>/dev/null || echo /usr/sbin/.policy-rc.d.setup-backup)"
    "${SUDO[@]}" cp -p "$policy" "$policy_backup"
  fi
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"

  "${SUDO[@]}" apt-get update -qq >/dev/null
  say "ran apt-get update"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  say "installed ${missing[*]}"

  restore_policy
  trap - EXIT

  # Belt and braces: if a service got started anyway (e.g. policy-rc.d ignored), stop it.
  for svc in etcd prometheus uwsgi supervisor; do
    if [[ -x /etc/init.d/$svc ]] && "${SUDO[@]}" /etc/init.d/"$svc" status >/dev/null 2>&1; then
      "${SUDO[@]}" /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
      say "stopped the system $svc service started by its package"
    fi
  done
fi

if [[ ! -d node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  say "ran npm ci (node_modules was missing)"
elif [[ ! -e node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  say "ran npm ci (node_modules older than package-lock.json)"
fi

if ((did == 0)); then
  echo "setup: everything present, nothing to do"
fi
