#!/usr/bin/env bash
# bench/oci.sh — Wharf against Debian's docker-registry (distribution 2.8) and nginx, side by side.
#
#   bench/oci.sh            # as root; builds target/release/wharf if it is missing
#
# Measures, on 127.0.0.1 only, with every loop bounded:
#   1. blob GET throughput of a 1 GiB random blob (curl, best of 5 rounds; nginx serves the same
#      file);
#   2. manifest GET requests/s (wrk -t2 -c64 -d10s, best of 2 rounds; nginx serves the same
#      manifest bytes);
#   3. monolithic push throughput of the 1 GiB blob (best of 3, a fresh empty server per push);
#   4. `skopeo copy` of a 20-layer image from an OCI layout (hyperfine, 3 runs, each against a
#      server restarted on an empty data dir by --prepare, so no layer is deduplicated);
#   5. peak RSS (VmHWM) of each server after the blob GETs (servers restarted after the setup
#      push, so the figure is what serving cost, not what pushing cost);
#   6. peak RSS under 1,000 concurrent clients alternating a manifest GET and a 4 MiB blob GET
#      (wrk -c1000 with a Lua script, MEM_SECS seconds, fresh processes), wharf beside
#      docker-registry;
#   7. monolithic push of the blob to wharf over HTTPS, once over HTTP/2 and once over HTTP/1.1
#      (curl --http2 / --http1.1 against the same TLS listener, a fresh server per push).
# wharf runs with an admin (random password) and an anonymous pull grant: reads are anonymous
# like the unauthenticated peers', writes use Basic auth; manifest GETs are also measured with a
# bearer token from wharf's /token. docs/benchmarks.md has the method, results and analysis.
# Rounds visit the servers in turn, so load from elsewhere on the machine is spread over all of
# them. Then prints one table with the issue's targets marked PASS or MISS, and the servers' CPU
# (from /proc/PID/stat) per GiB, per request and per push, to show where time goes.
#
# Knobs (environment): WHARF (binary), BLOB_MIB (1024), GET_RUNS (5), PUSH_RUNS (3),
# WRK_SECS (10), WRK_ROUNDS (2), SKOPEO_RUNS (3), LAYERS (20), LAYER_MIB (5), MEM_CONNS (1000),
# MEM_SECS (60), KEEP=1 keeps the work dir.
# Progress goes to stderr, the table to stdout. Debian packages are installed only if missing.
#
# Internal: `oci.sh __restart KIND WORKDIR` is what hyperfine's --prepare calls.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/bench/oci.sh"
WHARF=${WHARF:-$ROOT/target/release/wharf}
BLOB_MIB=${BLOB_MIB:-1024}
GET_RUNS=${GET_RUNS:-5}
PUSH_RUNS=${PUSH_RUNS:-3}
WRK_SECS=${WRK_SECS:-10}
WRK_ROUNDS=${WRK_ROUNDS:-2}
SKOPEO_RUNS=${SKOPEO_RUNS:-3}
LAYERS=${LAYERS:-20}
LAYER_MIB=${LAYER_MIB:-5}
MEM_CONNS=${MEM_CONNS:-1000}
MEM_SECS=${MEM_SECS:-60}
KEEP=${KEEP:-0}
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
CLK_TCK=$(getconf CLK_TCK)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'oci.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes. Every server's pid is kept in $W/<name>.pid; cleanup and restarts act on those ids
# only, after checking that the id still names the program that was started.
# ---------------------------------------------------------------------------------------------

