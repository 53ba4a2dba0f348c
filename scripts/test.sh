#!/usr/bin/env bash
# The project's test command: installs what the tests need, then builds and runs every test.
#
# Stages, each reported in the closing summary:
#   1. Debian packages for the stock clients and services (apt only when something is missing).
#   2. oras and cosign from Debian trixie into .tools/ (bookworm has neither), leaving the
#      system's packages alone.
#   3. A private PostgreSQL cluster on loopback for the database tests, removed on exit.
#   4. cargo fmt --all --check; cargo build --workspace --all-targets; cargo clippy --workspace
#      --all-targets -- -D warnings; then cargo test --workspace --no-fail-fast.
#   5. The OCI conformance suite against a fresh `wharf serve` (once on SQLite, once on PostgreSQL), signed in as its administrator
#      (random password), then `wharf check` on its data.
# Exits non-zero if anything failed. Works on a fresh Debian bookworm machine as root with the
# Rust toolchain present; runs unattended (CI sets CI=true and gives no stdin).
# Another apt or dpkg run (unattended-upgrades on a fresh machine) is waited for, up to
# WHARF_TEST_APT_WAIT_SECS (600), instead of failing the package stage.
#
# WHARF_TEST_STAGES selects stages by name (space-separated; default: all): packages tools
# postgres fmt build clippy cargo-test conformance. WHARF_TEST_APT_UPDATE=1 refreshes the package
# lists even when nothing is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-test.XXXXXX")
export DEBIAN_FRONTEND=noninteractive

log() { printf '\n==> %s\n' "$*" >&2; }

# Commands that need root are run through sudo when the script is not root (a developer laptop).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
PACKAGES=(
    # Stock OCI clients the end-to-end tests drive, and the reference registry.
    skopeo podman buildah umoci docker-registry golang-github-containers-common
    # podman's runtime pieces: it runs as root here with vfs storage and no systemd.
    crun uidmap fuse-overlayfs containernetworking-plugins slirp4netns
    # containerd 1.6 and ctr: the pull-through e2e test starts its own daemon (native snapshotter).
    containerd
    # Services and load tools for database tests and benchmarks.
    postgresql nginx-light wrk hyperfine
    # The script's own needs: JSON, HTTP, process control, the Debian archive key for trixie.
    jq curl ca-certificates procps debian-archive-keyring
    # TLS tests: a private CA (openssl), bcrypt htpasswd files (apache2-utils), an ACME CA (pebble).
    openssl apache2-utils pebble
    # OSTree and flatpak clients, and the keys that sign their test upstreams.
    ostree flatpak gnupg
    # RPM: building and signing test packages, createrepo_c upstreams, dnf (and reposync) as the client.
    rpm createrepo-c dnf dnf-plugins-core
)

APT_WAIT_SECS=${WHARF_TEST_APT_WAIT_SECS:-600}

