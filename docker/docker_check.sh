#!/usr/bin/env bash
# make docker-check: build the CPU image (docker/Dockerfile.cpu) and run the toolkit in it,
# as a user of `docker run` would; with CUDA=1 also the CUDA image (docker/Dockerfile) for
# one architecture. Not part of CI: cold on 2 cores it took about 12 minutes (CUDA=1: about
# 13 more; README, Docker) and, where no Docker engine answers, it installs podman.
#
#   bash docker/docker_check.sh            # make docker-check
#   CUDA=1 bash docker/docker_check.sh     # make docker-check CUDA=1
#   bash docker/docker_check.sh --settings-only   # engine, base image, settings; no build
#
# On Debian or Ubuntu: Docker when an engine answers (`docker info`), else podman (installed
# with runc and mmdebstrap when missing; root). The base image debian:bookworm is pulled, or
# made locally with mmdebstrap from the machine's Debian mirror when no registry answers.
# What this machine needs is found out and applied only where needed: open-file and process
# limits the runtime may set (--ulimit), runc where crun refuses the cgroup layout, and the
# host's CA bundle (plus the pip index settings that work inside the image) as build secrets
# where HTTPS to the package index is intercepted by a local CA. Then, in the CPU image:
# `test`, `demo --quick`, `fixations` and `reproduce` on a tiny VOC-layout folder with 21-class
# weights made from the demo model (tools/make_voc_sample.py), then the `docker run` lines of
# docs/docker-gpu.md (its block marked <!-- rehearsed: docker -->: fetch-data, fetch-weights,
# gpu-check, reproduce) with the substitutions that page lists, against a loopback mirror
# (tools/make_rehearsal_mirror.py, served by python3 here); with CUDA=1, in the CUDA image:
# `fixations` and `demo --quick` (without a GPU: on the CPU). Each step's time and the image
# sizes are printed; the last line is the verdict, `docker-check: pass (...)` or
# `docker-check: FAIL: <step>: <reason>`; exit 0 only on pass.
#
# Environment: CUDA=1; CUDA_ARCH (default 90: the one architecture the CUDA image is built
# for); DOCKER_CHECK_DIR (logs and the sample data, default build/docker-check); ENGINE
# (docker or podman: skip the choice); DEBIAN_MIRROR (for mmdebstrap); CPU_TAG, CUDA_TAG.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
CUDA=${CUDA:-0}
CUDA_ARCH=${CUDA_ARCH:-90}
WORK=${DOCKER_CHECK_DIR:-$REPO/build/docker-check}
CPU_TAG=${CPU_TAG:-localhost/pixel-feedback:cpu}
CUDA_TAG=${CUDA_TAG:-localhost/pixel-feedback:cuda-sm${CUDA_ARCH// /-}}
BASE_IMAGE=docker.io/library/debian:bookworm
SAMPLE_WEIGHTS=largefov_w8_voc21.caffemodel
LOGS=$WORK/logs
mkdir -p "$LOGS" || exit 1

ENGINE=${ENGINE:-}
ENGINE_OPTS=()   # global options of the engine (podman --runtime runc)
RUN_OPTS=()      # options every `run` and `build` of this engine needs here
SECRETS=()       # build secrets (pip_cert, pip_conf)
PIP_CERT_FILE="" # the host's CA bundle, where it goes in as pip_cert
SETTINGS=()      # what was applied, for the verdict
SUMMARY=()       # "step: time" lines
T_START=$(date +%s)

say() { printf '%s\n' "$*"; }
eng() { "$ENGINE" "${ENGINE_OPTS[@]}" "$@"; }
fmt_time() { local s=$1; printf '%dm%02ds' $((s / 60)) $((s % 60)); }

fail() {  # fail STEP REASON
    say ""
    for line in "${SUMMARY[@]}"; do say "  $line"; done
    say "docker-check: FAIL: $1: $2"
    exit 1
}

# The line of a log that says what went wrong (the last error-like line, else the last line).
reason_of() {
    local log=$1 line
    line=$(grep -aE 'CERTIFICATE_VERIFY_FAILED|[0-9]+ failed|^error:|^Error:|ERROR|FAIL|[Ee]rror:|not permitted|not supported|denied' \
        "$log" 2>/dev/null | tail -n1)
    [[ -n $line ]] || line=$(grep -av '^\s*$' "$log" 2>/dev/null | tail -n1)
    line=${line//$'\r'/}
    printf '%s (log: %s)' "${line:0:300}" "$log"
}

# step NAME COMMAND...: run it with its output in $LOGS/NAME.log, print and keep its time.
step() {
    local name=$1 log="$LOGS/$1.log" t0 t1 rc
    shift
    local shown="$*"
    [[ $1 != eng ]] || shown="$ENGINE ${ENGINE_OPTS[*]}${ENGINE_OPTS[*]:+ }${*:2}"
    shown=${shown%%$'\n'*}   # a script argument: its first line only
    say "== $name: ${shown:0:240}"
    t0=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    t1=$(date +%s)
    LAST_SECONDS=$((t1 - t0))
    SUMMARY+=("$name: $(fmt_time $LAST_SECONDS) ($LAST_SECONDS s)$([[ $rc == 0 ]] || echo ", exit $rc")")
    say "   $(fmt_time $LAST_SECONDS), exit $rc (log: $log)"
    return $rc
}

image_size() {  # bytes -> "1.86 GB" (decimal, as docker and podman print them)
    local bytes
    bytes=$(eng image inspect --format '{{.Size}}' "$1" 2>/dev/null) || { echo "?"; return; }
    awk -v b="$bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }'
}

load_note() { printf 'load average %s on %s cores' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"; }

# --- the engine -------------------------------------------------------------------------

is_debian_like() {
    [[ -r /etc/os-release ]] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release
}

# The packages among "$@" that are not installed; one removed but not purged (its
# configuration left, `dpkg -s` still answers for it) counts as missing.
missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

apt_install() {  # apt_install PACKAGE...: what is missing, as root
    local missing=()
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]})) || return 0
    is_debian_like || fail engine "no Docker engine answers and this is not Debian or Ubuntu: install podman (with runc) or start Docker, then rerun"
    [[ $(id -u) == 0 ]] || fail engine "no Docker engine answers; installing ${missing[*]} needs root: run as root, or sudo apt-get install -y ${missing[*]}"
    say "installing ${missing[*]} (apt-get)"
    local name="apt-install-${missing[0]}"   # one log per install: podman's, then mmdebstrap's
    step "$name" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]}" \
        || fail "$name" "$(reason_of "$LOGS/$name.log")"
}

