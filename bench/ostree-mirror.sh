#!/usr/bin/env bash
# wharf mirroring an OSTree repository of >= 3,000 objects versus `ostree pull --mirror` from the same
# nginx-served upstream, then `ostree pull --mirror` from wharf versus from nginx serving the same
# repository:
#   bench/ostree-mirror.sh [WHARF_BINARY] [ROUNDS]   (default target/release/wharf, 3 rounds)
# Each round mirrors into a fresh wharf data directory and fresh client repositories; the line
# per round has the four wall times, the last line their medians and the two ratios.
# Needs ostree, nginx, python3 and bc. Run on an idle machine.
set -euo pipefail
BIN=$(realpath "${1:-target/release/wharf}")
ROUNDS=${2:-3}
D=$(mktemp -d ${TMPDIR:-/tmp}/wharf-ostree-bench.XXXXXX)
chmod 755 $D  # nginx workers run as another user when started by root
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$D"' EXIT
ostree --repo=$D/up init --mode=archive
mkdir -p $D/tree
for d in $(seq 30); do
  mkdir -p $D/tree/dir$d
  for f in $(seq 100); do printf 'file %s of dir %s\n%s\n' $f $d "$(head -c 200 /dev/urandom | base64)" > $D/tree/dir$d/f$f; done
done
ostree --repo=$D/up commit -b main -s bench --tree=dir=$D/tree >/dev/null
ostree --repo=$D/up summary -u
OBJECTS=$(find $D/up/objects -type f | wc -l)

# nginx as an operator would run it for an ostree repository: static files, keep-alive, sendfile.
PORT=$((20000 + RANDOM % 9000))
mkdir -p $D/nginx
cat > $D/nginx/nginx.conf <<EOT
daemon off;
worker_processes auto;
pid $D/nginx/nginx.pid;
error_log $D/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path $D/nginx/body;
  proxy_temp_path $D/nginx/proxy;
  fastcgi_temp_path $D/nginx/fastcgi;
  uwsgi_temp_path $D/nginx/uwsgi;
  scgi_temp_path $D/nginx/scgi;
  server { listen 127.0.0.1:$PORT; root $D/up; }
}
EOT
nginx -p $D/nginx -c $D/nginx/nginx.conf & PIDS+=($!)
for i in $(seq 50); do curl -sf http://127.0.0.1:$PORT/config >/dev/null && break; sleep 0.1; done
UP=http://127.0.0.1:$PORT
cat > $D/wharf.toml <<EOT
[[ostree.remotes]]
name = "up"
url = "$UP"
insecure_http = true
repository = "bench/os"
concurrency = 16
[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]
EOT
t() { local s=$(date +%s.%N); "$@" >/dev/null || { echo "failed: $*" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }
pull() { # pull NAME URL: a fresh archive repository, then `ostree pull --mirror`
  rm -rf $D/$1; ostree --repo=$D/$1 init --mode=archive
  ostree --repo=$D/$1 remote add --no-gpg-verify src $2
  # ostree ends each pull with syncfs(2), which also writes out whatever the steps before left
  # dirty: flush first, so every timed pull starts from the same clean page cache.
  sync
  t ostree --repo=$D/$1 pull --mirror src main
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
WS=(); OS=(); FS=(); NS=(); AS=()
for r in $(seq $ROUNDS); do
  # Only `wharf serve` creates a store: start it on a fresh data directory, then sync beside it.
  rm -rf $D/data
  $BIN serve --config $D/wharf.toml --listen 127.0.0.1:0 --data-dir $D/data > $D/out 2> $D/err & WPID=$!
  URL=
  for i in $(seq 100); do URL=$(sed -n 's#^wharf listening on \(http://.*\)$#\1#p' $D/out); [[ -n $URL ]] && break; sleep 0.1; done
  [[ -n $URL ]] || { echo "wharf serve did not start: $(cat $D/err)" >&2; exit 1; }
  sync
  W=$(t $BIN sync up --config $D/wharf.toml --data-dir $D/data)
  O=$(pull o1 $UP)
  F=$(pull o2 $URL/ostree/bench/os/)
  N=$(pull o3 $UP)
  # A second client of the same server (a fleet's second host): small objects now come from
  # wharf's memory, as nginx's come from the page cache both times.
  A=$(pull o4 $URL/ostree/bench/os/)
  kill $WPID; wait $WPID 2>/dev/null || true
  ostree --repo=$D/o2 fsck >/dev/null
  echo "round $r: objects=$OBJECTS wharf_sync=${W}s ostree_pull_mirror_from_nginx=${O}s pull_from_wharf=${F}s pull_from_nginx=${N}s second_pull_from_wharf=${A}s"
  WS+=($W); OS+=($O); FS+=($F); NS+=($N); AS+=($A)
done
MW=$(median "${WS[@]}"); MO=$(median "${OS[@]}"); MF=$(median "${FS[@]}"); MN=$(median "${NS[@]}"); MA=$(median "${AS[@]}")
echo "medians of $ROUNDS: wharf_sync=${MW}s ostree_pull_mirror=${MO}s (ratio $(echo "scale=2; $MW / $MO" | bc)) pull_from_wharf=${MF}s pull_from_nginx=${MN}s (ratio $(echo "scale=2; $MF / $MN" | bc)) second_pull_from_wharf=${MA}s (ratio $(echo "scale=2; $MA / $MN" | bc))"
