#!/usr/bin/env bash
# Mirroring an rpm-md repository of N packages (default 500, 64 KiB of payload each) served by
# nginx: `wharf sync` (an exact mirror into an empty store) against `dnf reposync
# --download-metadata` of the same upstream, both at 8 transfers at once; then `dnf makecache`
# (a fresh cache each time) from wharf serving the mirror against nginx serving the same tree,
# ROUNDS times each, alternating, median taken.
#   bench/rpm-mirror.sh [WHARF_BINARY] [N] [ROUNDS]   (default target/release/wharf, 500, 7)
# Needs rpmbuild, createrepo_c, dnf, nginx and curl. Run on an idle machine.
set -euo pipefail
BIN=$(realpath "${1:-target/release/wharf}")
N=${2:-500}
ROUNDS=${3:-7}
D=$(mktemp -d ${TMPDIR:-/tmp}/wharf-rpm-mirror-bench.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$D"' EXIT

# One rpmbuild run makes every package (subpackages of one spec, each with its own file).
spec=$D/bench.spec
{
  printf 'Name: bench\nVersion: 1\nRelease: 1\nSummary: bench\nLicense: MIT\nBuildArch: noarch\n'
  printf '%%description\nbench\n'
  for i in $(seq "$N"); do
    printf '%%package -n bench%d\nSummary: bench package %d\nProvides: cap%d = %d\n' "$i" "$i" "$i" "$i"
    printf '%%description -n bench%d\nPackage %d of the benchmark.\n' "$i" "$i"
    printf '%%files -n bench%d\n/usr/share/bench/%d\n' "$i" "$i"
  done
  printf '%%install\nmkdir -p %%{buildroot}/usr/share/bench\n'
  printf 'for i in $(seq %d); do head -c 65536 /dev/urandom > %%{buildroot}/usr/share/bench/$i; done\n' "$N"
  printf '%%files\n'
} > "$spec"
mkdir -p "$D/up"
rpmbuild -bb --quiet --define "_topdir $D/top" --define "_rpmdir $D/up" \
  --define '_build_id_links none' --define '__os_install_post %{nil}' \
  --define 'debug_package %{nil}' "$spec" >/dev/null 2>&1
rm -f "$D"/up/noarch/bench-1-1.noarch.rpm # the empty main package
createrepo_c --quiet "$D/up"
PACKAGES=$(find "$D/up" -name '*.rpm' | wc -l)

PORT=$((20000 + RANDOM % 9000))
USER_LINE=""
[[ $EUID -eq 0 ]] && USER_LINE="user root;"
cat > "$D/nginx.conf" <<EOT
$USER_LINE
daemon off;
worker_processes 2;
pid $D/nginx.pid;
error_log $D/nginx.err;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:$PORT; root $D/up; }
}
EOT
nginx -c "$D/nginx.conf" -p "$D" & PIDS+=($!)
for i in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/repodata/repomd.xml" && break; sleep 0.1; done
UP=http://127.0.0.1:$PORT

cat > "$D/wharf.toml" <<EOT
[[rpm.remotes]]
name = "up"
url = "$UP/"
insecure_http = true
repository = "bench/el"
concurrency = 8
[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]
EOT
t() { local s; s=$(date +%s.%N); "$@" >/dev/null || { echo "failed: $*" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

dnf_in() { # WORKDIR BASEURL ARGS...
  local w=$1 url=$2; shift 2
  mkdir -p "$w/repos.d" "$w/root"
  printf '[b]\nname=b\nbaseurl=%s\ngpgcheck=0\nmetadata_expire=0\n' "$url" > "$w/repos.d/b.repo"
  dnf --installroot "$w/root" --releasever 12 -y --quiet --setopt=reposdir="$w/repos.d" \
    --setopt=cachedir="$w/cache" --setopt=max_parallel_downloads=8 \
    --setopt=skip_if_unavailable=0 --repo=b "$@"
}

# Only `wharf serve` creates a store: start it once and stop it, so the sync runs alone.
"$BIN" serve --config "$D/wharf.toml" --listen 127.0.0.1:0 --data-dir "$D/data" > "$D/out0" 2> "$D/err0" &
P0=$!
for i in $(seq 200); do grep -q "listening" "$D/out0" 2>/dev/null && break; sleep 0.1; done
kill $P0; wait $P0 2>/dev/null || true
W=$(t "$BIN" sync up --config "$D/wharf.toml" --data-dir "$D/data")
R=$(t dnf_in "$D/rs" "$UP/" reposync --download-metadata --norepopath -p "$D/rs/out")
SYNCED=$(find "$D/rs/out" -name '*.rpm' | wc -l)
echo "packages=$PACKAGES bytes=$(du -sb "$D/up" | cut -f1) reposync_packages=$SYNCED"
echo "mirror wharf_sync=${W}s dnf_reposync=${R}s ratio=$(echo "scale=3; $W / $R" | bc)"

"$BIN" serve --config "$D/wharf.toml" --listen 127.0.0.1:0 --data-dir "$D/data" > "$D/out" 2> "$D/err" & PIDS+=($!)
for i in $(seq 100); do URL=$(sed -n 's#^wharf listening on \(http://.*\)$#\1#p' "$D/out"); [[ -n ${URL:-} ]] && break; sleep 0.1; done
cmp <(curl -sf "$URL/rpm/bench/el/repodata/repomd.xml") "$D/up/repodata/repomd.xml"
: > "$D/mw"; : > "$D/mn"
for r in $(seq "$ROUNDS"); do
  rm -rf "$D/mc"; t dnf_in "$D/mc" "$URL/rpm/bench/el/" makecache >> "$D/mw"
  rm -rf "$D/mc"; t dnf_in "$D/mc" "$UP/" makecache >> "$D/mn"
done
MW=$(median < "$D/mw"); MN=$(median < "$D/mn")
echo "makecache rounds=$ROUNDS median wharf=${MW}s nginx=${MN}s ratio=$(echo "scale=3; $MW / $MN" | bc)"
