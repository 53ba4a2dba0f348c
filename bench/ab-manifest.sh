#!/usr/bin/env bash
# A/B of two wharf binaries on manifest GET, one after the other on this machine:
#   bench/ab-manifest.sh BINARY LABEL [EXTRA_TOML]   (prints req/s and server CPU ticks over 8 s of wrk -t2 -c64)
# Needs wrk and curl. Run each binary at least twice, interleaved (bench/ab-rounds.sh does that and prints
# medians); set RUST_LOG=warn to take per-request logging out.
set -euo pipefail
BIN=$1; LABEL=$2; EXTRA=${3:-}
D=$(mktemp -d ${TMPDIR:-/tmp}/wharf-ab.XXXXXX)
printf 'pw\n' > $D/pw
cat > $D/wharf.toml <<EOT
[auth]
admin_password_file = "$D/pw"
[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]
$EXTRA
EOT
$BIN serve --config $D/wharf.toml --listen 127.0.0.1:0 --data-dir $D/data > $D/out 2> $D/err &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for i in $(seq 100); do URL=$(sed -n 's#^wharf listening on \(http://.*\)$#\1#p' $D/out); [[ -n $URL ]] && break; sleep 0.1; done
L='{"a":1}'; LD=sha256:$(printf %s "$L" | sha256sum | cut -d' ' -f1)
curl -sf --max-time 10 -u admin:pw -X POST --data-binary "$L" -H 'Content-Type: application/octet-stream' "$URL/v2/bench/blobs/uploads/?digest=$LD" >/dev/null
M="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$LD\",\"size\":7},\"layers\":[]}"
curl -sf --max-time 10 -u admin:pw -X PUT --data-binary "$M" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "$URL/v2/bench/manifests/latest" >/dev/null
sleep 4
T0=$(awk '{print $14+$15}' /proc/$PID/stat)
R=$(wrk -t2 -c64 -d8s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$URL/v2/bench/manifests/latest" | awk '/Requests\/sec/{print $2}')
T1=$(awk '{print $14+$15}' /proc/$PID/stat)
kill $PID; wait $PID 2>/dev/null || true; trap - EXIT
echo "$LABEL req/s=$R cpu_ticks=$((T1-T0))"
rm -rf $D