# Runs apt-get, waiting while another apt or dpkg holds its locks. DPkg::Lock::Timeout covers the
# dpkg frontend lock; apt-get update's lists lock (and the archives cache lock) it does not, so a
# run that failed only for a lock is retried until APT_WAIT_SECS have passed.
apt_get_waiting() {
    local deadline=$((SECONDS + APT_WAIT_SECS)) out status
    while :; do
        status=0
        out=$(as_root apt-get -o "DPkg::Lock::Timeout=$APT_WAIT_SECS" "$@" 2>&1) || status=$?
        if ((status == 0)); then
            [[ -z $out ]] || printf '%s\n' "$out"
            return 0
        fi
        if ! grep -qE 'Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock' <<<"$out" \
            || ((SECONDS >= deadline)); then
            printf '%s\n' "$out" >&2
            return "$status"
        fi
        log "apt is busy ($(grep -m1 -oE 'held by process [0-9]+( \([^)]*\))?' <<<"$out" || echo 'locked')); waiting"
        sleep 5
    done
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "Debian packages: all ${#PACKAGES[@]} present"
        if [[ ${WHARF_TEST_APT_UPDATE:-} == 1 ]]; then
            log "Debian packages: refreshing the package lists"
            apt_get_waiting update -qq
        fi
        return 0
    fi
    log "Debian packages: installing ${missing[*]}"
    apt_get_waiting update -qq
    apt_get_waiting install -y --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------------------------------------
# 2. oras and cosign from Debian trixie
# ---------------------------------------------------------------------------------------------
# The machine's own Debian mirror is read from its apt configuration at run time, so no host name
# is written into the project. A private apt configuration (its own sources, lists, cache and no
# dpkg status) downloads the two .deb files; dpkg -x unpacks them into .tools/ without installing
# anything, so nothing else on the system is upgraded.

# Prints the first URI of a stanza or line that serves bookworm (not bookworm-security).
debian_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; main = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, parts, /[ \t]+/); uris = parts[2] }
                    if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) { main = 1 }
                }
                if (main && uris != "") { print uris; exit }
            }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $uri && -r /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" {
                for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break
                if ($(i + 1) == "bookworm") { print $i; exit }
            }' /etc/apt/sources.list)
    fi
    [[ -n $uri ]] || { echo "no Debian bookworm source in /etc/apt" >&2; return 1; }
    printf '%s\n' "$uri"
}