alive() { # pid: running and not a zombie
    local st
    # Not $(<file): under errexit bash exits outright when that redirection fails.
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

owns() { # pid exe-substring: the pid is alive and its command line mentions exe-substring
    alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

stop_pid() { # pid exe-substring
    local pid=$1 i
    owns "$pid" "$2" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || return 0; sleep 0.1; done
}

stop_named() { # name
    local f="$W/$1.pid"
    [[ -f $f ]] || return 0
    stop_pid "$(cat "$f")" "$(cat "$W/$1.exe")"
    rm -f "$f"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url what log: bounded wait (30 s) for any HTTP answer
    local i
    for ((i = 0; i < 300; i++)); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    cat "$3" >&2 || true
    die "$2 did not come up"
}

# start_wharf NAME DATADIR PORT [CONFIG] (PORT 0 picks one); sets $W/NAME.port and NAME.scheme
start_wharf() {
    local name=$1 dir=$2 port=$3 config=${4:-$W/wharf.toml} i line=
    mkdir -p "$dir"
    # Removed first: the redirect below may truncate it only after the wait loop has read the
    # previous run's ready line (same port on a restart).
    rm -f "$W/$name.out"
    RUST_LOG=warn "$WHARF" serve --config "$config" --listen "127.0.0.1:$port" \
        --data-dir "$dir" </dev/null >"$W/$name.out" 2>"$W/$name.err" &
    echo $! >"$W/$name.pid"
    echo "$WHARF" >"$W/$name.exe"
    touch "$W/$name.auth" # writes to this server carry the admin's credentials
    for ((i = 0; i < 300; i++)); do
        line=$(grep -m1 -o 'wharf listening on https\?://127\.0\.0\.1:[0-9]*' "$W/$name.out" 2>/dev/null || true)
        [[ -n $line ]] && break
        alive "$(cat "$W/$name.pid")" || break
        sleep 0.1
    done
    [[ -n $line ]] || { cat "$W/$name.err" >&2; die "wharf ($name) did not start"; }
    echo "${line##*:}" >"$W/$name.port"
    line=${line#wharf listening on }
    echo "${line%%://*}" >"$W/$name.scheme"
}

# start_registry NAME DATADIR PORT
start_registry() {
    local name=$1 dir=$2 port=$3
    mkdir -p "$dir"
    cat >"$W/$name.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
    rm -f "$W/$name.auth"
    docker-registry serve "$W/$name.yml" </dev/null >"$W/$name.out" 2>"$W/$name.err" &
    echo $! >"$W/$name.pid"
    echo "docker-registry" >"$W/$name.exe"
    echo "$port" >"$W/$name.port"
    rm -f "$W/$name.scheme"
    wait_http "http://127.0.0.1:$port/v2/" "docker-registry ($name)" "$W/$name.err"
}

# start_nginx NAME ROOTDIR PORT
start_nginx() {
    local name=$1 docroot=$2 port=$3 prefix="$W/$1"
    mkdir -p "$prefix/logs" "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<EOF
worker_processes 2;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log error;
events { worker_connections 1024; }
http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $docroot;
        location /v2/bench/manifests/ { default_type $MANIFEST_TYPE; }
    }
}
EOF
    nginx -c "$prefix/nginx.conf" -p "$prefix" -g 'daemon off;' </dev/null \
        >"$W/$name.out" 2>"$W/$name.err" &
    echo $! >"$W/$name.pid"
    echo "nginx" >"$W/$name.exe"
    echo "$port" >"$W/$name.port"
    wait_http "http://127.0.0.1:$port/" "nginx ($name)" "$W/$name.err"
}

# Restart a skopeo-phase server on its port with an empty data dir (hyperfine --prepare).
restart() { # kind
    stop_named "sk-$1"
    rm -rf "$W/sk-$1-data"
    case $1 in
    wharf) start_wharf sk-wharf "$W/sk-wharf-data" "$(cat "$W/sk-wharf.port")" ;;
    registry) start_registry sk-registry "$W/sk-registry-data" "$(cat "$W/sk-registry.port")" ;;
    *) die "unknown kind $1" ;;
    esac
}

if [[ ${1:-} == __restart ]]; then
    W=$3
    restart "$2" >/dev/null
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------

pids_of() { # name: the server's pid, and for nginx its workers too
    local pid
    pid=$(cat "$W/$1.pid")
    echo "$pid"
    ps -o pid= --ppid "$pid" 2>/dev/null || true
}