choose_engine() {
    if [[ -z $ENGINE ]]; then
        if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            ENGINE=docker
        else
            command -v podman >/dev/null 2>&1 || apt_install podman runc
            ENGINE=podman
        fi
    fi
    command -v "$ENGINE" >/dev/null 2>&1 || fail engine "$ENGINE is not installed"
    say "engine: $($ENGINE --version 2>/dev/null | head -n1)"
    if [[ $ENGINE == docker ]]; then
        export DOCKER_BUILDKIT=1   # RUN --mount=type=secret
        docker buildx version >/dev/null 2>&1 || say "note: without buildx, docker build may lack BuildKit (RUN --mount)"
    fi
}

# --- the base image ---------------------------------------------------------------------

debian_mirror() {  # the Debian mirror apt uses here (not the security one), else deb.debian.org
    local uri=${DEBIAN_MIRROR:-}
    [[ -n $uri ]] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v '^\s*#' | grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
    echo "${uri:-http://deb.debian.org/debian}" | sed 's:/*$::'
}

base_image() {
    if eng image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE: present"
        return
    fi
    if step pull-base timeout 120 "$ENGINE" "${ENGINE_OPTS[@]}" pull "$BASE_IMAGE"; then
        SETTINGS+=("base image pulled")
        return
    fi
    say "   no registry answers: making $BASE_IMAGE with mmdebstrap"
    command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
    [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] || apt_install debian-archive-keyring
    local mirror tar="$WORK/bookworm.tar"
    mirror=$(debian_mirror)
    step make-base bash -c "rm -f '$tar' && mmdebstrap --variant=minbase bookworm '$tar' '$mirror' && $ENGINE ${ENGINE_OPTS[*]} import '$tar' '$BASE_IMAGE' && rm -f '$tar'" \
        || fail make-base "$(reason_of "$LOGS/make-base.log")"
    SETTINGS+=("base image made with mmdebstrap from $mirror")
}

