#!/usr/bin/env bash
# Packs the GPU bundle (make gpu-bundle): everything a bare CUDA 13 machine needs to run
# docker/gpu_check.sh, in one .tar.xz of at most 45 MiB. The machine provides glibc and
# CUDA's libraries (the driver, cudart, cuBLAS, cuRAND); the bundle carries the rest:
#   caffe/    the CUDA Caffe prefix: bin/caffe, bin/caffe-tests (Caffe's own tests) and
#             their test data, libcaffe, pycaffe
#   lib/      the shared libraries those and Python need (ldd, minus glibc and CUDA)
#   python/   the interpreter, a trimmed standard library, numpy, protobuf and six
#   shims/    stand-ins for what pycaffe and python_layers import but the bundle lacks
#             (docker/gpu_bundle/shims/README.md)
#   toolkit/  pixelfeedback/ and python_layers/
#   gpu_check.sh, MANIFEST.json
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=pixelfeedback-gpu
MAX_MIB=45

usage() {
    cat <<EOF
usage: docker/make_gpu_bundle.sh --prefix DIR [--python PY] [--out FILE] [--keep-dir DIR]

  --prefix DIR     an installed CUDA Caffe built --with-tests (make cuda-build prints it)
  --python PY      the venv interpreter whose numpy, protobuf and six go in
                   (default: $REPO/.venv/bin/python)
  --out FILE       the archive (default: $REPO/build/$NAME.tar.xz)
  --keep-dir DIR   also leave the unpacked bundle in DIR/$NAME (for tests)
EOF
}

die() { printf 'make_gpu_bundle.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

PREFIX=""
PYTHON="$REPO/.venv/bin/python"
OUT="$REPO/build/$NAME.tar.xz"
KEEP=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix) PREFIX=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --keep-dir) KEEP=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ -n $PREFIX ]] || die "--prefix is required: the CUDA Caffe prefix (make cuda-build)"
[[ -x $PREFIX/bin/caffe-tests ]] || die "$PREFIX has no bin/caffe-tests; build it with 'docker/build_caffe.sh --cuda --with-tests' (make cuda-build)"
readelf -d "$PREFIX/lib/libcaffe.so" | grep -q 'NEEDED.*libcudart' \
    || die "$PREFIX/lib/libcaffe.so does not link libcudart: not a CUDA build"
[[ -x $PYTHON ]] || die "no Python at $PYTHON; run 'make setup' or pass --python"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/$NAME
mkdir -p "$STAGE"/{caffe/bin,caffe/lib,caffe/share,lib,python/bin,python/lib,toolkit}

# --- Caffe ------------------------------------------------------------------------------
say "Caffe from $PREFIX"
cp "$PREFIX/bin/caffe" "$PREFIX/bin/caffe-tests" "$STAGE/caffe/bin/"
cp -a "$PREFIX"/lib/libcaffe.so* "$STAGE/caffe/lib/"
mkdir -p "$STAGE/caffe/lib/python3/dist-packages"
tar -C "$PREFIX/lib/python3/dist-packages" --exclude=test --exclude=imagenet \
    --exclude=__pycache__ -cf - caffe | tar -C "$STAGE/caffe/lib/python3/dist-packages" -xf -
cp -r "$PREFIX/share/caffe-tests" "$STAGE/caffe/share/"
cp "$PREFIX/.build-stamp" "$STAGE/caffe/.build-stamp"

# --- Python -----------------------------------------------------------------------------
read -r BASE PYVER SITE < <("$PYTHON" -c 'import sys, sysconfig, numpy
print(sys.base_prefix, "%d.%d" % sys.version_info[:2], sysconfig.get_paths()["purelib"])')
say "Python $PYVER from $BASE, numpy, protobuf and six from $SITE"
cp "$BASE/bin/python$PYVER" "$STAGE/python/bin/"
ln -s "python$PYVER" "$STAGE/python/bin/python3"
ln -s "python$PYVER" "$STAGE/python/bin/python"
# training.caffe_binary() runs sys.prefix/bin/caffe: the bundle's tool (gpu_check.sh
# exports the library and import paths).
cat >"$STAGE/python/bin/caffe" <<'EOF'
#!/bin/sh
exec "$(dirname "$0")/../../caffe/bin/caffe" "$@"
EOF
chmod +x "$STAGE/python/bin/caffe"
STDLIB=$STAGE/python/lib/python$PYVER
# The standard library without its tests, GUI, build files and the modules whose system
# libraries the bundle does not carry (ssl, sqlite, curses, readline, dbm).
tar -C "$BASE/lib/python$PYVER" --exclude=__pycache__ --exclude=site-packages \
    --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter --exclude=turtledemo \
    --exclude=ensurepip --exclude=lib2to3 --exclude=pydoc_data --exclude='config-*' \
    --exclude='_test*' --exclude='_ctypes_test*' --exclude='xxlimited*' --exclude='_xxtestfuzz*' \
    --exclude='_tkinter*' --exclude='_ssl.*' --exclude='_hashlib.*' --exclude='_sqlite3*' \
    --exclude='_curses*' --exclude='_dbm*' --exclude='_gdbm*' --exclude='readline.*' \
    --exclude='nis.*' -cf - . | { mkdir -p "$STDLIB"; tar -C "$STDLIB" -xf -; }
mkdir -p "$STDLIB/site-packages"
tar -C "$SITE" --exclude=__pycache__ --exclude=tests --exclude='*.pyi' --exclude='*.pxd' \
    --exclude='numpy/f2py' --exclude='numpy/distutils' --exclude='numpy/_pyinstaller' \
    --exclude='numpy/doc' --exclude='*.dist-info' -cf - numpy numpy.libs google six.py \
    | tar -C "$STDLIB/site-packages" -xf -

# --- The toolkit and the stand-ins ---------------------------------------------------------
tar -C "$REPO" --exclude=__pycache__ -cf - pixelfeedback python_layers tools/gpu_check.py \
    | tar -C "$STAGE/toolkit" -xf -
cp -r "$REPO/docker/gpu_bundle/shims" "$STAGE/shims"
cp "$REPO/docker/gpu_check.sh" "$STAGE/gpu_check.sh"

# --- Shared libraries ---------------------------------------------------------------------
# ldd from inside the stage, so that what the stage already holds resolves there; every
# other library except glibc's and CUDA's is copied into lib/ (by its soname, dereferenced).
export LD_LIBRARY_PATH="$STAGE/lib:$STAGE/caffe/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elf_files() {
    find "$STAGE" -type f \( -perm -u+x -o -name '*.so*' \) -print0 \
        | while IFS= read -r -d '' f; do [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == 177ELF ]] && echo "$f"; done
}
for round in 1 2 3; do
    mapfile -t files < <(elf_files)
    PYTHONPATH="$REPO" "$PYTHON" -c '
