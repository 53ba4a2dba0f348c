#!/usr/bin/env bash
# bench/mirror.sh — mirroring many small images: `wharf sync` against `skopeo sync`, same run.
#
#   bench/mirror.sh         # as root is not needed; builds target/release/wharf if it is missing
#
# On 127.0.0.1 only, every loop bounded:
#   1. generates IMAGES small images locally (an OCI layout written here: a config and LAYERS
#      random layers of LAYER_KIB KiB each), spread over REPOS repositories, and pushes them with
#      `skopeo copy` (PARALLEL at a time) into Debian's docker-registry, the upstream;
#   2. ROUNDS rounds, each timing, in turn, both mirrors of every image into an empty destination:
#      - `skopeo sync --src yaml` (a YAML source naming the REPOS repositories, all tags) into a
#        fresh docker-registry (it names them `mirror/appN`, the last path component);
#      - `wharf sync` (one `[[mirror.sync]]` with the same repositories, all tags) into a fresh
#        wharf store, beside a running `wharf serve` on it;
#      wall time and peak RSS from /usr/bin/time; each destination's tag count is checked;
#   3. prints one table: best and median wall time of each, the ratio (target wharf ≤ 0.5×
#      skopeo), and the peak RSS of each.
#
# Knobs (environment): WHARF (binary), IMAGES (100), REPOS (10), LAYERS (2), LAYER_KIB (64),
# ROUNDS (3), PARALLEL (8), CONCURRENCY (wharf's `concurrency`, 8), KEEP=1 keeps the work dir.
# Progress goes to stderr, the table to stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHARF=${WHARF:-$ROOT/target/release/wharf}
IMAGES=${IMAGES:-100}
REPOS=${REPOS:-10}
LAYERS=${LAYERS:-2}
LAYER_KIB=${LAYER_KIB:-64}
ROUNDS=${ROUNDS:-3}
PARALLEL=${PARALLEL:-8}
CONCURRENCY=${CONCURRENCY:-8}
KEEP=${KEEP:-0}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'mirror.sh: %s\n' "$*" >&2; exit 1; }

for tool in docker-registry skopeo curl python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install docker-registry skopeo curl python3 time)"
done
if [[ ! -x $WHARF ]]; then
    log "building $WHARF"
    (cd "$ROOT" && cargo build --release -p wharf)
fi

W=$(mktemp -d /tmp/wharf-bench-mirror.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then log "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url what log
    local i
    for ((i = 0; i < 300; i++)); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    cat "$3" >&2 || true
    die "$2 did not come up"
}

# start_registry NAME PORT: a docker-registry on an empty directory; its pid in $W/NAME.pid
start_registry() {
    local name=$1 port=$2
    rm -rf "$W/$name-data"
    mkdir -p "$W/$name-data"
    cat >"$W/$name.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/$name-data
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$W/$name.yml" </dev/null >"$W/$name.out" 2>"$W/$name.err" &
    echo $! >"$W/$name.pid"
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/v2/" "docker-registry ($name)" "$W/$name.err"
}

stop() { # NAME
    local pid
    pid=$(cat "$W/$1.pid")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# start_wharf NAME CONFIG: a wharf serve on an empty data dir
start_wharf() {
    local name=$1 config=$2 i line=
    rm -rf "$W/$name-data"
    RUST_LOG=warn "$WHARF" serve --config "$config" --listen 127.0.0.1:0 --data-dir "$W/$name-data" \
        </dev/null >"$W/$name.out" 2>"$W/$name.err" &
    echo $! >"$W/$name.pid"
    PIDS+=($!)
    for ((i = 0; i < 300; i++)); do
        line=$(grep -m1 -o 'wharf listening on http://127\.0\.0\.1:[0-9]*' "$W/$name.out" 2>/dev/null || true)
        [[ -n $line ]] && break
        sleep 0.1
    done
    [[ -n $line ]] || { cat "$W/$name.err" >&2; die "wharf ($name) did not start"; }
    echo "${line##*:}" >"$W/$name.port"
}

# ---------------------------------------------------------------------------------------------
# 1. The upstream and its images.
# ---------------------------------------------------------------------------------------------
UP_PORT=$(free_port)
start_registry upstream "$UP_PORT"
UP=127.0.0.1:$UP_PORT

log "writing $IMAGES images ($LAYERS layers of $LAYER_KIB KiB each) into an OCI layout"
python3 - "$W/layout" "$IMAGES" "$LAYERS" "$LAYER_KIB" <<'EOF'
import hashlib, json, os, sys
root, images, layers, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(f"{root}/blobs/sha256/{d}", "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{d}", "size": len(data)}
index = []
for i in range(images):
    ls = [dict(mediaType="application/vnd.oci.image.layer.v1.tar", **blob(os.urandom(kib * 1024))) for _ in range(layers)]
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in ls]}, "created": f"2026-01-01T00:00:{i % 60:02d}Z"}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **blob(config)), "layers": ls}).encode()
    m = blob(manifest)
    index.append(dict(mediaType="application/vnd.oci.image.manifest.v1+json", annotations={"org.opencontainers.image.ref.name": f"img{i}"}, **m))
