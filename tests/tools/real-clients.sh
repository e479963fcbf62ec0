#!/usr/bin/env bash
# Run the real, public Docker Cloud clients (docker-cloud CLI 1.0.9 and python-dockercloud SDK 1.0.12)
# against a running auditd. They are Python 2.7 programs, installed with pip from PyPI into a cache dir.
#
#   real-clients.sh install                      install both into $RC_DIR (see below), and
#                                                a `docker-cloud` command into $RC_DIR/wrappers
#                                                (it prints that folder: put it on your PATH)
#   real-clients.sh cli  URL USER KEY ARGS...    e.g.  cli http://127.0.0.1:8080 alice KEY action ls
#   real-clients.sh sdk  URL USER KEY 'PYTHON2 CODE'   code runs with `import dockercloud` done
#
# URL is the bare server address, no path (the SDK drops the last path segment of its REST host).
# Both REST and WebSocket hosts are derived from it. Set DOCKERCLOUD_NAMESPACE yourself to exercise
# the namespaced log-stream path.
# RC_DIR: $RC_DIR, else $AUDITD_REAL_CLIENTS_DIR, else ~/.cache/auditd-real-clients.
# PY2: $PY2, else the newest pyenv 2.7, else python2.7 on PATH.
# tests/realclients.py uses this script's `install`; keep the two in step.
set -euo pipefail
RC_DIR=${RC_DIR:-${AUDITD_REAL_CLIENTS_DIR:-$HOME/.cache/auditd-real-clients}}
if [ -z "${PY2:-}" ]; then
  PY2=$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/2.7*/bin/python 2>/dev/null \
        | sort -V | tail -n1 || true)
  [ -n "$PY2" ] || PY2=$(command -v python2.7 || true)
fi
[ -n "$PY2" ] && [ -x "$PY2" ] || { echo "real-clients: no Python 2.7 found (set PY2=/path/to/python2.7)" >&2; exit 3; }

# Every version pinned: the clients' behaviour (dates via ago, tables via tabulate, pings and closes
# via websocket-client) depends on these exact releases; a change here invalidates the cache.
REQUIREMENTS="python-dockercloud==1.0.12 docker-cloud==1.0.9 websocket-client==0.59.0 ago==0.0.95
tabulate==0.8.10 requests==2.27.1 urllib3==1.26.20 certifi==2021.10.8 chardet==4.0.0 idna==2.10
python-dateutil==2.9.0.post0 PyYAML==3.13 future==0.18.3 six==1.17.0"

site() { echo "$RC_DIR/lib/python2.7/site-packages"; }

install() {
  local marker=$RC_DIR/installed.txt
  if [ -x "$RC_DIR/bin/docker-cloud" ] && [ "$(cat "$marker" 2>/dev/null)" = "$REQUIREMENTS" ]; then
    return 0
  fi
  mkdir -p "$RC_DIR"
  # PYTHONPATH lets pip see what an earlier install put under the prefix (no re-download then).
  # shellcheck disable=SC2086
  PYTHONPATH=$(site) "$PY2" -m pip install -q --disable-pip-version-check --no-warn-script-location \
      --prefix "$RC_DIR" $REQUIREMENTS >"$RC_DIR/install.log" 2>&1 \
    || { cat "$RC_DIR/install.log" >&2; exit 3; }
  PYTHONPATH=$(site) "$PY2" -c 'import dockercloud, dockercloudcli, websocket' \
    || { echo "real-clients: installed, but the clients do not import" >&2; exit 3; }
  printf '%s' "$REQUIREMENTS" >"$marker"
}

# `docker-cloud` for a shell: a wrapper that sets PYTHONPATH for that one process only (exported
# in a shell, it would break every Python 3 there, auditd included).
wrapper() {
  mkdir -p "$RC_DIR/wrappers"
  local target=$RC_DIR/wrappers/docker-cloud
  printf '#!/bin/sh\n# docker-cloud under Python 2.7, from tests/tools/real-clients.sh install\nPYTHONPATH=%q exec %q %q "$@"\n' \
    "$(site)" "$PY2" "$RC_DIR/bin/docker-cloud" >"$target.new"
  chmod 0755 "$target.new" && mv -f "$target.new" "$target"
}

env_for() {  # URL USER KEY
  local url=${1%/}
  export PYTHONPATH=$(site) HOME=$RC_DIR/home
  mkdir -p "$HOME"
  export DOCKERCLOUD_REST_HOST=$url
  export DOCKERCLOUD_STREAM_HOST=${url/http/ws}
  export DOCKERCLOUD_USER=$2 DOCKERCLOUD_APIKEY=$3
  unset DOCKERCLOUD_AUTH DOCKERCLOUD_PASS
}

cmd=${1:-}; shift || true
case "$cmd" in
  install) install; wrapper
    echo "docker-cloud is in $RC_DIR/wrappers; to use it in this shell:"
    echo "    export PATH=\"$RC_DIR/wrappers:\$PATH\""
    echo "then point it at auditd with the DOCKERCLOUD_* lines 'auditd serve' printed." ;;
  cli) install; env_for "$1" "$2" "$3"; shift 3; exec "$PY2" "$RC_DIR/bin/docker-cloud" "$@" ;;
  sdk) install; env_for "$1" "$2" "$3"; exec "$PY2" -c "import dockercloud
$4" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