import sys
from pixelfeedback.gpu_check import libraries_to_bundle
for name, target in libraries_to_bundle(sys.argv[1:]):
    print(name, target, sep="\t")' "${files[@]}" >"$WORK/needed.tsv" \
        || die "the libraries of the bundle's files could not be resolved (see above)"
    added=0
    while IFS=$'\t' read -r name target; do
        case $(readlink -f "$target") in "$STAGE"/*) continue ;; esac
        [[ -e $STAGE/lib/$name ]] && continue
        cp -L "$target" "$STAGE/lib/$name"
        added=$((added + 1))
    done <"$WORK/needed.tsv"
    [[ $added -gt 0 ]] || break
    say "copied $added shared libraries into lib/ (round $round)"
done

# Symbol tables are not needed to run: strip what was built or copied here (never the
# numpy wheel's own libraries).
while read -r f; do
    if strip --strip-unneeded -o "$WORK/stripped" "$f" 2>/dev/null; then
        cat "$WORK/stripped" >"$f"
    else
        say "left ${f#"$STAGE"/} unstripped (strip failed on it)"
    fi
done < <(elf_files | grep -v -e '/site-packages/')

# --- Manifest, archive --------------------------------------------------------------------
PYTHONPATH="$REPO" "$PYTHON" - "$STAGE" "$PREFIX" "$REPO" <<'EOF'
import json, os, subprocess, sys, time
import numpy, google.protobuf, six
from pixelfeedback.gpu_timings import sweep_plan
stage, prefix, repo = sys.argv[1:4]
stamp = open(os.path.join(prefix, ".build-stamp")).read().split()
fields = dict(item.split("=", 1) for item in stamp)
git = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                     text=True).stdout.strip()
manifest = {
    "recipe_hash": os.path.basename(prefix.rstrip("/")).rsplit("-", 1)[-1],
    "build_stamp": " ".join(stamp), "git_commit": git,
    "cuda": ("13.0 (PyPI wheels)" if fields.get("toolkit", "").startswith("wheels-")
             else fields.get("toolkit")), "cuda_arch": fields.get("arch"),
    "python": "%d.%d.%d" % sys.version_info[:3], "numpy": numpy.__version__,
    "protobuf": google.protobuf.__version__, "six": six.__version__,
    "libraries": sorted(os.listdir(os.path.join(stage, "lib"))),
    "sweep_plan": sweep_plan(),  # what the check extrapolates to (the sweep itself is not run)
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
}
with open(os.path.join(stage, "MANIFEST.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
EOF
[[ -z $KEEP ]] || { mkdir -p "$KEEP"; rm -rf "${KEEP:?}/$NAME"; cp -a "$STAGE" "$KEEP/"; }
mkdir -p "$(dirname "$OUT")"
say "compressing $(du -sh "$STAGE" | cut -f1) into $OUT (xz)"
tar -C "$WORK" --owner=0 --group=0 -cf - "$NAME" | xz -T0 -9 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
SIZE=$(stat -c %s "$OUT")
MIB=$(( (SIZE + 1048575) / 1048576 ))
if (( SIZE > MAX_MIB * 1048576 )); then
    du -s "$STAGE"/* "$STAGE"/*/* 2>/dev/null | sort -rn | head -n 8 >&2
    die "$OUT is $MIB MiB, over the $MAX_MIB MiB a device call may carry; the largest parts are listed above"
fi
say "GPU bundle written: $OUT ($MIB MiB, at most $MAX_MIB)"