json.dump({"schemaVersion": 2, "manifests": index}, open(f"{root}/index.json", "w"))
open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF

log "pushing them into the upstream ($UP), $PARALLEL at a time"
seq 0 $((IMAGES - 1)) | xargs -P "$PARALLEL" -I{} sh -c \
    'skopeo copy -q --dest-tls-verify=false "oci:$0:img$1" "docker://$2/bench/app$(($1 % $3)):t$1"' \
    "$W/layout" {} "$UP" "$REPOS"

REPO_LIST=$(for ((r = 0; r < REPOS; r++)); do printf '"bench/app%d",' "$r"; done)
REPO_LIST="[${REPO_LIST%,}]"
{
    echo "$UP:"
    echo "  tls-verify: false"
    echo "  images:"
    for ((r = 0; r < REPOS; r++)); do echo "    bench/app$r: []"; done
} >"$W/skopeo-sync.yml"
cat >"$W/wharf.toml" <<EOF
[gc]
interval_secs = 0
[[mirror.remotes]]
name = "up"
url = "http://$UP"
insecure_http = true
concurrency = $CONCURRENCY
prefix = "mirror"
[[mirror.sync]]
remote = "up"
repositories = $REPO_LIST
EOF

# ---------------------------------------------------------------------------------------------
# 2. Rounds.
# ---------------------------------------------------------------------------------------------
DEST_PORT=$(free_port)
: >"$W/times"
for ((round = 1; round <= ROUNDS; round++)); do
    start_registry dest "$DEST_PORT"
    log "round $round: skopeo sync"
    /usr/bin/time -f '%e %M' -o "$W/t" skopeo sync --src yaml --dest docker \
        --dest-tls-verify=false "$W/skopeo-sync.yml" "127.0.0.1:$DEST_PORT/mirror" >"$W/skopeo.out" 2>&1 ||
        { cat "$W/skopeo.out" >&2; die "skopeo sync failed"; }
    read -r secs rss <"$W/t"
    tags=0
    for ((r = 0; r < REPOS; r++)); do
        n=$(curl -s "http://127.0.0.1:$DEST_PORT/v2/mirror/app$r/tags/list" | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("tags") or []))')
        tags=$((tags + n))
    done
    [[ $tags == "$IMAGES" ]] || die "skopeo sync mirrored $tags tags, not $IMAGES"
    echo "skopeo $secs $rss" >>"$W/times"
    stop dest

    start_wharf wharf "$W/wharf.toml"
    log "round $round: wharf sync"
    /usr/bin/time -f '%e %M' -o "$W/t" "$WHARF" sync up --config "$W/wharf.toml" \
        --data-dir "$W/wharf-data" >"$W/wharf-sync.out" 2>&1 ||
        { tail -20 "$W/wharf-sync.out" >&2; die "wharf sync failed"; }
    read -r secs rss <"$W/t"
    summary=$(tail -1 "$W/wharf-sync.out")
    log "  $summary"
    [[ $summary == *"$IMAGES tags copied, 0 tags unchanged, 0 failed"* ]] || die "wharf sync: $summary"
    echo "wharf $secs $rss" >>"$W/times"
    stop wharf
done

# ---------------------------------------------------------------------------------------------
# 3. The table.
# ---------------------------------------------------------------------------------------------
python3 - "$W/times" "$IMAGES" "$LAYERS" "$LAYER_KIB" "$CONCURRENCY" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
images, layers, kib, conc = sys.argv[2:6]
def pick(name):
    t = [float(r[1]) for r in rows if r[0] == name]
    m = [int(r[2]) for r in rows if r[0] == name]
    return min(t), statistics.median(t), max(m)
sk, wh = pick("skopeo"), pick("wharf")
print(f"mirroring {images} images ({layers} layers x {kib} KiB + config) from docker-registry on loopback, {len(rows)//2} rounds")
print(f"| tool | best s | median s | peak RSS MiB |")
print(f"|---|---|---|---|")
print(f"| skopeo sync | {sk[0]:.2f} | {sk[1]:.2f} | {sk[2]/1024:.1f} |")
print(f"| wharf sync (concurrency {conc}) | {wh[0]:.2f} | {wh[1]:.2f} | {wh[2]/1024:.1f} |")
ratio = wh[1] / sk[1]
print(f"ratio wharf/skopeo (median): {ratio:.2f}x  target <= 0.5x: {'PASS' if ratio <= 0.5 else 'MISS'}")
EOF
