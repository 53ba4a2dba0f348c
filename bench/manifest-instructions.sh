#!/usr/bin/env bash
# Instructions per manifest GET, counted by callgrind: repeatable whatever else the machine does,
# so it settles A/B questions that wall-clock rounds on a busy machine cannot.
#   bench/manifest-instructions.sh BINARY LABEL [REQUESTS]   (default 1000)
# The server runs under valgrind with instrumentation off; 200 warm-up GETs, then REQUESTS GETs of a
# one-layer manifest over one kept-alive curl connection are counted (every server thread, the log
# writer included). Prints total and per-request instructions and how many access lines were written.
# Set RUST_LOG=warn to take per-request logging out. Needs valgrind and curl.
set -euo pipefail
BIN=$1; LABEL=$2; N=${3:-1000}
D=$(mktemp -d "${TMPDIR:-/tmp}/wharf-ir.XXXXXX")
trap 'kill $PID 2>/dev/null || true; rm -rf "$D"' EXIT
printf 'pw\n' > "$D/pw"
cat > "$D/wharf.toml" <<EOT
[auth]
admin_password_file = "$D/pw"
[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]
EOT
valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" --instr-atstart=no \
  "$BIN" serve --config "$D/wharf.toml" --listen 127.0.0.1:0 --data-dir "$D/data" > "$D/out" 2> "$D/err" &
PID=$!
for _ in $(seq 600); do URL=$(sed -n 's#^wharf listening on \(http://.*\)$#\1#p' "$D/out"); [[ -n $URL ]] && break; sleep 0.1; done
L='{"a":1}'; LD=sha256:$(printf %s "$L" | sha256sum | cut -d' ' -f1)
curl -sf --max-time 60 -u admin:pw -X POST --data-binary "$L" -H 'Content-Type: application/octet-stream' "$URL/v2/bench/blobs/uploads/?digest=$LD" >/dev/null
M="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$LD\",\"size\":7},\"layers\":[]}"
curl -sf --max-time 60 -u admin:pw -X PUT --data-binary "$M" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "$URL/v2/bench/manifests/latest" >/dev/null
urls() { for _ in $(seq "$1"); do echo "url = \"$URL/v2/bench/manifests/latest\""; echo 'output = "/dev/null"'; done; }
urls 200 > "$D/warm"; urls "$N" > "$D/urls"
H='Accept: application/vnd.oci.image.manifest.v1+json'
curl -s -H "$H" -K "$D/warm"
callgrind_control -i on $PID >/dev/null
curl -s -H "$H" -K "$D/urls"
callgrind_control -i off $PID >/dev/null
callgrind_control -d $PID >/dev/null
sleep 1
kill $PID; wait $PID 2>/dev/null || true
TOTAL=$(for f in "$D"/cg.out*; do callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; done | awk '{s+=$1} END{print s}')
echo "$LABEL instructions=$TOTAL per_request=$((TOTAL / N)) access_lines=$(grep -c '"access"\|: access ' "$D/err" || true)"