cpu_ticks() { # name: user+system clock ticks of the server's processes (all threads)
    local total=0 pid st f
    for pid in $(pids_of "$1"); do
        st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        st=${st##*) }
        read -ra f <<<"$st"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

hwm_mib() { # name: largest VmHWM among the server's processes, MiB
    local best=0 pid kb
    for pid in $(pids_of "$1"); do
        kb=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        ((kb > best)) && best=$kb
    done
    awk -v k="$best" 'BEGIN{printf "%.1f", k/1024}'
}

url() { echo "$(cat "$W/$1.scheme" 2>/dev/null || echo http)://127.0.0.1:$(cat "$W/$1.port")"; }

# curl options that authenticate to server NAME: the admin's Basic credentials for wharf (read
# from a curl config file, so the password is not on a command line), none for the peers.
auth_of() {
    [[ -f $W/$1.auth ]] && printf '%s\n' -K "$W/wharf.curlrc"
    [[ $(cat "$W/$1.scheme" 2>/dev/null) == https ]] && printf '%s\n' --cacert "$W/tls-cert.pem"
    return 0
}

# push_tls NAME FILE DIGEST PROTO (--http2 or --http1.1): one monolithic POST ?digest= over
# HTTPS; prints "seconds http_version"
push_tls() {
    local out auth
    mapfile -t auth < <(auth_of "$1")
    out=$(curl -s -o /dev/null -w '%{http_code} %{time_total} %{http_version}' -X POST -T "$2" \
        --request-target "/v2/bench/blobs/uploads/?digest=$3" "$4" \
        -H 'Content-Type: application/octet-stream' -H 'Expect:' "${auth[@]}" "$(url "$1")/")
    [[ ${out%% *} == 201 ]] || die "HTTPS POST ($4) of $2 to $1 answered ${out%% *}"
    echo "${out#* }"
}

# upload METHOD NAME TARGET FILE: streams FILE as the body (with Content-Length) to TARGET, a
# path and query on server NAME; prints "status seconds". Not --data-binary @FILE: curl reads that into
# memory and refuses a 1 GiB file. Not a plain -T URL: curl appends the file's name to a URL
# path that ends in "/". Content-Type matters: distribution's Go server parses a PUT body sent
# as application/x-www-form-urlencoded (curl's default) as a form and loses its first 10 MiB.
upload() {
    local auth
    mapfile -t auth < <(auth_of "$2")
    curl -s -o /dev/null -w '%{http_code} %{time_total}' -X "$1" -T "$4" --request-target "$3" \
        -H 'Content-Type: application/octet-stream' -H 'Expect:' "${auth[@]}" "$(url "$2")/"
}

# push_post NAME REPO FILE DIGEST: one monolithic POST ?digest=; prints seconds
push_post() {
    local out
    out=$(upload POST "$1" "/v2/$2/blobs/uploads/?digest=$4" "$3")
    [[ ${out%% *} == 201 ]] || die "monolithic POST of $3 to $1 answered ${out%% *}"
    echo "${out#* }"
}

# push_post_put NAME REPO FILE DIGEST: POST a session, then one PUT ?digest= with the whole
# body (the spec's two-request monolithic upload); prints the seconds of both requests
push_post_put() {
    local hdrs loc out t1 sep auth
    mapfile -t auth < <(auth_of "$1")
    hdrs=$(curl -s -D - -o /dev/null -w 'TIME %{time_total}\n' -X POST "${auth[@]}" \
        "$(url "$1")/v2/$2/blobs/uploads/")
    loc=$(tr -d '\r' <<<"$hdrs" | awk 'tolower($1)=="location:"{print $2}')
    t1=$(awk '$1=="TIME"{print $2}' <<<"$hdrs")
    [[ -n $loc ]] || die "POST to $1 opened no upload session"
    [[ $loc == http://* ]] && loc="/${loc#http://*/}" # absolute (distribution) or a path (wharf)
    sep='&'
    [[ $loc == *\?* ]] || sep='?'
    out=$(upload PUT "$1" "$loc${sep}digest=$4" "$3")
    [[ ${out%% *} == 201 ]] || die "PUT of $3 to $1 answered ${out%% *}"
    awk -v a="$t1" -v b="${out#* }" 'BEGIN{printf "%.6f", a+b}'
}

put_manifest() { # NAME REPO TAG FILE
    local code auth
    mapfile -t auth < <(auth_of "$1")
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MANIFEST_TYPE" \
        "${auth[@]}" --data-binary "@$4" "$(url "$1")/v2/$2/manifests/$3")
    [[ $code == 201 ]] || die "manifest PUT to $1 answered $code"
}

max() { awk -v a="$1" -v b="$2" 'BEGIN{print (a+0>b+0)?a:b}'; } # prints the argument as given
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (a+0<b+0)?a:b}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
verdict() { # value op threshold
    awk -v v="$1" -v t="$3" -v op="$2" \
        'BEGIN{ ok = (op == ">=") ? (v >= t) : (v < t); print ok ? "PASS" : "MISS" }'
}
mbps() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; } # bytes/s -> MB/s
secs() { awk -v t="$1" -v c="$CLK_TCK" 'BEGIN{printf "%.2f", t/c}'; }

# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------

[[ $(id -u) -eq 0 ]] || die "run as root (nginx and apt-get need it)"

need=()
for pair in docker-registry:docker-registry nginx:nginx-light wrk:wrk hyperfine:hyperfine \
    skopeo:skopeo curl:curl python3:python3 ps:procps openssl:openssl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if [[ ! -x $WHARF ]]; then
    log "building $WHARF (cargo build --release -p wharf)"
    (cd "$ROOT" && cargo build --release -p wharf) >&2
fi
[[ -x $WHARF ]] || die "no wharf binary at $WHARF"

W=$(mktemp -d "${TMPDIR:-/tmp}/wharf-bench.XXXXXX")
chmod 755 "$W" # nginx workers run as nobody and read the docroot below it

# wharf requires credentials for writes: every wharf started here gets this configuration, so
# its first start creates "admin" with a random password; reads are allowed anonymously, as the
# peers (which run without authentication) allow them.
ADMIN_PW=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
(
    umask 077
    printf '%s' "$ADMIN_PW" >"$W/admin.pw"
    printf 'user = "admin:%s"\n' "$ADMIN_PW" >"$W/wharf.curlrc"
)
cat >"$W/wharf.toml" <<EOF
[auth]
admin_password_file = "$W/admin.pw"

[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]
EOF

# 1,000 client connections (and as many server-side ones) need more than the usual 1,024 fds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# A self-signed certificate for the HTTPS pushes; wharf-tls.toml is wharf.toml plus TLS.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
    -keyout "$W/tls-key.pem" -out "$W/tls-cert.pem" 2>/dev/null
cat "$W/wharf.toml" - >"$W/wharf-tls.toml" <<EOF

[[tls.certificates]]
cert = "$W/tls-cert.pem"
key = "$W/tls-key.pem"
hostnames = ["localhost"]
EOF

cleanup() {
    local f
    set +e
    for f in "$W"/*.pid; do
        [[ -f $f ]] || continue
        stop_named "$(basename "$f" .pid)"
    done
    if [[ $KEEP == 1 ]]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "oci.sh: interrupted by a signal" >&2; exit 130' INT TERM HUP
trap 'echo "oci.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Data: the big blob, a small image for manifest GETs, a 20-layer OCI layout for skopeo.
# ---------------------------------------------------------------------------------------------

cat >"$W/mkimage.py" <<'PY'
"""small DIR: config + one small gzip'd tar layer in DIR/blobs/<hex>, DIR/manifest.json and
DIR/blobs.txt ("sha256:<hex> <path>" per blob). layout DIR N MIB: an OCI image layout tagged
"latest" with N gzip'd tar layers, each one file of MIB MiB of random bytes."""
import gzip, hashlib, io, json, os, sys, tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def layer(size, name):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    raw = buf.getvalue()
    # Level 1: random bytes do not shrink, a higher level would only cost time.
    return sha(raw), gzip.compress(raw, compresslevel=1, mtime=0)

def image(layers):
    compact = dict(separators=(",", ":"))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}},
                        **compact).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(gz), "size": len(gz)} for _, gz in layers],
    }, **compact).encode()
    return config, manifest

def write(path, data):
    with open(path, "wb") as f:
        f.write(data)

if sys.argv[1] == "small":
    out = sys.argv[2]
    os.makedirs(os.path.join(out, "blobs"), exist_ok=True)
    layers = [layer(4096, "hello.bin")]
    config, manifest = image(layers)
    lines = []
    for data in [config, layers[0][1]]:
        path = os.path.join(out, "blobs", sha(data)[7:])
        write(path, data)
        lines.append(f"{sha(data)} {path}\n")
    write(os.path.join(out, "blobs.txt"), "".join(lines).encode())
    write(os.path.join(out, "manifest.json"), manifest)
else:
    out, count, mib = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    layers = [layer(mib << 20, f"layer{i:02d}.bin") for i in range(count)]
    config, manifest = image(layers)
    for data in [gz for _, gz in layers] + [config, manifest]:
        write(os.path.join(blobs, sha(data)[7:]), data)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": MANIFEST, "digest": sha(manifest),
                            "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    write(os.path.join(out, "index.json"), json.dumps(index).encode())
    write(os.path.join(out, "oci-layout"), b'{"imageLayoutVersion":"1.0.0"}')
PY

log "writing a ${BLOB_MIB} MiB random blob"
BLOB="$W/blob.bin"
head -c $((BLOB_MIB * 1048576)) /dev/urandom >"$BLOB"
BLOB_BYTES=$(stat -c %s "$BLOB")
BLOB_DIGEST=sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)
MEM_BLOB="$W/blob4m.bin"
head -c $((4 * 1048576)) /dev/urandom >"$MEM_BLOB"
MEM_DIGEST=sha256:$(sha256sum "$MEM_BLOB" | cut -d' ' -f1)
python3 "$W/mkimage.py" small "$W/small"
log "writing a ${LAYERS}-layer OCI layout (${LAYER_MIB} MiB per layer)"
python3 "$W/mkimage.py" layout "$W/layout" "$LAYERS" "$LAYER_MIB"

# nginx's docroot: the same blob file (a hard link) and the same manifest bytes.
DOCROOT="$W/docroot"
mkdir -p "$DOCROOT/v2/bench/blobs" "$DOCROOT/v2/bench/manifests"
ln "$BLOB" "$DOCROOT/v2/bench/blobs/$BLOB_DIGEST"
cp "$W/small/manifest.json" "$DOCROOT/v2/bench/manifests/latest"
chmod -R a+rX "$DOCROOT"
chmod a+r "$BLOB"

# ---------------------------------------------------------------------------------------------
# Serving phase: push the blob and the small image, restart, then GETs and wrk.
# ---------------------------------------------------------------------------------------------

log "starting wharf, docker-registry and nginx"
start_wharf wharf "$W/wharf-data" 0
start_registry registry "$W/registry-data" "$(free_port)"
start_nginx nginx "$DOCROOT" "$(free_port)"

log "pushing the blob and a one-layer image to both registries"
push_post wharf bench "$BLOB" "$BLOB_DIGEST" >/dev/null
# distribution 2.8 ignores ?digest= on POST (it answers 202 and drops the body), so it gets
# the spec's other monolithic form: POST a session, PUT the whole body.
push_post_put registry bench "$BLOB" "$BLOB_DIGEST" >/dev/null
while read -r d path; do
    push_post wharf bench "$path" "$d" >/dev/null
    push_post_put registry bench "$path" "$d" >/dev/null
done <"$W/small/blobs.txt"
push_post wharf bench "$MEM_BLOB" "$MEM_DIGEST" >/dev/null
push_post_put registry bench "$MEM_BLOB" "$MEM_DIGEST" >/dev/null
put_manifest wharf bench latest "$W/small/manifest.json"
put_manifest registry bench latest "$W/small/manifest.json"

# Fresh processes, so VmHWM measures serving and not the push above.
for s in wharf registry; do
    port=$(cat "$W/$s.port")
    stop_named "$s"
    sync
    if [[ $s == wharf ]]; then start_wharf wharf "$W/wharf-data" "$port"; else
        start_registry registry "$W/registry-data" "$port"; fi
done

for s in wharf registry nginx; do
    body=$(curl -s -H "Accept: $MANIFEST_TYPE" "$(url "$s")/v2/bench/manifests/latest")
    [[ $body == "$(cat "$W/small/manifest.json")" ]] || die "$s serves a different manifest"
done

declare -A GET_BEST GET_TICKS GET_CPU RSS RPS LAT_AVG LAT_P99 WRK_CPU WRK_TICKS WRK_REQS WRK_ERR
# Rounds go wharf, registry, nginx in turn, so a burst of load from elsewhere on the machine
# does not fall on one server only; each figure is the best round, CPU is summed over rounds.
SERVERS=(wharf registry nginx)
for s in "${SERVERS[@]}"; do GET_BEST[$s]=0 GET_TICKS[$s]=0 RPS[$s]=0 WRK_TICKS[$s]=0 WRK_REQS[$s]=0; done
log "blob GET: $GET_RUNS rounds"
for ((i = 0; i < GET_RUNS; i++)); do
    for s in "${SERVERS[@]}"; do
        c0=$(cpu_ticks "$s")
        out=$(curl -s -o /dev/null --max-time 300 \
            -w '%{http_code} %{size_download} %{speed_download}' \
            "$(url "$s")/v2/bench/blobs/$BLOB_DIGEST")
        GET_TICKS[$s]=$((GET_TICKS[$s] + $(cpu_ticks "$s") - c0))
        read -r code size speed <<<"$out"
        [[ $code == 200 && $size == "$BLOB_BYTES" ]] || die "$s blob GET: $code, $size bytes"
        log "  round $((i + 1)) $s: $(mbps "$speed") MB/s"
        GET_BEST[$s]=$(max "${GET_BEST[$s]}" "$speed")
    done
done
for s in "${SERVERS[@]}"; do
    # CPU seconds per GiB sent, and the peak RSS so far (the processes started after the push).
    GET_CPU[$s]=$(awk -v t="${GET_TICKS[$s]}" -v c="$CLK_TCK" -v n="$GET_RUNS" -v b="$BLOB_BYTES" \
        'BEGIN{printf "%.2f", t/c/(n*b/1073741824)}')
    RSS[$s]=$(hwm_mib "$s")
done

# wharf is read twice: anonymously (the pull grant, as the peers are read) and with a registry
# token from its /token endpoint (the Docker token flow's pull), to show what authorization costs.
TOKEN=$(curl -s -K "$W/wharf.curlrc" "$(url wharf)/token?service=wharf&scope=repository:bench:pull" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("token") or d["access_token"])') ||
    die "wharf issued no registry token"
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H "Accept: $MANIFEST_TYPE" "$(url wharf)/v2/bench/manifests/latest") == 200 ]] ||
    die "wharf refused its own token"
TARGETS=(wharf wharf-token registry nginx)
RPS[wharf-token]=0 WRK_TICKS[wharf-token]=0 WRK_REQS[wharf-token]=0
log "manifest GET: wrk -t2 -c64 -d${WRK_SECS}s, $WRK_ROUNDS rounds"
for ((i = 0; i < WRK_ROUNDS; i++)); do
    for s in "${TARGETS[@]}"; do
        srv=${s%-token}
        hdr=(-H "Accept: $MANIFEST_TYPE")
        [[ $s == *-token ]] && hdr+=(-H "Authorization: Bearer $TOKEN")
        c0=$(cpu_ticks "$srv")
        out=$(timeout $((WRK_SECS + 30)) wrk -t2 -c64 -d"${WRK_SECS}s" --latency "${hdr[@]}" \
            "$(url "$srv")/v2/bench/manifests/latest")
        WRK_TICKS[$s]=$((WRK_TICKS[$s] + $(cpu_ticks "$srv") - c0))
        printf '%s\n' "$out" >"$W/wrk-$s-$i.txt"
        rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
        WRK_REQS[$s]=$((WRK_REQS[$s] + $(awk '/ requests in /{print $1}' <<<"$out")))
        err=$(awk '/Non-2xx|Socket errors/{printf "%s; ", $0}' <<<"$out")
        WRK_ERR[$s]+=$err
        log "  round $((i + 1)) $s: $rps req/s, latency $(awk '$1=="Latency"{print $2; exit}' <<<"$out") avg $(awk '$1=="99%"{print $2}' <<<"$out") p99 $err"
        if [[ $(max "${RPS[$s]}" "$rps") == "$rps" ]]; then
            RPS[$s]=$rps
            LAT_AVG[$s]=$(awk '$1=="Latency"{print $2; exit}' <<<"$out")
            LAT_P99[$s]=$(awk '$1=="99%"{print $2}' <<<"$out")
        fi
    done
done
for s in "${TARGETS[@]}"; do
    # Server CPU microseconds per request served, over all rounds.
    WRK_CPU[$s]=$(awk -v t="${WRK_TICKS[$s]}" -v c="$CLK_TCK" -v n="${WRK_REQS[$s]}" \
        'BEGIN{ if (n > 0) printf "%.0f", t/c/n*1e6; else print "n/a" }')
done
# Memory under many clients: fresh processes again, so VmHWM is this load's peak alone. Each wrk
# connection alternates a manifest GET and a 4 MiB blob GET for MEM_SECS seconds.
cat >"$W/alternate.lua" <<EOF
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", "/v2/bench/manifests/latest", { ["Accept"] = "$MANIFEST_TYPE" })
  end
  return wrk.format("GET", "/v2/bench/blobs/$MEM_DIGEST")
end
EOF
declare -A MEM_RSS MEM_RPS MEM_ERR
log "memory: wrk -t2 -c$MEM_CONNS -d${MEM_SECS}s alternating a manifest and a 4 MiB blob"
for s in wharf registry; do
    port=$(cat "$W/$s.port")
    stop_named "$s"
    if [[ $s == wharf ]]; then start_wharf wharf "$W/wharf-data" "$port"; else
        start_registry registry "$W/registry-data" "$port"; fi
    out=$(timeout $((MEM_SECS + 60)) wrk -t2 -c"$MEM_CONNS" -d"${MEM_SECS}s" --timeout 30s \
        -s "$W/alternate.lua" "$(url "$s")/")
    printf '%s\n' "$out" >"$W/wrk-mem-$s.txt"
    MEM_RPS[$s]=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
    MEM_ERR[$s]=$(awk '/Non-2xx|Socket errors/{printf "%s; ", $0}' <<<"$out")
    MEM_RSS[$s]=$(hwm_mib "$s")
    log "  $s: peak RSS ${MEM_RSS[$s]} MiB, ${MEM_RPS[$s]} req/s ${MEM_ERR[$s]}"
done

stop_named wharf
stop_named registry
stop_named nginx
rm -rf "$W/wharf-data" "$W/registry-data"

# ---------------------------------------------------------------------------------------------
# skopeo phase, before the push phase: that one writes and deletes gigabytes, and the disk's
# after-effects would fall on whichever server hyperfine measures first.
# ---------------------------------------------------------------------------------------------

log "skopeo copy of a ${LAYERS}-layer image: hyperfine --runs $SKOPEO_RUNS"
start_wharf sk-wharf "$W/sk-wharf-data" 0
start_registry sk-registry "$W/sk-registry-data" "$(free_port)"
(
    umask 077
    printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}\n' "$(cat "$W/sk-wharf.port")" \
        "$(printf 'admin:%s' "$ADMIN_PW" | base64 -w0)" >"$W/skopeo-auth.json"
)
sync
SRC="oci:$W/layout:latest"
hyperfine --runs "$SKOPEO_RUNS" --warmup 1 --style basic --export-json "$W/skopeo.json" \
    --prepare "$SELF __restart wharf $W" --command-name wharf \
    "skopeo copy -q --dest-tls-verify=false --dest-authfile $W/skopeo-auth.json $SRC docker://127.0.0.1:$(cat "$W/sk-wharf.port")/bench/img:latest" \
    --prepare "$SELF __restart registry $W" --command-name docker-registry \
    "skopeo copy -q --dest-tls-verify=false $SRC docker://127.0.0.1:$(cat "$W/sk-registry.port")/bench/img:latest" \
    >"$W/hyperfine.txt" 2>&1 || { cat "$W/hyperfine.txt" >&2; die "hyperfine failed"; }
for s in sk-wharf sk-registry; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MANIFEST_TYPE" \
        "$(url "$s")/v2/bench/img/manifests/latest")
    [[ $code == 200 ]] || die "$s has no copied image ($code)"
done
declare -A SK_MEAN SK_SD
while read -r name mean sd; do
    SK_MEAN[$name]=$mean SK_SD[$name]=$sd
done < <(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(r["command"], "%.2f" % r["mean"], "%.2f" % (r["stddev"] or 0))
' "$W/skopeo.json")
stop_named sk-wharf
stop_named sk-registry

# ---------------------------------------------------------------------------------------------
# Push phase: every push goes to a fresh, empty server, so nothing is deduplicated.
# ---------------------------------------------------------------------------------------------

declare -A PUSH_BEST PUSH_CPU PUSH_RSS
PUSH_BEST=([wharf]=1e9 [wharf2]=1e9 [registry]=1e9)
PUSH_CPU=([wharf]=1e9 [wharf2]=1e9 [registry]=1e9)
PUSH_RSS=([wharf]=0 [wharf2]=0 [registry]=0)
log "monolithic push: $PUSH_RUNS rounds, a fresh server per push"
for ((i = 0; i < PUSH_RUNS; i++)); do
    # wharf: POST ?digest= (one request); wharf2: POST + PUT, the form docker-registry needs.
    for v in wharf registry wharf2; do
        sync
        if [[ $v == registry ]]; then
            start_registry push "$W/push-data" "$(free_port)"
        else
            start_wharf push "$W/push-data" 0
        fi
        c0=$(cpu_ticks push)
        if [[ $v == wharf ]]; then
            t=$(push_post push bench "$BLOB" "$BLOB_DIGEST")
        else
            t=$(push_post_put push bench "$BLOB" "$BLOB_DIGEST")
        fi
        cpu=$(secs $(($(cpu_ticks push) - c0)))
        log "  $v run $((i + 1)): ${t}s, $(mbps "$(awk -v b="$BLOB_BYTES" -v t="$t" \
            'BEGIN{print b/t}')") MB/s, server CPU ${cpu}s"
        PUSH_BEST[$v]=$(min "${PUSH_BEST[$v]}" "$t")
        PUSH_CPU[$v]=$(min "${PUSH_CPU[$v]}" "$cpu")
        PUSH_RSS[$v]=$(max "${PUSH_RSS[$v]}" "$(hwm_mib push)")
        stop_named push
        rm -rf "$W/push-data"
    done
done

# HTTPS push, the same TLS listener over HTTP/2 and over HTTP/1.1, a fresh server per push.
declare -A TLS_BEST TLS_PROTO
TLS_BEST=([h2]=1e9 [h1]=1e9)
log "HTTPS push over h2 and HTTP/1.1: $PUSH_RUNS rounds, a fresh server per push"
for ((i = 0; i < PUSH_RUNS; i++)); do
    for v in h2 h1; do
        sync
        start_wharf push "$W/push-data" 0 "$W/wharf-tls.toml"
        proto=--http2
        [[ $v == h1 ]] && proto=--http1.1
        read -r t version <<<"$(push_tls push "$BLOB" "$BLOB_DIGEST" "$proto")"
        log "  $v run $((i + 1)): ${t}s over HTTP/$version, $(mbps "$(awk -v b="$BLOB_BYTES" -v t="$t" \
            'BEGIN{print b/t}')") MB/s"
        TLS_BEST[$v]=$(min "${TLS_BEST[$v]}" "$t")
        TLS_PROTO[$v]=$version
        stop_named push
        rm -rf "$W/push-data"
    done
done

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
g_w=${GET_BEST[wharf]} g_r=${GET_BEST[registry]} g_n=${GET_BEST[nginx]}
r_get=$(ratio "$g_w" "$(max "$g_r" "$g_n")")
r_mn=$(ratio "${RPS[wharf]}" "${RPS[nginx]}")
r_mr=$(ratio "${RPS[wharf]}" "${RPS[registry]}")
r_mt=$(ratio "${RPS[wharf-token]}" "${RPS[nginx]}")
r_push=$(ratio "${PUSH_BEST[registry]}" "${PUSH_BEST[wharf]}")
r_push2=$(ratio "${PUSH_BEST[registry]}" "${PUSH_BEST[wharf2]}")
r_sk=$(ratio "${SK_MEAN[docker-registry]}" "${SK_MEAN[wharf]}")
pushmb() { mbps "$(awk -v b="$BLOB_BYTES" -v t="$1" 'BEGIN{print b/t}')"; }

row() { printf '%-38s %16s %16s %12s %7s  %s\n' "$@"; }
echo
echo "Wharf OCI benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
echo "wharf $("$WHARF" --version 2>/dev/null | awk '{print $2}'), $(docker-registry --version | awk '{print $2, $3}'), $(nginx -v 2>&1 | awk '{print $3}'), blob ${BLOB_MIB} MiB, load avg start/end: ${LOAD_START} / ${LOAD_END}"
echo
row "metric" "wharf" "docker-registry" "nginx" "ratio" "target"
row "------" "-----" "---------------" "-----" "-----" "------"
row "blob GET MB/s (best of $GET_RUNS rounds)" "$(mbps "$g_w")" "$(mbps "$g_r")" "$(mbps "$g_n")" "$r_get" \
    "w/max(peers) >= 0.9  $(verdict "$r_get" '>=' 0.9)"
row "  server CPU s per GiB sent" "${GET_CPU[wharf]}" "${GET_CPU[registry]}" "${GET_CPU[nginx]}" "" ""
row "manifest GET req/s (best of $WRK_ROUNDS)" "${RPS[wharf]}" "${RPS[registry]}" "${RPS[nginx]}" "$r_mn" \
    "w/nginx >= 0.5  $(verdict "$r_mn" '>=' 0.5)"
row "  vs docker-registry" "" "" "" "$r_mr" "(info)"
row "  wharf with a bearer token, req/s" "${RPS[wharf-token]}" "" "" "$r_mt" "(info: /nginx)"
row "  latency avg/p99 (best round)" "${LAT_AVG[wharf]}/${LAT_P99[wharf]}" "${LAT_AVG[registry]}/${LAT_P99[registry]}" \
    "${LAT_AVG[nginx]}/${LAT_P99[nginx]}" "" ""
row "  server CPU us per request" "${WRK_CPU[wharf]}" "${WRK_CPU[registry]}" "${WRK_CPU[nginx]}" "" ""
row "  same, wharf with a bearer token" "${WRK_CPU[wharf-token]}" "" "" "" ""
row "push ${BLOB_MIB} MiB MB/s (best of $PUSH_RUNS)" "$(pushmb "${PUSH_BEST[wharf]}")" "$(pushmb "${PUSH_BEST[registry]}")" "-" "$r_push" \
    "w/registry >= 3  $(verdict "$r_push" '>=' 3)"
row "  seconds" "${PUSH_BEST[wharf]}" "${PUSH_BEST[registry]}" "-" "" ""
row "  wharf via POST+PUT, MB/s" "$(pushmb "${PUSH_BEST[wharf2]}")" "" "" "$r_push2" "(info)"
row "  server CPU s per push (min)" "${PUSH_CPU[wharf]}" "${PUSH_CPU[registry]}" "-" "" ""
row "  server peak RSS MiB while pushing" "${PUSH_RSS[wharf]}" "${PUSH_RSS[registry]}" "-" "" ""
row "skopeo copy ${LAYERS}x${LAYER_MIB}MiB s (mean)" "${SK_MEAN[wharf]} sd ${SK_SD[wharf]}" \
    "${SK_MEAN[docker-registry]} sd ${SK_SD[docker-registry]}" "-" "$r_sk" "(info: registry/wharf time)"
row "peak RSS MiB serving the blob" "${RSS[wharf]}" "${RSS[registry]}" "${RSS[nginx]}" "" \
    "wharf < 100 MB  $(verdict "$(awk -v m="${RSS[wharf]}" 'BEGIN{print m*1048576/1e6}')" '<' 100)"
row "peak RSS MiB, $MEM_CONNS clients (manifest+4MiB)" "${MEM_RSS[wharf]}" "${MEM_RSS[registry]}" "-" \
    "$(ratio "${MEM_RSS[wharf]}" "${MEM_RSS[registry]}")" \
    "wharf < 200 MB  $(verdict "$(awk -v m="${MEM_RSS[wharf]}" 'BEGIN{print m*1048576/1e6}')" '<' 200)"
row "  req/s over ${MEM_SECS}s (half 4 MiB blobs)" "${MEM_RPS[wharf]}" "${MEM_RPS[registry]}" "-" \
    "$(ratio "${MEM_RPS[wharf]}" "${MEM_RPS[registry]}")" "(info)"
r_tls=$(ratio "${TLS_BEST[h1]}" "${TLS_BEST[h2]}")
row "HTTPS push MB/s over HTTP/${TLS_PROTO[h2]}" "$(pushmb "${TLS_BEST[h2]}")" "-" "-" "$r_tls" \
    "h2/HTTP1.1 >= 0.8  $(verdict "$r_tls" '>=' 0.8)"
row "HTTPS push MB/s over HTTP/${TLS_PROTO[h1]}" "$(pushmb "${TLS_BEST[h1]}")" "-" "-" "" ""
echo
for s in "${TARGETS[@]}"; do
    [[ -z ${WRK_ERR[$s]:-} ]] || echo "wrk errors against $s: ${WRK_ERR[$s]}"
done
for s in wharf registry; do
    [[ -z ${MEM_ERR[$s]:-} ]] || echo "wrk errors against $s with $MEM_CONNS clients: ${MEM_ERR[$s]}"
done
echo "ratios are wharf/peer for throughput; push and skopeo ratios are peer time / wharf time."
echo "total $(($(date +%s) - START)) s"
