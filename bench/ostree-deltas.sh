#!/usr/bin/env bash
# Bytes and requests of one `ostree pull` update (commit A -> B) through a static delta Wharf
# generated (`wharf ostree commit --generate-deltas`), through the delta `ostree static-delta
# generate` makes of the same trees (served by python3 -m http.server), and object by object
# from each (`--disable-static-deltas`):
#   bench/ostree-deltas.sh [WHARF_BINARY] [FILES]   (default target/release/wharf, 2000 files)
# Tree A: FILES text files in 20 directories; tree B: a tenth of them changed, 50 added, 20 removed.
# Prints one line per pull with ostree's own "… transferred" count and the bytes and requests of
# Wharf's access log (for the pulls from Wharf). Needs ostree, python3 and curl.
set -euo pipefail
BIN=${1:-target/release/wharf}
FILES=${2:-2000}
D=$(mktemp -d ${TMPDIR:-/tmp}/wharf-delta-bench.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$D"' EXIT
python3 - "$D" "$FILES" <<'EOT'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
words = open('/usr/share/dict/words').read().split() if os.path.exists('/usr/share/dict/words') else \
    [f'w{i}' for i in range(5000)]
def text(rng, k):
    return '\n'.join(' '.join(rng.choice(words) for _ in range(12)) for _ in range(k)) + '\n'
for version in ('a', 'b'):
    rng = random.Random(1)
    for i in range(n):
        body = text(rng, 20 + i % 80)
        if version == 'b' and i % 50 == 0:
            continue                                  # removed in B
        p = os.path.join(d, 'tree-' + version, f'dir{i % 20}', f'file{i}.txt')
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if version == 'b' and i % 10 == 1:
            body += text(random.Random(i), 5)         # changed in B
        open(p, 'w').write(body)
    if version == 'b':
        for i in range(50):
            p = os.path.join(d, 'tree-b', 'new', f'added{i}.txt')
            os.makedirs(os.path.dirname(p), exist_ok=True)
            open(p, 'w').write(text(random.Random(10_000 + i), 60))
EOT

# Wharf: two commits with deltas, served.
cat > $D/wharf.toml <<EOT
[log]
format = "json"
[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]
EOT
W() { $BIN "$@" --config $D/wharf.toml --data-dir $D/data; }
$BIN serve --config $D/wharf.toml --listen 127.0.0.1:0 --data-dir $D/data > $D/out 2> $D/err & PIDS+=($!)
for i in $(seq 100); do URL=$(sed -n 's#^wharf listening on \(http://.*\)$#\1#p' $D/out); [[ -n $URL ]] && break; sleep 0.1; done
W ostree commit --repo bench/os --branch main --tree $D/tree-a --generate-deltas | head -1 > $D/wa
W ostree commit --repo bench/os --branch main --tree $D/tree-b --generate-deltas > $D/wb-out
head -1 $D/wb-out > $D/wb
grep 'static delta' $D/wb-out || true

# ostree: the same two trees, its own delta, served.
ostree --repo=$D/up init --mode=archive
ostree --repo=$D/up commit -b main -s a --tree=dir=$D/tree-a > $D/oa
ostree --repo=$D/up commit -b main -s b --tree=dir=$D/tree-b > $D/ob
ostree --repo=$D/up static-delta generate main >$D/ostree-delta.log
ostree --repo=$D/up summary -u
PORT=$((20000 + RANDOM % 9000))
python3 -m http.server $PORT --bind 127.0.0.1 --directory $D/up >/dev/null 2>&1 & PIDS+=($!)
sleep 1

access() { grep -c '"message":"access"' $D/err || true; }
# pull NAME URL FROM FLAGS: a client at FROM pulls main with FLAGS.
pull() {
  local name=$1 url=$2 from=$3 flags=$4 c=$D/client-$1
  ostree --repo=$c init --mode=bare-user
  ostree --repo=$c remote add --no-gpg-verify r $url
  ostree --repo=$c pull --disable-static-deltas r main@$from >/dev/null
  local before=$(access)
  local line=$(ostree --repo=$c pull $flags r main | tr '\r' '\n' | grep -E 'transferred' | tail -1)
  ostree --repo=$c fsck >/dev/null
  sleep 1
  local log=""
  if [[ $url == $URL* ]]; then
    log=$(tail -n +$((before + 1)) $D/err | grep '"message":"access"' |
      python3 -c 'import json,sys; r=[json.loads(l) for l in sys.stdin]; print("wharf_log_bytes=%d requests=%d" % (sum(e["bytes"] for e in r), len(r)))')
  fi
  echo "$name: $line; $log"
}
pull wharf-delta "$URL/ostree/bench/os/" "$(cat $D/wa)" --require-static-deltas
pull wharf-objects "$URL/ostree/bench/os/" "$(cat $D/wa)" --disable-static-deltas
pull ostree-delta "http://127.0.0.1:$PORT" "$(cat $D/oa)" --require-static-deltas
pull ostree-objects "http://127.0.0.1:$PORT" "$(cat $D/oa)" --disable-static-deltas