# --- what this machine needs ------------------------------------------------------------

runtime_settings() {  # probe a container; apply --ulimit / --runtime runc where refused
    local try err hard_nofile hard_nproc nproc
    for try in 1 2 3 4; do
        if err=$(eng run --rm "${RUN_OPTS[@]}" "$BASE_IMAGE" true 2>&1); then
            say "containers run$( ((${#ENGINE_OPTS[@]} + ${#RUN_OPTS[@]} == 0)) || echo " with ${ENGINE_OPTS[*]} ${RUN_OPTS[*]}")"
            return
        fi
        [[ $ENGINE == podman ]] || fail probe "a container does not start: $err"
        if grep -qiE 'rlimit' <<<"$err" && ! grep -q -- '--ulimit' <<<"${RUN_OPTS[*]}"; then
            hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
            nproc=32768
            [[ $hard_nproc == unlimited ]] || ((hard_nproc >= nproc)) || nproc=$hard_nproc
            say "   the runtime may not set podman's default limits ($(grep -oiE '[^:]*rlimit[^:]*' <<<"$err" | head -n1)): --ulimit nofile=$hard_nofile nproc=$nproc"
            RUN_OPTS+=(--ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit "nproc=$nproc:$nproc")
            SETTINGS+=("--ulimit nofile=$hard_nofile nproc=$nproc")
        elif grep -qiE 'cgroups in hybrid mode not supported|crun:' <<<"$err" && ! grep -q -- '--runtime' <<<"${ENGINE_OPTS[*]}"; then
            command -v runc >/dev/null 2>&1 || apt_install runc
            say "   crun refuses this machine's cgroups ($(head -n1 <<<"$err")): --runtime runc"
            ENGINE_OPTS+=(--runtime runc)
            SETTINGS+=("--runtime runc")
        else
            fail probe "a container does not start: $(head -n3 <<<"$err" | tr '\n' ' ')"
        fi
    done
    fail probe "a container does not start with ${ENGINE_OPTS[*]} ${RUN_OPTS[*]}"
}

# pip's index here: index-url from the host's pip configuration, else PyPI.
pip_config() { { python3 -m pip config list 2>/dev/null || pip config list 2>/dev/null; } | sed "s/'//g"; }

# Does HTTPS to the index verify with the public CAs an image has (Debian's Mozilla bundle)?
# Prints ok, intercepted (fails with them, works with the host's bundle) or a reason.
probe_index() {  # probe_index URL HOST_BUNDLE
    python3 - "$1" "$2" <<'EOF' 2>&1
import glob, ssl, sys, urllib.request
url, host_bundle = sys.argv[1], sys.argv[2]
def fetch(ctx):
    try:
        urllib.request.urlopen(url, context=ctx, timeout=30).read(64)
        return None
    except Exception as exc:
        return str(exc)
public = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
for f in glob.glob("/usr/share/ca-certificates/mozilla/*.crt"):
    public.load_verify_locations(f)
err = fetch(public)
if err is None:
    print("ok")
elif "CERTIFICATE_VERIFY_FAILED" in err:
    print("intercepted" if fetch(ssl.create_default_context(cafile=host_bundle)) is None
          else "unreachable: " + err)
else:
    print("unreachable: " + err)
EOF
}