fetch_trixie_tools() {
    if [[ -x $TOOLS/bin/oras && -x $TOOLS/bin/cosign ]] \
        && "$TOOLS/bin/oras" version >/dev/null 2>&1 \
        && "$TOOLS/bin/cosign" version >/dev/null 2>&1; then
        log "oras and cosign: present in .tools/bin"
        return 0
    fi
    local apt="$TOOLS/apt" mirror
    mirror=$(debian_mirror)
    log "oras and cosign: fetching from Debian trixie"
    rm -rf "$apt/debs"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$TOOLS/bin"
    cat >"$apt/trixie.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Hooks from the system's apt.conf.d act on the system's cache, not on this private one.
    cat >"$apt/apt.conf" <<EOF
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Post-Invoke;
Dir::Etc::SourceList "$apt/trixie.sources";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "$apt/lists";
Dir::State::status "/dev/null";
Dir::Cache "$apt/cache";
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
EOF
    apt-get -c "$apt/apt.conf" update -qq
    (cd "$apt/debs" && apt-get -c "$apt/apt.conf" download oras cosign)
    rm -rf "$TOOLS/root"
    local deb
    for deb in "$apt"/debs/*.deb; do
        dpkg -x "$deb" "$TOOLS/root"
    done
    ln -sfn ../root/usr/bin/oras "$TOOLS/bin/oras"
    ln -sfn ../root/usr/bin/cosign "$TOOLS/bin/cosign"
    "$TOOLS/bin/oras" version
    "$TOOLS/bin/cosign" version >/dev/null
}

# ---------------------------------------------------------------------------------------------
# 3. A private PostgreSQL cluster
# ---------------------------------------------------------------------------------------------
PG_DIR=""
PG_BIN=""

# Runs a PostgreSQL command as the cluster's owner: postgres when we are root (initdb refuses
# root), ourselves otherwise.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_postgres() {
    local version
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    PG_BIN="/usr/lib/postgresql/$version/bin"
    [[ -x $PG_BIN/initdb ]] || { echo "no initdb under $PG_BIN" >&2; return 1; }
    local port=55432
    while port_in_use "$port"; do
        port=$((port + 1))
        ((port < 55500)) || { echo "no free port for PostgreSQL" >&2; return 1; }
    done
    PG_DIR="$WORK/postgres"
    mkdir -p "$PG_DIR"
    if [[ $(id -u) -eq 0 ]]; then
        # mktemp made $WORK private to root; the postgres user must be able to reach its dir.
        chmod 711 "$WORK"
        chown postgres:postgres "$PG_DIR"
    fi
    log "PostgreSQL $version: private cluster on 127.0.0.1:$port"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$WORK/initdb.log" \
        || { cat "$WORK/initdb.log" >&2; return 1; }
    # A throwaway cluster: no durability needed, so no fsync.
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
        || { cat "$PG_DIR/server.log" >&2; return 1; }
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres wharf_test || return 1
    export WHARF_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/wharf_test"
}

# The port of the private cluster, from postgres://USER@HOST:PORT/DB.
pg_port() {
    local rest=${WHARF_TEST_POSTGRES_URL#*@}
    rest=${rest%%/*}
    printf '%s\n' "${rest##*:}"
}

stop_postgres() {
    if [[ -n $PG_DIR && -f $PG_DIR/data/postmaster.pid ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------------------------------------
# 5. Conformance against a fresh server
# ---------------------------------------------------------------------------------------------
WHARF_PID=""

stop_wharf() {
    if [[ -n $WHARF_PID ]] && kill -0 "$WHARF_PID" 2>/dev/null; then
        kill -TERM "$WHARF_PID" 2>/dev/null || true
        local waited=0
        while kill -0 "$WHARF_PID" 2>/dev/null && ((waited < 100)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$WHARF_PID" 2>/dev/null; then
            echo "wharf did not stop within 10 s of SIGTERM; killing it" >&2
            kill -KILL "$WHARF_PID" 2>/dev/null || true
            wait "$WHARF_PID" 2>/dev/null || true
            WHARF_PID=""
            return 1
        fi
    fi
    local status=0
    if [[ -n $WHARF_PID ]]; then wait "$WHARF_PID" || status=$?; fi
    WHARF_PID=""
    return "$status"
}

# run_conformance NAME [DATABASE_URL]: a fresh wharf (SQLite by default, or the given
# PostgreSQL database), the suite against it, then `wharf check` on what it left.
run_conformance() {
    local name=$1 database_url=${2:-}
    local data="$WORK/conformance-$name-data" out="$WORK/wharf-$name.stdout" url="" waited=0
    local config="$WORK/conformance-$name.toml" password_file="$WORK/admin-password-$name" password
    mkdir -p -m 700 "$data"
    # Wharf refuses anonymous requests and creates `admin` on first start: choose its password,
    # so the suite can sign in, instead of scraping the generated one from stderr.
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" >"$password_file")
    printf '[auth]\nadmin_password_file = "%s"\n' "$password_file" >"$config"
    if [[ -n $database_url ]]; then
        printf '[database]\nurl = "%s"\n' "$database_url" >>"$config"
    fi
    target/debug/wharf serve --config "$config" --listen 127.0.0.1:0 --data-dir "$data" \
        >"$out" 2>"$WORK/wharf-$name.stderr" </dev/null &
    WHARF_PID=$!
    while ((waited < 600)); do
        url=$(sed -n 's#^wharf listening on \(http://[^ ]*\)$#\1#p' "$out" | head -n 1)
        [[ -n $url ]] && break
        if ! kill -0 "$WHARF_PID" 2>/dev/null; then break; fi
        sleep 0.1
        waited=$((waited + 1))
    done
    if [[ -z $url ]]; then
        echo "wharf serve did not print its ready line; its log:" >&2
        tail -n 50 "$WORK/wharf-$name.stderr" >&2
        stop_wharf || true
        return 1
    fi
    log "conformance ($name): wharf-conformance --url $url --basic-auth admin:…"
    local status=0
    target/debug/wharf-conformance --url "$url" --basic-auth "admin:$password" \
        | tee "$WORK/conformance-$name.out" || status=$?
    if ! stop_wharf; then
        echo "wharf did not shut down cleanly on SIGTERM" >&2
        status=1
    fi
    if ((status != 0)); then
        echo "--- wharf server log (tail) ---" >&2
        tail -n 50 "$WORK/wharf-$name.stderr" >&2
    fi
    log "conformance ($name): wharf check --data-dir $data"
    if ! target/debug/wharf check --config "$config" --data-dir "$data"; then
        echo "wharf check found a damaged store after the conformance run" >&2
        status=1
    fi
    return "$status"
}

# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
cleanup() {
    stop_wharf >/dev/null 2>&1 || true
    stop_postgres
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FAILED_STAGES=()
TESTS_PASSED=0
TESTS_FAILED=0

STAGES=" ${WHARF_TEST_STAGES:-packages tools postgres fmt build clippy cargo-test conformance} "

# Whether the stage named $1 was selected by WHARF_TEST_STAGES.
selected() { [[ $STAGES == *" $1 "* ]]; }

stage() {
    local name=$1
    shift
    # conformance-sqlite and conformance-postgres are both selected by `conformance`.
    if ! selected "$name" && ! selected "${name%-*}"; then
        return 0
    fi
    if "$@"; then
        return 0
    fi
    FAILED_STAGES+=("$name")
    return 1
}

# Adds the counts of every "test result:" line of a cargo test log, and of a closing
# "N passed, M failed" line of the conformance suite, to the totals.
count_cargo_results() {
    local passed failed
    passed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' "$1" \
        | awk '{ s += $1 } END { print s + 0 }')
    failed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' "$1" \
        | awk '{ s += $1 } END { print s + 0 }')
    TESTS_PASSED=$((TESTS_PASSED + passed))
    TESTS_FAILED=$((TESTS_FAILED + failed))
}

count_conformance_results() {
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 || true)
    if [[ -n $line ]]; then
        TESTS_PASSED=$((TESTS_PASSED + $(awk '{ print $1 }' <<<"$line")))
        TESTS_FAILED=$((TESTS_FAILED + $(awk '{ print $3 }' <<<"$line")))
    fi
}

cargo_test() {
    local status=0
    cargo test --workspace --no-fail-fast 2>&1 | tee "$WORK/cargo-test.log" || status=$?
    count_cargo_results "$WORK/cargo-test.log"
    return "$status"
}

stage packages install_packages || true
stage tools fetch_trixie_tools || true
stage postgres start_postgres || true

# Formatting and lints are stages of their own: the lint configuration is enforced where it lands.
if selected fmt; then log "cargo fmt --all --check"; fi
stage fmt cargo fmt --all --check || true

if selected build; then log "cargo build --workspace --all-targets"; fi
if stage build cargo build --workspace --all-targets; then
    if selected clippy; then log "cargo clippy --workspace --all-targets -- -D warnings"; fi
    stage clippy cargo clippy --workspace --all-targets -- -D warnings || true
    if selected cargo-test; then log "cargo test --workspace"; fi
    stage cargo-test cargo_test || true
    if selected conformance; then
        stage conformance-sqlite run_conformance sqlite || true
        # The same suite with the metadata in PostgreSQL, the scale-out configuration.
        if [[ -n ${WHARF_TEST_POSTGRES_URL:-} ]] \
            && as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$(pg_port)" -U postgres wharf_conformance; then
            stage conformance-postgres run_conformance postgres "${WHARF_TEST_POSTGRES_URL%/*}/wharf_conformance" || true
        else
            FAILED_STAGES+=("conformance-postgres")
        fi
        for out in "$WORK"/conformance-*.out; do
            if [[ -f $out ]]; then count_conformance_results "$out"; fi
        done
    fi
fi

stop_postgres

echo
if ((${#FAILED_STAGES[@]} == 0)); then
    echo "scripts/test.sh: every stage passed"
else
    echo "scripts/test.sh: failed stages: ${FAILED_STAGES[*]}"
    # A stage that failed without a failing test (a build error, a dirty store) still fails the
    # count, so the closing line never reads as all-green when the run was not.
    if ((TESTS_FAILED == 0)); then TESTS_FAILED=${#FAILED_STAGES[@]}; fi
fi
echo "summary: $TESTS_PASSED passed, $TESTS_FAILED failed"
((${#FAILED_STAGES[@]} == 0))
