#!/usr/bin/env bash
# The project's one recipe for BVLC Caffe: the local setup (make setup), the tests and
# both Docker images run it. It installs the Debian build dependencies, fetches the
# pinned BVLC source (Debian's `caffe` source package), verifies its sha256, applies the
# package's patches, builds with CMake (CPU-only, or CUDA with --cuda) with the Python
# layer on, installs into a prefix, links a virtual environment to it and self-checks.
# A CUDA build takes its toolkit from pinned PyPI wheels (CUDA 13.0) unless --cuda-home
# names a system toolkit (CUDA 11 to 13), fails unless CMake really found CUDA and
# libcaffe.so links libcudart, and can also build Caffe's own test binary (--with-tests).
# Every step is skipped when its result is already in place, so a second run takes
# seconds; a prefix counts as built only once its stamp is written, after the install.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The pinned source (../shared/SPEC.md section 1). These sums are the only trust root.
CAFFE_DEB_VERSION="1.0.0+git20180821.99bd997-8"
CAFFE_ORIG="caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
CAFFE_ORIG_SHA256="e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
CAFFE_DEBIAN="caffe_${CAFFE_DEB_VERSION}.debian.tar.xz"
CAFFE_DEBIAN_SHA256="07cf073227494a6b07234e40cb5df91db566616593eef9baafdc4d06ad159f21"
# Bump when the build configuration below changes, so cached prefixes are rebuilt.
RECIPE_VERSION=2
# Bump when only the CUDA configuration changes (CPU prefixes stay valid).
CUDA_RECIPE_VERSION=1

# The CUDA toolkit of --cuda without --cuda-home: PyPI's CUDA 13.0 wheels, each pinned by
# version and sha256 (the nvcc wheel does not pin its siblings). Together they hold nvcc,
# cicc, ptxas, fatbinary, nvlink, the headers, cudart, cuBLAS and cuRAND (about 585 MB).
CUDA_WHEELS_VERSION=13.0
CUDA_WHEELS=(
    "nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
    "nvidia-nvvm==13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
    "nvidia-cuda-crt==13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
    "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
    "nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
    "nvidia-curand==10.4.0.35 1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc"
    "nvidia-cublas==13.0.2.14 0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"
)
CUDA_PATCHES=(cuda-device-properties.patch)  # in docker/patches/, applied to CUDA builds
# The wheels' toolkit and --cached prefixes go here, outside the clone.
CACHE_ROOT="${PIXELFEEDBACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pixelfeedback}"

BUILD_DEPS=(build-essential cmake pkg-config patch xz-utils libprotobuf-dev protobuf-compiler
    libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-dev
    libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-python-dev
    python3-dev python3-venv)
# Extra packages to require, for example in tests of the missing-package message.
read -r -a EXTRA_DEPS <<<"${CAFFE_EXTRA_DEPS:-}"

PYTHON_MIN=3.8   # numpy 1.x wheels exist from here ...
PYTHON_MAX=3.12  # ... to here; pycaffe needs numpy < 2.

