#!/usr/bin/env bash
# Cold pull through Wharf's pull-through cache against a direct pull from the upstream:
#   bench/pull-through.sh BINARY [ROUNDS] [LAYER_MIB]   (target: through Wharf ≤ 1.2× direct)
# The upstream is Debian's docker-registry on loopback; each round pushes a fresh image (three
# random layers of LAYER_MIB MiB, default 32) under a new name, pulls it once directly and once
# through Wharf (nothing cached: every byte is fetched from the upstream while it is streamed to
# the client and stored), each with `skopeo copy` into a dir:, and prints both times and the ratio;
# at the end the median ratio. Needs docker-registry, skopeo, curl, python3.
set -euo pipefail
BIN=$1; ROUNDS=${2:-5}; MIB=${3:-32}
D=$(mktemp -d ${TMPDIR:-/tmp}/wharf-pt.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$D"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

UP_PORT=$(free_port)
cat > $D/registry.yml <<EOT
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $D/upstream
http:
  addr: 127.0.0.1:$UP_PORT
EOT
docker-registry serve $D/registry.yml > $D/registry.log 2>&1 &
PIDS+=($!)
printf 'pw\n' > $D/pw
cat > $D/wharf.toml <<EOT
[auth]
admin_password_file = "$D/pw"
[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]
[[mirror.remotes]]
name = "up"
url = "http://127.0.0.1:$UP_PORT"
insecure_http = true
[mirror.remotes.pull_through]
repositories = ["bench/**"]
EOT
RUST_LOG=warn $BIN serve --config $D/wharf.toml --listen 127.0.0.1:0 --data-dir $D/data > $D/out 2> $D/err &
PIDS+=($!)
for i in $(seq 100); do URL=$(sed -n 's#^wharf listening on http://\(.*\)$#\1#p' $D/out); [[ -n $URL ]] && break; sleep 0.1; done
for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$UP_PORT/v2/" && break; sleep 0.1; done
PREFIX=127.0.0.1_$UP_PORT

# An OCI layout with one image of random layers (skopeo copies blobs; it does not untar them).
make_image() {
  local dir=$1 layers=() i
  mkdir -p $dir/blobs/sha256
  echo '{"imageLayoutVersion":"1.0.0"}' > $dir/oci-layout
  for i in 1 2 3; do
    head -c $((MIB * 1024 * 1024)) /dev/urandom > $dir/layer
    local h=$(sha256sum $dir/layer | cut -d' ' -f1)
    mv $dir/layer $dir/blobs/sha256/$h
    layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$h\",\"size\":$((MIB * 1024 * 1024))}")
  done
  local cfg='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
  local ch=$(printf %s "$cfg" | sha256sum | cut -d' ' -f1)
  printf %s "$cfg" > $dir/blobs/sha256/$ch
  local m="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$ch\",\"size\":${#cfg}},\"layers\":[$(IFS=,; echo "${layers[*]}")]}"
  local mh=$(printf %s "$m" | sha256sum | cut -d' ' -f1)
  printf %s "$m" > $dir/blobs/sha256/$mh
  echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$mh\",\"size\":${#m},\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}}]}" > $dir/index.json
}

RATIOS=()
for r in $(seq $ROUNDS); do
  rm -rf $D/img && make_image $D/img
  skopeo copy -q --dest-tls-verify=false oci:$D/img:v1 docker://127.0.0.1:$UP_PORT/bench/r$r:v1
  rm -rf $D/a $D/b
  T0=$(date +%s.%N)
  skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$UP_PORT/bench/r$r:v1 dir:$D/a
  T1=$(date +%s.%N)
  skopeo copy -q --src-tls-verify=false docker://$URL/$PREFIX/bench/r$r:v1 dir:$D/b
  T2=$(date +%s.%N)
  DIRECT=$(echo "$T1 - $T0" | bc -l); THROUGH=$(echo "$T2 - $T1" | bc -l)
  RATIO=$(echo "$THROUGH / $DIRECT" | bc -l)
  RATIOS+=($RATIO)
  printf 'round %d: direct %.2f s, through wharf (cold) %.2f s, ratio %.2f (load %s)\n' \
    $r $DIRECT $THROUGH $RATIO "$(cut -d' ' -f1 /proc/loadavg)"
  cmp -s $D/a/manifest.json $D/b/manifest.json || { echo "manifests differ" >&2; exit 1; }
done
printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median ratio %.2f over %d rounds (target <= 1.2)\n", a[int((NR+1)/2)], NR}'
