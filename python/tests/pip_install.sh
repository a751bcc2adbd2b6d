#!/bin/sh
# pip install of python/ as a user does it on Debian 12, offline: a venv that
# sees Debian's packages (setuptools, pytest), then
# pip install --no-build-isolation (no download of build dependencies).
#   pip_install.sh PYTHON SOURCE_DIR WORK_DIR
set -eu
python=$1 src=$2 work=$3
if ! "$python" -c "import ensurepip" 2>/dev/null; then
    echo "SKIPPED: no venv module with ensurepip (Debian: python3-venv)"
    exit 77
fi
rm -rf "$work"
mkdir -p "$work"
"$python" -m venv --system-site-packages "$work/venv"
# A copy of the package folder and the headers: pip builds in place, and the
# source tree stays clean.
mkdir -p "$work/src"
cp -r "$src" "$work/src/python"
cp -r "$src/../include" "$work/src/include"
rm -rf "$work/src/python/build" "$work/src/python/"*.egg-info
"$work/venv/bin/python" -m pip install --no-build-isolation --no-index --quiet "$work/src/python"
cd "$work"  # not the source folder: import the installed package
"$work/venv/bin/python" -c "
import procsafe, sys
assert procsafe.__file__.startswith(sys.argv[1]), procsafe.__file__
v = procsafe.Value('i', 41)
assert v.add(1) == 42
print('pip install: procsafe', procsafe.__version__, 'from', procsafe.__file__)
" "$work/venv"