usage() {
    cat <<EOF
usage: docker/build_caffe.sh [COMMAND] [OPTIONS]

Builds BVLC Caffe $CAFFE_DEB_VERSION (Debian's source package) with pycaffe and the
Python layer, and links it into a virtual environment. Each step is skipped when done.

commands:
  all            (default) deps, venv, fetch, build, link, check
  deps           install the Debian build dependencies (apt-get)
  fetch DIR      download the two source tarballs into DIR and verify their sha256
  verify DIR     verify the sha256 of the tarballs already in DIR
  build          fetch (unless --source-dir) and build into the prefix
  check          self-check an installed prefix
  toolkit        install the pinned CUDA $CUDA_WHEELS_VERSION wheels (see --cuda) and print its folder
  recipe-hash    print the hash of everything that shapes the build for these options
  prefix         print the prefix these options build into (see --cached)

options:
  --prefix DIR       install prefix (default: $REPO/build/caffe)
  --workdir DIR      source and build trees (default: $REPO/build)
  --source-dir DIR   use the tarballs in DIR instead of downloading them
  --venv DIR         virtual environment to create and link (default: $REPO/.venv;
                     'none' to skip)
  --python PY        interpreter for the venv and pycaffe (default: python3)
  --cuda             CUDA build (default: CPU only); its toolkit is --cuda-home, else
                     PyPI's CUDA $CUDA_WHEELS_VERSION wheels installed into --toolkit-dir
  --cuda-home DIR    a system CUDA toolkit, 11.0 to 13.x (DIR/bin/nvcc)
  --toolkit-dir DIR  where the wheels' toolkit goes
                     (default: $CACHE_ROOT/cuda-$CUDA_WHEELS_VERSION-<hash of the pins>)
  --cuda-arch LIST   CUDA compute capabilities (default per CUDA version:
                     13.x "75 80 86 89 90", 12.x and 11.8 "70 75 80 86 89 90",
                     11.1-11.7 "70 75 80 86", 11.0 "70 75 80")
  --with-tests       also build Caffe's own test binary, installed as PREFIX/bin/caffe-tests
  --cached           prefix and workdir in $CACHE_ROOT/, named by recipe-hash
                     (a machine that built this recipe once finds it there; 'make test')
  --jobs N           parallel build jobs (default: all cores)
  --no-install       never run apt-get; fail with the list of what is missing
  -h, --help         this text
EOF
}

die() { printf 'build_caffe.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

COMMAND=all
SOURCE_ARG=""
PREFIX="$REPO/build/caffe"
WORKDIR="$REPO/build"
SOURCE_DIR=""
VENV="$REPO/.venv"
PYTHON=python3
CUDA=0
CUDA_ARCH=""
CUDA_HOME_ARG=""
TOOLKIT_DIR=""
WITH_TESTS=0
CACHED=0
JOBS=$(nproc 2>/dev/null || echo 2)
NO_INSTALL=0

parse_args() {
    if [[ $# -gt 0 && $1 != -* ]]; then
        COMMAND=$1; shift
        case $COMMAND in
            fetch|verify) [[ $# -gt 0 && $1 != -* ]] || die "'$COMMAND' needs a folder: docker/build_caffe.sh $COMMAND DIR"
                          SOURCE_ARG=$1; shift ;;
            all|deps|build|check|toolkit|recipe-hash|prefix) ;;
            *) die "unknown command '$COMMAND' (see --help)" ;;
        esac
    fi
    while [[ $# -gt 0 ]]; do
        case $1 in
            --prefix) PREFIX=$2; shift 2 ;;
            --workdir) WORKDIR=$2; shift 2 ;;
            --source-dir) SOURCE_DIR=$2; shift 2 ;;
            --venv) VENV=$2; shift 2 ;;
            --python) PYTHON=$2; shift 2 ;;
            --cuda) CUDA=1; shift ;;
            --cuda-arch) CUDA_ARCH=$2; shift 2 ;;
            --cuda-home) CUDA_HOME_ARG=$2; shift 2 ;;
            --toolkit-dir) TOOLKIT_DIR=$2; shift 2 ;;
            --with-tests) WITH_TESTS=1; shift ;;
            --cached) CACHED=1; shift ;;
            --jobs) JOBS=$2; shift 2 ;;
            --no-install) NO_INSTALL=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
    [[ $PREFIX = /* ]] || PREFIX="$PWD/$PREFIX"
    [[ $WORKDIR = /* ]] || WORKDIR="$PWD/$WORKDIR"
    [[ $VENV = none || $VENV = /* ]] || VENV="$PWD/$VENV"
    # A relative interpreter path would not survive CMake's cd into the build tree.
    [[ $PYTHON != */* || $PYTHON = /* ]] || PYTHON="$PWD/$PYTHON"
    [[ -z $CUDA_HOME_ARG || $CUDA_HOME_ARG = /* ]] || CUDA_HOME_ARG="$PWD/$CUDA_HOME_ARG"
    [[ -z $TOOLKIT_DIR || $TOOLKIT_DIR = /* ]] || TOOLKIT_DIR="$PWD/$TOOLKIT_DIR"
    [[ -n $TOOLKIT_DIR ]] || TOOLKIT_DIR="$CACHE_ROOT/cuda-$CUDA_WHEELS_VERSION-$(wheel_pins_hash)"
}

# --- Python ---------------------------------------------------------------------------

python_version() {  # major.minor of $1, or a clear error
    local py=$1 ver
    command -v "$py" >/dev/null 2>&1 || die "Python interpreter '$py' not found; install python3 or pass --python /path/to/python3.X"
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
        || die "could not run '$py' to read its version"
    [[ $ver =~ ^[0-9]+\.[0-9]+$ ]] || die "'$py' reported an unreadable version '$ver'"
    echo "$ver"
}

version_le() { [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1) == "$1" ]]; }

check_python_supported() {
    local ver=$1
    if ! version_le "$PYTHON_MIN" "$ver"; then
        die "Python $ver ('$PYTHON') is too old for this build: pycaffe needs numpy < 2, which needs Python $PYTHON_MIN to $PYTHON_MAX. Pass --python with a newer interpreter."
    fi
    if ! version_le "$ver" "$PYTHON_MAX"; then
        die "Python $ver ('$PYTHON') is too new for this build: pycaffe needs numpy < 2, which has no release for Python $ver (supported: $PYTHON_MIN to $PYTHON_MAX). Pass --python with an older interpreter, e.g. --python python3.11."
    fi
}

# --- Debian packages ------------------------------------------------------------------

missing_packages() {
    local p
    for p in "${BUILD_DEPS[@]}" "${EXTRA_DEPS[@]}"; do
        [[ -n $p ]] || continue
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

step_deps() {
    command -v dpkg-query >/dev/null 2>&1 || die "this script installs its build dependencies with apt on Debian or Ubuntu; dpkg-query was not found"
    local missing
    missing=$(missing_packages | tr '\n' ' ')
    if [[ -z ${missing// } ]]; then
        say "Debian build dependencies present"
        return
    fi
    if [[ $NO_INSTALL = 1 || $(id -u) != 0 ]]; then
        die "missing Debian packages: $missing
       install them with: sudo apt-get install -y $missing
       (or run this script as root without --no-install)"
    fi
    say "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed; check the machine's apt sources"
    local log
    log=$(mktemp)
    # shellcheck disable=SC2086
    if ! apt-get install -y -qq --no-install-recommends $missing >"$log" 2>&1; then
        local still
        still=$(missing_packages | tr '\n' ' ')
        tail -n 5 "$log" >&2
        die "apt-get could not install: $still
       check the names with: apt-cache policy $still"
    fi
    rm -f "$log"
}

# --- The virtual environment ----------------------------------------------------------

step_venv() {
    [[ $VENV != none ]] || return 0
    local ver req_hash
    ver=$(python_version "$PYTHON")
    check_python_supported "$ver"
    if [[ ! -x $VENV/bin/python ]]; then
        say "creating virtual environment $VENV (Python $ver)"
        "$PYTHON" -m venv "$VENV" || die "could not create a virtual environment with '$PYTHON'; on Debian install python3-venv"
    fi
    req_hash=$(sha256sum "$REPO/requirements.txt" | cut -c1-16)
    if [[ $(cat "$VENV/.requirements-installed" 2>/dev/null) != "$req_hash" ]]; then
        say "installing Python requirements into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install -q -r "$REPO/requirements.txt" \
            || die "pip could not install $REPO/requirements.txt into $VENV"
        # caffe_pb2.py made by a protoc older than 3.19 (Ubuntu 22.04 has 3.12) needs the
        # protobuf 3.20 runtime; Debian 12's protoc 3.21 matches the pinned 4.21.
        local protoc_version
        protoc_version=$(protoc --version 2>/dev/null | awk '{print $2}')
        if [[ -n $protoc_version ]] && ! version_le 3.19 "$protoc_version"; then
            say "protoc $protoc_version is older than 3.19: using the protobuf 3.20 Python runtime"
            "$VENV/bin/python" -m pip install -q 'protobuf==3.20.3' || die "pip could not install protobuf==3.20.3"
        fi
        echo "$req_hash" >"$VENV/.requirements-installed"
    else
        say "Python requirements present in $VENV"
    fi
    PYTHON="$VENV/bin/python"
}

# --- The CUDA toolkit -------------------------------------------------------------------

wheel_pins_hash() { printf '%s\n' "${CUDA_WHEELS[@]}" | sha256sum | cut -c1-12; }

step_toolkit() {  # install the pinned wheels into $TOOLKIT_DIR (a CUDA_TOOLKIT_ROOT_DIR)
    if [[ -f $TOOLKIT_DIR/.toolkit-stamp && $(cat "$TOOLKIT_DIR/.toolkit-stamp") == "$(wheel_pins_hash)" ]]; then
        say "CUDA $CUDA_WHEELS_VERSION toolkit present at $TOOLKIT_DIR"
        return
    fi
    "$PYTHON" -m pip --version >/dev/null 2>&1 \
        || die "'$PYTHON' has no pip to install the CUDA $CUDA_WHEELS_VERSION wheels; pass --python with a venv's python, or --cuda-home with a system CUDA toolkit"
    local tmp req pin
    mkdir -p "$(dirname "$TOOLKIT_DIR")"
    tmp=$(mktemp -d "$TOOLKIT_DIR.partial.XXXXXX")
    req=$tmp/requirements.txt
    for pin in "${CUDA_WHEELS[@]}"; do echo "${pin% *} --hash=sha256:${pin##* }"; done >"$req"
    say "installing the CUDA $CUDA_WHEELS_VERSION toolkit from PyPI (${#CUDA_WHEELS[@]} pinned wheels, about 585 MB) into $TOOLKIT_DIR"
    "$PYTHON" -m pip install -q --no-deps --require-hashes --only-binary=:all: --no-compile \
            --target "$tmp/site" -r "$req" \
        || { rm -rf "$tmp"; die "pip could not install the pinned CUDA $CUDA_WHEELS_VERSION wheels (a sha256 mismatch means a file that is not the pinned release); check the network, or pass --cuda-home with a system CUDA toolkit"; }
    local root=$tmp/site/nvidia/cu${CUDA_WHEELS_VERSION%%.*}
    [[ -x $root/bin/nvcc && -x $root/nvvm/bin/cicc ]] || { rm -rf "$tmp"; die "the CUDA wheels did not contain bin/nvcc and nvvm/bin/cicc under $root"; }
    # FindCUDA looks in lib64 and for unversioned libraries.
    ln -s lib "$root/lib64"
    local lib real
    for lib in cudart cublas cublasLt curand; do
        real=$(cd "$root/lib" && ls "lib$lib.so."* 2>/dev/null | head -n1)
        [[ -n $real ]] || { rm -rf "$tmp"; die "the CUDA wheels have no lib$lib.so.* in $root/lib"; }
        ln -sf "$real" "$root/lib/lib$lib.so"
    done
    rm -rf "$TOOLKIT_DIR"
    mv "$root" "$TOOLKIT_DIR"
    rm -rf "$tmp"
    wheel_pins_hash >"$TOOLKIT_DIR/.toolkit-stamp"
    say "CUDA $CUDA_WHEELS_VERSION toolkit installed at $TOOLKIT_DIR"
}

cuda_home() {  # the toolkit of this build: --cuda-home, else the wheels' folder
    if [[ -n $CUDA_HOME_ARG ]]; then echo "$CUDA_HOME_ARG"; else echo "$TOOLKIT_DIR"; fi
}

cuda_version() {  # major.minor of the toolkit in $1
    local nvcc=$1/bin/nvcc ver
    [[ -x $nvcc ]] || die "no nvcc at $nvcc; --cuda-home must name a CUDA toolkit folder (the one holding bin/nvcc), or leave it out to use the pinned CUDA $CUDA_WHEELS_VERSION wheels"
    ver=$({ "$nvcc" --version 2>/dev/null || true; } | grep -oE 'release [0-9]+\.[0-9]+' | head -n1 | cut -d' ' -f2 || true)
    [[ -n $ver ]] || die "could not read the CUDA version from '$nvcc --version'"
    echo "$ver"
}

cuda_arch_range() {  # lowest and highest compute capability nvcc of CUDA $1 accepts
    case $1 in
        13.*) echo "75 121" ;;
        12.[89]) echo "50 120" ;;
        12.*) echo "50 90" ;;
        11.8) echo "35 90" ;;
        11.0) echo "35 80" ;;
        11.*) echo "35 86" ;;
        *) die "CUDA $1 is not supported by this recipe (CUDA 11.0 to 13.x); pass --cuda-home with such a toolkit, or leave it out to use the pinned CUDA $CUDA_WHEELS_VERSION wheels" ;;
    esac
}

cuda_default_arch() {  # the GPUs a build for CUDA $1 serves by default
    case $1 in
        13.*) echo "75 80 86 89 90" ;;
        12.*|11.8) echo "70 75 80 86 89 90" ;;
        11.0) echo "70 75 80" ;;
        *) echo "70 75 80 86" ;;
    esac
}

resolve_cuda_arch() {  # sets CUDA_ARCH for CUDA version $1, or fails on an invalid one
    local ver=$1 range lo hi arch
    range=$(cuda_arch_range "$ver")
    lo=${range% *}; hi=${range#* }
    [[ -n $CUDA_ARCH ]] || CUDA_ARCH=$(cuda_default_arch "$ver")
    for arch in $CUDA_ARCH; do
        [[ $arch =~ ^[0-9]+$ ]] || die "--cuda-arch: '$arch' is not a compute capability like 75 or 90"
        if (( arch < lo || arch > hi )); then
            die "--cuda-arch: compute capability $arch is not supported by CUDA $ver (it takes $lo to $hi); pass --cuda-arch with values in that range"
        fi
    done
}

# --- Source ---------------------------------------------------------------------------

debian_mirror() {  # the machine's own Debian mirror, from its apt configuration
    if [[ -n ${CAFFE_DEBIAN_MIRROR:-} ]]; then echo "$CAFFE_DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE '(https?|mirror\+[a-z]+)://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
    [[ -n $uri ]] || die "no Debian mirror found in /etc/apt; set CAFFE_DEBIAN_MIRROR=http://deb.debian.org/debian (or your mirror), or fetch the source on a Debian machine with 'docker/build_caffe.sh fetch DIR' and pass --source-dir DIR"
    echo "${uri%/}"
}

verify_sources() {
    local dir=$1 file want got
    for pair in "$CAFFE_ORIG:$CAFFE_ORIG_SHA256" "$CAFFE_DEBIAN:$CAFFE_DEBIAN_SHA256"; do
        file=${pair%%:*}; want=${pair##*:}
        [[ -f $dir/$file ]] || die "source tarball $dir/$file is missing; run 'docker/build_caffe.sh fetch $dir'"
        got=$(sha256sum "$dir/$file" | cut -d' ' -f1)
        if [[ $got != "$want" ]]; then
            die "checksum mismatch for $dir/$file
       expected sha256 $want
       got      sha256 $got
       the file is corrupt or not the pinned release; delete it and run 'docker/build_caffe.sh fetch $dir' again"
        fi
    done
    say "source tarballs verified (sha256)"
}

step_fetch() {
    local dir=$1
    mkdir -p "$dir"
    if [[ -f $dir/$CAFFE_ORIG && -f $dir/$CAFFE_DEBIAN ]]; then
        verify_sources "$dir"; return
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get is needed to fetch Debian's caffe source package; fetch it on a Debian machine with 'docker/build_caffe.sh fetch DIR' and pass --source-dir DIR"
    local mirror apt_dir signed opts
    mirror=$(debian_mirror)
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial"
    # The archive key is checked when present; the pinned sha256 sums are checked always.
    signed="trusted=yes"
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] && signed="signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
    echo "deb-src [$signed] $mirror bullseye main" >"$apt_dir/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$apt_dir/lists" -o "APT::Sandbox::User=root")
    say "fetching Debian source package caffe=$CAFFE_DEB_VERSION from $mirror (bullseye)"
    apt-get "${opts[@]}" update -qq || die "could not read the bullseye source index from $mirror; check the network or set CAFFE_DEBIAN_MIRROR"
    (cd "$dir" && apt-get "${opts[@]}" source --download-only -qq "caffe=$CAFFE_DEB_VERSION") \
        || die "could not download caffe=$CAFFE_DEB_VERSION from $mirror"
    rm -rf "$apt_dir" "$dir"/*.dsc
    verify_sources "$dir"
}

# --- Build ----------------------------------------------------------------------------

stamp_text() {  # what a prefix was built from; $1 the Python version, $2 the CUDA toolkit
    local text="recipe=$RECIPE_VERSION orig=$CAFFE_ORIG_SHA256 debian=$CAFFE_DEBIAN_SHA256 python=$1 cuda=$CUDA"
    if [[ $CUDA = 1 ]]; then
        text+=" cuda_recipe=$CUDA_RECIPE_VERSION toolkit=$2 arch=${CUDA_ARCH// /,} tests=$WITH_TESTS"
    else
        text+=" arch=70,75,80,86,89,90"  # the CPU stamp as recipe 2 wrote it: CPU prefixes stay valid
    fi
    echo "$text"
}

recipe_hash() {  # what shapes the build: the stamp, the build functions, the patches
    {
        stamp_text "$@"
        declare -f prepare_tree configure_args build_targets check_cuda_linked
        [[ $CUDA = 0 ]] || (cd "$REPO/docker/patches" && cat "${CUDA_PATCHES[@]}")
    } | sha256sum | cut -c1-16
}

cuda_toolkit_id() {  # names the toolkit in the stamp: the wheels' pins, or the system's version
    if [[ -n $CUDA_HOME_ARG ]]; then echo "system-$1"; else echo "wheels-$(wheel_pins_hash)"; fi
}

prepare_tree() {  # unpack, patch and adapt the source in $1 from the tarballs in $2
    local src=$1 tarballs=$2
    rm -rf "$src"; mkdir -p "$src"
    tar -xzf "$tarballs/$CAFFE_ORIG" -C "$src"
    tar -xJf "$tarballs/$CAFFE_DEBIAN" -C "$src"
    local patch
    while read -r patch; do
        [[ -z $patch || $patch == \#* ]] && continue
        patch -d "$src" -p1 --quiet --forward <"$src/debian/patches/$patch" || die "Debian patch $patch did not apply"
    done <"$src/debian/patches/series"
    # protobuf >= 3.14 (Debian 12 has 3.21) takes one argument here.
    sed -i 's/SetTotalBytesLimit(kProtoReadBytesLimit, 536870912)/SetTotalBytesLimit(kProtoReadBytesLimit)/' \
        "$src/src/caffe/util/io.cpp"
    # Upstream CMake gives WITH_PYTHON_LAYER (and Python's headers) to libcaffe only, so
    # the caffe tool is compiled without its `catch (error_already_set) { PyErr_Print(); }`
    # and a Python layer's exception ends in a bare `terminate`. Make them PUBLIC.
    sed -i -e 's/PRIVATE -DWITH_PYTHON_LAYER/PUBLIC -DWITH_PYTHON_LAYER/' \
        -e 's/PRIVATE ${PYTHON_INCLUDE_DIRS} ${NUMPY_INCLUDE_DIR} PUBLIC/PUBLIC ${PYTHON_INCLUDE_DIRS} ${NUMPY_INCLUDE_DIR}/' \
        -e 's/PRIVATE ${PYTHON_LIBRARIES} PUBLIC/PUBLIC ${PYTHON_LIBRARIES}/' \
        "$src/cmake/Dependencies.cmake"
    grep -q 'PUBLIC -DWITH_PYTHON_LAYER' "$src/cmake/Dependencies.cmake" \
        || die "could not make WITH_PYTHON_LAYER public in cmake/Dependencies.cmake"
    if [[ $CUDA = 1 ]]; then
        for patch in "${CUDA_PATCHES[@]}"; do
            patch -d "$src" -p1 --quiet --forward <"$REPO/docker/patches/$patch" \
                || die "CUDA patch docker/patches/$patch did not apply"
        done
    fi
}

configure_args() {  # CMake's arguments, one a line; the CUDA ones for the toolkit in $1
    local home=$1
    if [[ $CUDA = 0 ]]; then
        echo "-DCPU_ONLY=ON"
        return
    fi
    printf '%s\n' -DCPU_ONLY=OFF -DCUDA_TOOLKIT_ROOT_DIR="$home" \
        -DCUDA_USE_STATIC_CUDA_RUNTIME=OFF -DCUDA_ARCH_NAME=Manual \
        -DCUDA_ARCH_BIN="$CUDA_ARCH" -DCUDA_ARCH_PTX="${CUDA_ARCH##* }"
    # The nvcc of CUDA 13 hides device entities and makes template stubs static by
    # default; Caffe's test binary (kernels instantiated across objects) links only with
    # the old behaviour. Older nvcc lack (and need not) these flags.
    local help  # read whole: with pipefail, `nvcc --help | grep -q` fails on SIGPIPE
    help=$("$home/bin/nvcc" --help 2>/dev/null || true)
    if [[ $help == *-static-global-template-stub* ]]; then
        echo "-DCUDA_NVCC_FLAGS=-static-global-template-stub=false;-device-entity-has-hidden-visibility=false"
    fi
}

build_targets() {  # the make targets: the library, the tool, pycaffe (and the tests)
    echo caffe caffe.bin pycaffe
    [[ $WITH_TESTS = 0 ]] || echo test.testbin
}

check_cuda_linked() {  # a CUDA build must link libcudart; CMake can silently fall back to CPU
    local lib=$1/lib/libcaffe.so
    [[ -f $lib ]] || die "no $lib"
    readelf -d "$lib" | grep -q 'NEEDED.*libcudart' \
        || die "$lib does not link libcudart: this is not a CUDA build; rebuild with 'docker/build_caffe.sh --cuda' and read its cmake.log"
}

step_build() {
    local ver want home="" cuda_ver=""
    ver=$(python_version "$PYTHON")
    check_python_supported "$ver"
    if [[ $CUDA = 1 ]]; then
        [[ -n $CUDA_HOME_ARG ]] || step_toolkit
        home=$(cuda_home)
        cuda_ver=$(cuda_version "$home")
        resolve_cuda_arch "$cuda_ver"
    fi
    want=$(stamp_text "$ver" "$(cuda_toolkit_id "$cuda_ver")")
    if [[ -f $PREFIX/.build-stamp && $(cat "$PREFIX/.build-stamp") == "$want" ]]; then
        say "Caffe already built at $PREFIX (skipping the build)"
        return
    fi
    "$PYTHON" -c 'import numpy, sys; sys.exit(0 if int(numpy.__version__.split(".")[0]) < 2 else 1)' 2>/dev/null \
        || die "'$PYTHON' needs numpy < 2 for pycaffe (pip install 'numpy<2'), or use the venv this script makes"
    local boost_py=/usr/lib/$(gcc -dumpmachine)/libboost_python${ver/./}.so
    [[ -e $boost_py ]] || die "Boost.Python for Python $ver not found ($boost_py). Debian's libboost-python-dev provides it only for the system Python ($(ls /usr/lib/"$(gcc -dumpmachine)"/libboost_python3*.so 2>/dev/null | grep -oE 'python3[0-9]+' | head -n1)); pass --python with that version"

    local tarballs=${SOURCE_DIR:-$WORKDIR/caffe-source}
    if [[ -n $SOURCE_DIR ]]; then verify_sources "$SOURCE_DIR"; else step_fetch "$tarballs"; fi

    local src=$WORKDIR/caffe-src bld=$WORKDIR/caffe-build
    say "unpacking and patching the source into $src"
    prepare_tree "$src" "$tarballs"

    rm -rf "$bld"
    mkdir -p "$bld"
    local py_inc py_lib numpy_inc
    py_inc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    py_lib=$("$PYTHON" -c 'import sysconfig, os; print(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")))')
    numpy_inc=$("$PYTHON" -c 'import numpy; print(numpy.get_include())')
    local rpath="$PREFIX/lib"
    [[ $CUDA = 0 ]] || rpath+=";$home/lib"
    local cmake_args=(
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX"
        -DCMAKE_INSTALL_RPATH="$rpath"
        -DBUILD_python=ON -DBUILD_python_layer=ON -Dpython_version="$ver"
        -DPYTHON_EXECUTABLE="$PYTHON" -DPYTHON_INCLUDE_DIR="$py_inc" -DPYTHON_LIBRARY="$py_lib"
        -DNUMPY_INCLUDE_DIR="$numpy_inc"
        -DBLAS=Open -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF -DUSE_CUDNN=OFF
        -DUSE_NCCL=OFF -DBUILD_docs=OFF -DBUILD_matlab=OFF)
    local arg
    while read -r arg; do cmake_args+=("$arg"); done < <(configure_args "$home")
    say "configuring (CMake, $([[ $CUDA = 1 ]] && echo "CUDA $cuda_ver from $home, compute capabilities $CUDA_ARCH" || echo CPU only), Python $ver)"
    (cd "$bld" && cmake "${cmake_args[@]}" "$src" >cmake.log 2>&1) \
        || { tail -n 30 "$bld/cmake.log" >&2; die "CMake configuration failed; the full log is $bld/cmake.log"; }
    if [[ $CUDA = 1 ]] && ! grep -qE 'CUDA +: +Yes' "$bld/cmake.log"; then
        grep -i cuda "$bld/cmake.log" | tail -n 10 >&2
        die "CMake did not detect CUDA in $home (it would build a CPU-only Caffe); the full log is $bld/cmake.log"
    fi
    local targets
    targets=$(build_targets | xargs)
    say "building $targets with $JOBS jobs (cold on 2 cores: CPU about 5 minutes; CUDA about 17 for one compute capability, the test binary 5 more)"
    # shellcheck disable=SC2086
    (cd "$bld" && make -j"$JOBS" $targets >make.log 2>&1) \
        || { tail -n 30 "$bld/make.log" >&2; die "the Caffe build failed; the full log is $bld/make.log"; }
    # The old prefix stays usable until the new build is ready; a half-written one never
    # has a stamp, so it never looks complete.
    rm -rf "$PREFIX"
    (cd "$bld" && make install >install.log 2>&1) \
        || { tail -n 30 "$bld/install.log" >&2; die "installing Caffe into $PREFIX failed; the full log is $bld/install.log"; }
    if [[ $WITH_TESTS = 1 ]]; then
        # Caffe's tests read their data relative to the source root (src/caffe/test/test_data).
        install -m 755 "$bld/test/test.testbin" "$PREFIX/bin/caffe-tests"
        mkdir -p "$PREFIX/share/caffe-tests/src/caffe/test"
        cp -r "$src/src/caffe/test/test_data" "$PREFIX/share/caffe-tests/src/caffe/test/"
    fi
    check_prefix
    echo "$want" >"$PREFIX/.build-stamp.tmp" && mv "$PREFIX/.build-stamp.tmp" "$PREFIX/.build-stamp"
    # The source and build trees stay in $WORKDIR: 'make -C $bld test.testbin' builds
    # Caffe's own tests later without rebuilding the library.
    say "Caffe built and installed at $PREFIX"
}

recipe_hash_for_options() {  # recipe_hash for the command line's options
    local ver cuda_ver=""
    ver=$(python_version "$PYTHON")
    if [[ $CUDA = 1 ]]; then
        # The wheels' version is known from the pins; a system toolkit is asked.
        if [[ -n $CUDA_HOME_ARG ]]; then cuda_ver=$(cuda_version "$CUDA_HOME_ARG"); else cuda_ver=$CUDA_WHEELS_VERSION; fi
        resolve_cuda_arch "$cuda_ver"
    fi
    recipe_hash "$ver" "$(cuda_toolkit_id "$cuda_ver")"
}

pycaffe_dir() { echo "$PREFIX/lib/python3/dist-packages"; }

check_prefix() {
    [[ -x $PREFIX/bin/caffe ]] || die "no caffe binary at $PREFIX/bin/caffe; run 'docker/build_caffe.sh' to build it"
    [[ $CUDA = 0 ]] || check_cuda_linked "$PREFIX"
    "$PREFIX/bin/caffe" --version >/dev/null 2>&1 || die "$PREFIX/bin/caffe does not run; rebuild with 'rm -rf $PREFIX && docker/build_caffe.sh'"
    PYTHONPATH="$(pycaffe_dir)${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c '
import sys, caffe
assert "Python" in caffe.layer_type_list(), "Caffe was built without the Python layer"
' || die "pycaffe at $(pycaffe_dir) does not import with $PYTHON, or lacks the Python layer"
}

# --- Linking the venv -------------------------------------------------------------------

step_link_venv() {
    [[ $VENV != none ]] || return 0
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # pycaffe and the repository (python_layers, tools) on the venv's import path.
    printf '%s\n%s\n' "$(pycaffe_dir)" "$REPO" >"$site/caffe_toolkit.pth"
    # `caffe` on PATH: the embedded Python of Python layers must see the same packages.
    cat >"$VENV/bin/caffe" <<EOF
#!/bin/sh
# Runs the Caffe tool with this venv's Python packages, pycaffe and the repository
# (python_layers) importable, so that 'module: "python_layers.x"' layers load.
# caffe train runs through tools/caffe_guard.py: -weights and -gpu are checked before
# Caffe could abort on them, and a non-finite loss stops the training. Every other
# command runs the binary unchanged.
export PATH="$VENV/bin:\$PATH"
export PYTHONPATH="$REPO:$(pycaffe_dir):$site\${PYTHONPATH:+:\$PYTHONPATH}"
for argument in "\$@"; do
    if [ "\$argument" = train ]; then
        exec "$VENV/bin/python" "$REPO/tools/caffe_guard.py" "$PREFIX/bin/caffe" "\$@"
    fi
done
exec "$PREFIX/bin/caffe" "\$@"
EOF
    chmod +x "$VENV/bin/caffe"
    say "linked $VENV to Caffe at $PREFIX"
}

step_check() {
    check_prefix
    say "self-check passed: $("$PREFIX/bin/caffe" --version 2>&1 | tail -n1), pycaffe imports, Python layer present"
}

use_cache_prefix() {  # --cached: the prefix named by the recipe's hash, outside the clone
    local kind=cpu
    [[ $CUDA = 0 ]] || kind="cuda-sm${CUDA_ARCH// /-}"
    [[ $CUDA = 0 || -n $CUDA_ARCH ]] || kind=cuda
    PREFIX="$CACHE_ROOT/caffe-$kind-$(recipe_hash_for_options)"
    WORKDIR="$PREFIX.work"
}

main() {
    parse_args "$@"
    [[ $CACHED = 0 ]] || use_cache_prefix
    case $COMMAND in
        deps) step_deps ;;
        fetch) step_fetch "$SOURCE_ARG" ;;
        verify) verify_sources "$SOURCE_ARG" ;;
        build) step_build ;;
        toolkit) step_toolkit; echo "$TOOLKIT_DIR" ;;
        recipe-hash) recipe_hash_for_options ;;
        prefix) echo "$PREFIX" ;;
        check) [[ $VENV != none && -x $VENV/bin/python ]] && PYTHON=$VENV/bin/python; step_check ;;
        all)
            local ver
            ver=$(python_version "$PYTHON"); check_python_supported "$ver"
            step_deps
            step_venv
            step_build
            step_link_venv
            step_check ;;
    esac
}

main "$@"
