#!/usr/bin/env bash
# Interleaved A/B of wharf binaries on manifest GET, for a machine shared with other work:
#   bench/ab-rounds.sh ROUNDS LABEL=BINARY [LABEL=BINARY ...]
# Each round runs bench/ab-manifest.sh once per binary, in the order given, so outside load falls
# on every binary alike; at the end it prints each binary's median req/s and server CPU µs per
# request, and each median's ratio to the first binary's. RUST_LOG and EXTRA (TOML appended to
# the config) are passed through.
set -euo pipefail
ROUNDS=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd)
TICK=$(getconf CLK_TCK)
OUT=$(mktemp ${TMPDIR:-/tmp}/wharf-ab-rounds.XXXXXX)
trap 'rm -f "$OUT"' EXIT
for r in $(seq "$ROUNDS"); do
  for pair in "$@"; do
    LABEL=${pair%%=*}; BIN=${pair#*=}
    LINE=$("$HERE/ab-manifest.sh" "$BIN" "$LABEL" "${EXTRA:-}")
    echo "round $r $LINE (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    echo "$LINE" >> "$OUT"
  done
done
# Server CPU per request: ticks over wrk's 8 s, divided by the requests made in those 8 s.
awk -v tick="$TICK" '
  { split($2, a, "="); split($3, b, "="); n[$1]++; rps[$1, n[$1]] = a[2];
    us[$1, n[$1]] = (a[2] > 0) ? b[2] / tick * 1e6 / (a[2] * 8) : 0;
    if (!($1 in seen)) { seen[$1] = 1; order[++labels] = $1 } }
  function median(arr, l, k,   i, j, t, v) {
    for (i = 1; i <= k; i++) v[i] = arr[l, i];
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }
  END {
    for (i = 1; i <= labels; i++) { l = order[i]; m[l] = median(rps, l, n[l]); c[l] = median(us, l, n[l]) }
    for (i = 1; i <= labels; i++) { l = order[i];
      printf "%-16s median req/s %9.0f  ratio %.3f  median server CPU %5.1f us/req  (%d runs)\n", l, m[l], m[l] / m[order[1]], c[l], n[l] } }
' "$OUT"