pip_settings() {
    local config index host_bundle verdict conf="$WORK/pip.conf" kept=() dropped=() key value v
    config=$(pip_config)
    host_bundle=${PIP_CERT:-$(sed -n 's/^[^=]*\.cert=//p' <<<"$config" | head -n1)}
    [[ -r ${host_bundle:-} ]] || host_bundle=/etc/ssl/certs/ca-certificates.crt
    index=$(sed -n 's/^[^=]*\.index-url=//p' <<<"$config" | grep -E '^https?://' | head -n1)
    index=${index:-https://pypi.org/simple/}
    if ! command -v python3 >/dev/null 2>&1; then
        say "pip: no python3 here to probe $index; building without a CA secret"
        return
    fi
    if [[ ! -d /usr/share/ca-certificates/mozilla ]]; then
        say "pip: no public CA list (/usr/share/ca-certificates/mozilla) to probe with; passing the host's CA bundle"
        verdict=intercepted
    else
        verdict=$(probe_index "${index%/}/pip/" "$host_bundle" | tail -n1)
    fi
    case $verdict in
        ok) say "pip: $index verifies with the public CAs: no secrets" ;;
        intercepted)
            say "pip: HTTPS to $index is intercepted by a local CA: the host's bundle $host_bundle goes in as build secret pip_cert"
            SECRETS+=(--secret "id=pip_cert,src=$host_bundle")
            PIP_CERT_FILE=$host_bundle
            SETTINGS+=("CA bundle as build secret") ;;
        *) say "pip: $index: $verdict (the build will need it; trying anyway)" ;;
    esac
    # The host's pip settings that mean something inside the image: indexes and hosts on the
    # network. Local paths (find-links folders, file:// indexes, a constraint file) do not
    # exist there and are left out; the CA goes in as its own secret.
    while IFS='=' read -r key value; do
        [[ -n $key ]] || continue
        key=${key#*.}
        case $key in
            index-url|extra-index-url|trusted-host|proxy|timeout|default-timeout|retries)
                local good=()
                for v in $value; do
                    if [[ $v == /* || $v == file:* ]]; then dropped+=("$key=$v"); else good+=("$v"); fi
                done
                ((${#good[@]})) && kept+=("$key = ${good[*]}") ;;
            cert) ;;   # the CA: its own secret, where needed
            *) for v in $value; do [[ $v == /* || $v == file:* ]] && dropped+=("$key=$v"); done ;;
        esac
    done <<<"$config"
    ((${#dropped[@]})) && say "pip: left out (local to this machine): $(printf '%s\n' "${dropped[@]}" | sort -u | tr '\n' ' ')"
    if printf '%s\n' "${kept[@]}" | grep -qE '^(index-url|extra-index-url|trusted-host|proxy) '; then
        printf '[global]\n' >"$conf"
        printf '%s\n' "${kept[@]}" | sort -u >>"$conf"
        say "pip: index settings as build secret pip_conf: $(tail -n +2 "$conf" | tr '\n' ';')"
        SECRETS+=(--secret "id=pip_conf,src=$conf")
        SETTINGS+=("pip index settings as build secret")
    else
        say "pip: no index settings to pass: the image's pip uses PyPI"
    fi
}

# --- building and running ---------------------------------------------------------------

build() {  # build NAME DOCKERFILE TAG [ARGS...]
    local name=$1 file=$2 tag=$3
    shift 3
    step "$name" eng build "${RUN_OPTS[@]}" "${SECRETS[@]}" "$@" -f "$file" -t "$tag" . \
        || fail "$name" "$(reason_of "$LOGS/$name.log")"
}

in_image() {  # in_image IMAGE [RUN OPTIONS...] -- ENTRYPOINT ARGS...
    local image=$1 opts=()
    shift
    while [[ $# -gt 0 && $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    eng run --rm "${RUN_OPTS[@]}" "${opts[@]}" "$image" "$@"
}

# Nothing of the build machine stays in an image: no pip configuration, no file of the
# secrets (under /run/secrets or as a copy of the host's CA bundle anywhere).
check_clean() {  # check_clean NAME IMAGE
    local name=$1 image=$2 host_sum=""
    [[ -z $PIP_CERT_FILE ]] || host_sum=$(sha256sum "$PIP_CERT_FILE" | cut -c1-64)
    step "$name" in_image "$image" --entrypoint bash -- -c '
        bad=0
        for f in /etc/pip.conf /etc/host-ca.crt /etc/xdg/pip /root/.config/pip /root/.pip \
                 /workspace/.venv/pip.conf /root/.cache/pip; do
            [ -e "$f" ] && { echo "left in the image: $f"; ls -la "$f"; bad=1; }
        done
        if [ -d /run/secrets ] && [ -n "$(ls -A /run/secrets)" ]; then
            echo "left in the image: /run/secrets/$(ls -A /run/secrets)"; bad=1
        fi
        conf=$(/workspace/.venv/bin/python -m pip config list 2>&1)
        [ -z "$conf" ] || { echo "pip configuration in the image: $conf"; bad=1; }
        if [ -n "$1" ]; then
            for f in $(find / -xdev -type f \( -name "*.crt" -o -name "*.pem" \) 2>/dev/null); do
                [ "$(sha256sum "$f" | cut -c1-64)" = "$1" ] && { echo "error: the host CA bundle is in the image: $f"; bad=1; }
            done
        fi
        [ $bad = 0 ] && echo "clean: no pip configuration, no host CA bundle, /run/secrets empty or absent"
        exit $bad' _ "$host_sum" </dev/null \
        || fail "$name" "$(reason_of "$LOGS/$name.log")"
    sed 's/^/   /' "$LOGS/$name.log"
}

# The docs' `docker run` lines: docs/docker-gpu.md's block marked <!-- rehearsed: docker -->,
# with only the substitutions that page lists (pixelfeedback/doc_rehearsal.py writes the
# script), run here in a scratch folder against the rehearsal mirror (made in the image,
# served on this machine's loopback); the results must then be in the scratch folder.
docs_rehearsal() {  # docs_rehearsal IMAGE
    local image=$1 dir=$WORK/docs-rehearsal port server rc file
    rm -rf "$dir" && mkdir -p "$dir/mirror" "$dir/work" || fail docs-mirror "cannot make $dir"
    step docs-mirror in_image "$image" -v "$dir/mirror:/out" -- \
            python tools/make_rehearsal_mirror.py --out /out \
        || fail docs-mirror "$(reason_of "$LOGS/docs-mirror.log")"
    command -v python3 >/dev/null 2>&1 \
        || fail docs-rehearsal "python3 is needed here to serve the mirror and write the script"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server --bind 127.0.0.1 --directory "$dir/mirror" "$port" \
        >"$LOGS/docs-mirror-server.log" 2>&1 &
    server=$!
    sleep 1
    if ! PYTHONPATH=$REPO python3 tools/rehearse_docs.py --kind docker --print-only \
            --set "mirror=http://127.0.0.1:$port" --set "engine=$ENGINE ${ENGINE_OPTS[*]}" \
            --set "run_options=${RUN_OPTS[*]}" --set "image=$image" \
            >"$dir/docker.sh" 2>"$LOGS/docs-script.log"; then
        kill "$server" 2>/dev/null
        fail docs-script "$(reason_of "$LOGS/docs-script.log")"
    fi
    step docs-rehearsal bash -c "cd '$dir/work' && bash '$dir/docker.sh'"
    rc=$?
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
    ((rc == 0)) || fail docs-rehearsal "$(reason_of "$LOGS/docs-rehearsal.log")"
    for file in data/lists/train_aug.txt weights/checksums.json runs/gpu-check/gpu_check.md \
                runs/table31/table31.md; do
        [[ -s $dir/work/$file ]] || fail docs-rehearsal "$file is not in the host's folder after the rehearsal (log: $LOGS/docs-rehearsal.log)"
    done
    expect_in_log docs-rehearsal '^\| cosine \| 0\.1 ' "the rehearsed reproduce printed no table row for cosine"
}

expect_in_log() {  # expect_in_log STEP PATTERN WHAT: fail unless the log has it; show it
    grep -qE "$2" "$LOGS/$1.log" || fail "$1" "$3 (log: $LOGS/$1.log)"
    grep -E "$2" "$LOGS/$1.log" | tail -n 3 | sed 's/^/   /'
}

main() {
    say "docker-check: $(date -u '+%Y-%m-%d %H:%M UTC'), $(load_note), CUDA=$CUDA"
    choose_engine
    base_image
    [[ $ENGINE == podman ]] && runtime_settings
    pip_settings
    if [[ ${1:-} == --settings-only ]]; then
        local applied="none"
        ((${#SETTINGS[@]})) && applied=$(IFS=';'; echo "${SETTINGS[*]}" | sed 's/;/; /g')
        say "docker-check: settings only ($ENGINE; settings: $applied)"
        exit 0
    fi

    build build-cpu docker/Dockerfile.cpu "$CPU_TAG"
    local cpu_build=$LAST_SECONDS
    say "   $CPU_TAG: $(image_size "$CPU_TAG")"
    check_clean clean-cpu "$CPU_TAG"

    step cpu-test in_image "$CPU_TAG" -- test -q -p no:cacheprovider \
        || fail cpu-test "$(reason_of "$LOGS/cpu-test.log")"
    expect_in_log cpu-test '^[0-9]+ passed' "pytest reported no passed tests"
    step cpu-demo-quick in_image "$CPU_TAG" -- demo --quick \
        || fail cpu-demo-quick "$(reason_of "$LOGS/cpu-demo-quick.log")"
    expect_in_log cpu-demo-quick '^report: .*report\.md' "demo --quick wrote no report"
    step cpu-fixations in_image "$CPU_TAG" -- fixations \
        || fail cpu-fixations "$(reason_of "$LOGS/cpu-fixations.log")"
    sed 's/^/   /' "$LOGS/cpu-fixations.log" | tail -n 3

    local sample=$WORK/voc-sample
    rm -rf "$sample" && mkdir -p "$sample"
    step cpu-voc-sample in_image "$CPU_TAG" -v "$sample:/out" -- \
            python tools/make_voc_sample.py --out /out --train 8 --val 4 \
        || fail cpu-voc-sample "$(reason_of "$LOGS/cpu-voc-sample.log")"
    step cpu-reproduce in_image "$CPU_TAG" -v "$sample/VOCdevkit:/data/VOCdevkit:ro" \
            -v "$sample/weights:/data/weights:ro" -- \
            reproduce --width-div 8 --num-classes 21 --iterations 4 --snapshot-every 4 \
            --batch-size 2 --seeds 0 --losses cosine --lambdas 0.1 --crop 129 --test-size 129 \
            --init-weights "/data/weights/$SAMPLE_WEIGHTS" --out /tmp/table31 \
        || fail cpu-reproduce "$(reason_of "$LOGS/cpu-reproduce.log")"
    expect_in_log cpu-reproduce '^\| cosine \| 0\.1 ' "reproduce printed no table row for cosine"
    docs_rehearsal "$CPU_TAG"

    local verdict="CPU image $(image_size "$CPU_TAG"), built in $(fmt_time "$cpu_build"); test, demo --quick, fixations, reproduce, the docs' docker run lines passed"
    if [[ $CUDA == 1 ]]; then
        build build-cuda docker/Dockerfile "$CUDA_TAG" --build-arg "CUDA_ARCH=$CUDA_ARCH"
        local cuda_build=$LAST_SECONDS
        say "   $CUDA_TAG: $(image_size "$CUDA_TAG")"
        check_clean clean-cuda "$CUDA_TAG"
        step cuda-fixations in_image "$CUDA_TAG" -- fixations \
            || fail cuda-fixations "$(reason_of "$LOGS/cuda-fixations.log")"
        step cuda-demo-quick in_image "$CUDA_TAG" -- demo --quick \
            || fail cuda-demo-quick "$(reason_of "$LOGS/cuda-demo-quick.log")"
        expect_in_log cuda-demo-quick '^report: .*report\.md' "demo --quick wrote no report"
        if ! in_image "$CUDA_TAG" --entrypoint bash -- -c 'command -v nvidia-smi >/dev/null && nvidia-smi -L' >/dev/null 2>&1; then
            expect_in_log cuda-fixations '^no GPU visible: running on the CPU' "the CUDA image without a GPU did not say so"
            ! grep -q 'Cublas' "$LOGS/cuda-fixations.log" "$LOGS/cuda-demo-quick.log" \
                || fail cuda-fixations "Caffe's Cublas message came through"
        fi
        verdict+="; CUDA image (sm_$CUDA_ARCH) $(image_size "$CUDA_TAG"), built in $(fmt_time "$cuda_build"); fixations, demo --quick passed"
    fi

    say ""
    say "steps (logs in $LOGS):"
    for line in "${SUMMARY[@]}"; do say "  $line"; done
    say "images: $CPU_TAG $(image_size "$CPU_TAG")$([[ $CUDA == 1 ]] && echo ", $CUDA_TAG $(image_size "$CUDA_TAG")")"
    say "total $(fmt_time $(($(date +%s) - T_START))); $(load_note) at the end"
    local applied="none"
    ((${#SETTINGS[@]})) && applied=$(IFS=';'; echo "${SETTINGS[*]}" | sed 's/;/; /g')
    say "docker-check: pass ($ENGINE; settings: $applied; $verdict)"
}

# Sourced (tests), it defines the functions only.
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
