#!/usr/bin/env bash
# A hosted repository's metadata for N packages (default 500, and 2N to show memory staying
# flat): `wharf rpm upload` (store every package, hashing it, then write primary, filelists,
# other and repomd.xml, and publish) against `createrepo_c --no-database` over the same files.
#   bench/rpm-createrepo.sh [WHARF_BINARY] [N] [ROUNDS]   (default target/release/wharf, 500, 5)
# Then ROUNDS times each, alternating: `wharf rpm rm` of one package, which rewrites the metadata
# of all the others (metadata generation alone), and `createrepo_c --no-database` from scratch
# (and, for reference, `createrepo_c --update`, which reuses its previous metadata). Prints wall
# time and max RSS of each run (GNU time -v) and the medians. Needs rpmbuild, createrepo_c and
# /usr/bin/time. One rpmbuild run makes all packages (subpackages of one spec, each with its
# own file, requirement and provide). Run on an idle machine; each figure is one run.
set -euo pipefail
BIN=$(realpath "${1:-target/release/wharf}")
N=${2:-500}
ROUNDS=${3:-5}
D=$(mktemp -d ${TMPDIR:-/tmp}/wharf-rpm-bench.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$D"' EXIT

build() { # COUNT OUTDIR
  local count=$1 out=$2 spec=$D/bench-$1.spec
  {
    printf 'Name: bench\nVersion: 1\nRelease: 1\nSummary: bench\nLicense: MIT\nBuildArch: noarch\n'
    printf '%%description\nbench\n'
    for i in $(seq "$count"); do
      printf '%%package -n bench%d\nSummary: bench package %d\nRequires: bench%d\nProvides: cap%d = %d\n' \
        "$i" "$i" $(( i % count + 1 )) "$i" "$i"
      printf '%%description -n bench%d\nPackage %d of the benchmark.\n' "$i" "$i"
      printf '%%files -n bench%d\n/usr/share/bench/%d\n' "$i" "$i"
    done
    printf '%%install\nmkdir -p %%{buildroot}/usr/share/bench\n'
    printf 'for i in $(seq %d); do head -c 4096 /dev/urandom > %%{buildroot}/usr/share/bench/$i; done\n' "$count"
    printf '%%files\n'
  } > "$spec"
  rpmbuild -bb --quiet --define "_topdir $D/top-$count" --define "_rpmdir $out" \
    --define '_build_id_links none' --define '__os_install_post %{nil}' \
    --define 'debug_package %{nil}' "$spec" >/dev/null 2>&1
}

measure() { # LABEL CMD...  (also appends the wall seconds to $D/LABEL.times)
  local label=$1; shift
  local start end secs rss
  # GNU time's wall clock has 10 ms steps; the clock around it has nanoseconds.
  start=$(date +%s%N)
  /usr/bin/time -v "$@" > /dev/null 2> "$D/time.txt"
  end=$(date +%s%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$D/time.txt")
  echo "$secs" >> "$D/$label.times"
  echo "$label wall=${secs}s max_rss_kib=$rss"
}

median() { # LABEL
  sort -n "$D/$1.times" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

cat > "$D/wharf.toml" <<EOT
[storage]
data_dir = "$D/data"
EOT
PORT=$((20000 + RANDOM % 9000))
# Only `wharf serve` creates a store: start it once, then stop it, so the CLI runs alone.
"$BIN" serve --config "$D/wharf.toml" --listen 127.0.0.1:$PORT > "$D/out" 2> "$D/err" & PIDS+=($!)
for i in $(seq 200); do grep -q "listening" "$D/out" 2>/dev/null && break; sleep 0.1; done
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

for count in "$N" $(( 2 * N )); do
  build "$count" "$D/rpms-$count"
  files=("$D/rpms-$count"/noarch/bench?*.rpm)
  echo "packages=${#files[@]} bytes=$(du -sb "$D/rpms-$count" | cut -f1)"
  measure "wharf_rpm_upload_$count" "$BIN" rpm upload --config "$D/wharf.toml" --repo "bench/r$count" "${files[@]}"
  mkdir -p "$D/c-$count"
  cp "${files[@]}" "$D/c-$count/"
  for round in $(seq "$ROUNDS"); do
    # Metadata alone: removing one package rewrites the metadata of all the others from their
    # stored headers.
    measure "wharf_rpm_rm_one_regenerates_$count" "$BIN" rpm rm --config "$D/wharf.toml" \
      --repo "bench/r$count" "bench$round-1-1.noarch"
    rm -rf "$D/c-$count/repodata"
    measure "createrepo_c_$count" createrepo_c --no-database --quiet "$D/c-$count"
    rm -f "$D/c-$count/bench$round-1-1.noarch.rpm"
    measure "createrepo_c_update_$count" createrepo_c --update --no-database --quiet "$D/c-$count"
  done
  w=$(median "wharf_rpm_rm_one_regenerates_$count")
  c=$(median "createrepo_c_$count")
  u=$(median "createrepo_c_update_$count")
  echo "median packages=$count wharf_rewrite=${w}s createrepo_c=${c}s createrepo_c_update=${u}s" \
    "ratio=$(awk -v a="$w" -v b="$c" 'BEGIN { printf "%.2f", a / b }')" \
    "ratio_update=$(awk -v a="$w" -v b="$u" 'BEGIN { printf "%.2f", a / b }')"
done
