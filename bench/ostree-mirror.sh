#!/usr/bin/env bash
# wharf mirroring an OSTree repository of >= 3,000 objects versus `ostree pull --mirror` from the same
# python3-served upstream, then `ostree pull --mirror` from wharf versus from the upstream server:
#   bench/ostree-mirror.sh [WHARF_BINARY]   (default target/release/wharf; prints four wall times)
# Needs ostree, python3 and curl. Run on an idle machine; each figure is one run (repeat and take medians).
set -euo pipefail
BIN=${1:-target/release/wharf}
D=$(mktemp -d ${TMPDIR:-/tmp}/wharf-ostree-bench.XXXXXX)
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
PORT=$((20000 + RANDOM % 9000))
python3 -m http.server $PORT --bind 127.0.0.1 --directory $D/up >/dev/null 2>&1 & PIDS+=($!)
sleep 1
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
t() { local s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
W=$(t $BIN sync up --config $D/wharf.toml --data-dir $D/data)
ostree --repo=$D/o1 init --mode=archive
ostree --repo=$D/o1 remote add --no-gpg-verify up $UP
O=$(t ostree --repo=$D/o1 pull --mirror up main)
$BIN serve --config $D/wharf.toml --listen 127.0.0.1:0 --data-dir $D/data > $D/out 2> $D/err & PIDS+=($!)
for i in $(seq 100); do URL=$(sed -n 's#^wharf listening on \(http://.*\)$#\1#p' $D/out); [[ -n $URL ]] && break; sleep 0.1; done
ostree --repo=$D/o2 init --mode=archive
ostree --repo=$D/o2 remote add --no-gpg-verify wharf $URL/ostree/bench/os/
F=$(t ostree --repo=$D/o2 pull --mirror wharf main)
echo "objects=$OBJECTS wharf_sync=${W}s ostree_pull_mirror_from_upstream=${O}s ostree_pull_mirror_from_wharf=${F}s"
