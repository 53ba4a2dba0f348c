#!/usr/bin/env bash
# Interleaved A/B of wharf binaries on monolithic push cost, for a machine shared with other work:
#   bench/push-cpu.sh ROUNDS LABEL=BINARY [LABEL=BINARY ...]
# Each round starts every binary in the order given on a fresh, empty data directory and pushes
# the same three 128 MiB random blobs to it, each as one `POST /v2/bench/blobs/uploads/?digest=`
# with the whole body. Per binary and round it prints the server's CPU ticks (utime + stime from
# /proc/PID/stat, 1/CLK_TCK s, counted from the first push to the last) and the wall seconds of the
# three pushes (curl's time_total, summed); at the end each binary's medians and their ratios to
# the first binary's. CPU ticks depend little on other load; wall time does. SIZE_MIB (128) and
# PUSHES (3) change the shape.
set -euo pipefail
ROUNDS=$1; shift
SIZE_MIB=${SIZE_MIB:-128}
PUSHES=${PUSHES:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-push-cpu.XXXXXX")
SERVER=
cleanup() {
  if [[ -n $SERVER ]]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
for i in $(seq "$PUSHES"); do
  head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$WORK/blob$i"
  sha256sum "$WORK/blob$i" | cut -d' ' -f1 > "$WORK/blob$i.sha256"
done
printf 'pw\n' > "$WORK/pw"
printf '[auth]\nadmin_password_file = "%s/pw"\n' "$WORK" > "$WORK/wharf.toml"

# one BINARY LABEL -> "LABEL ticks=N wall=S"
one() {
  local bin=$1 label=$2 data=$WORK/data url= t0 t1 wall=0 t
  rm -rf "$data"
  "$bin" serve --config "$WORK/wharf.toml" --listen 127.0.0.1:0 --data-dir "$data" \
    > "$WORK/out" 2> "$WORK/err" &
  SERVER=$!
  for _ in $(seq 300); do
    url=$(sed -n 's#^wharf listening on \(http://.*\)$#\1#p' "$WORK/out")
    [[ -n $url ]] && break
    sleep 0.1
  done
  [[ -n $url ]] || { echo "$label did not start:" >&2; cat "$WORK/err" >&2; exit 2; }
  sync
  t0=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
  for i in $(seq "$PUSHES"); do
    t=$(curl -sf --max-time 120 -u admin:pw -X POST --data-binary "@$WORK/blob$i" \
      -H 'Content-Type: application/octet-stream' \
      "$url/v2/bench/blobs/uploads/?digest=sha256:$(cat "$WORK/blob$i.sha256")" \
      -o /dev/null -w '%{time_total}')
    wall=$(awk -v a="$wall" -v b="$t" 'BEGIN { printf "%.3f", a + b }')
  done
  t1=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  SERVER=
  echo "$label ticks=$((t1 - t0)) wall=$wall"
}

OUT=$WORK/results
for r in $(seq "$ROUNDS"); do
  for pair in "$@"; do
    LINE=$(one "${pair#*=}" "${pair%%=*}")
    echo "round $r $LINE (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    echo "$LINE" >> "$OUT"
  done
done
awk '
  { split($2, a, "="); split($3, b, "="); n[$1]++; ticks[$1, n[$1]] = a[2]; wall[$1, n[$1]] = b[2];
    if (!($1 in seen)) { seen[$1] = 1; order[++labels] = $1 } }
  function median(arr, l, k,   i, j, t, v) {
    for (i = 1; i <= k; i++) v[i] = arr[l, i];
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }
  END {
    for (i = 1; i <= labels; i++) { l = order[i]; t[l] = median(ticks, l, n[l]); w[l] = median(wall, l, n[l]) }
    for (i = 1; i <= labels; i++) { l = order[i];
      printf "%-12s median CPU ticks %6.1f (ratio %.3f)  median wall s %6.3f (ratio %.3f)  (%d rounds)\n",
        l, t[l], t[l] / t[order[1]], w[l], w[l] / w[order[1]], n[l] } }
' "$OUT"
