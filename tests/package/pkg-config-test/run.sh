#!/bin/sh
# A build that knows nothing but pkg-config: the README's example and the
# package consumer, compiled with `$(pkg-config --cflags --libs procsafe)`
# alone from an installed prefix, the way a Makefile user would.
#   run.sh PREFIX CXX SOURCE_DIR WORK_DIR
set -eu
prefix=$1 cxx=$2 src=$3 work=$4
if ! command -v pkg-config >/dev/null 2>&1; then
    echo "SKIPPED: pkg-config is not installed"
    exit 0
fi
# Only the prefix's own directory, as a user of a custom prefix sets it.
PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export PKG_CONFIG_PATH
found=$(pkg-config --print-errors --variable=pcfiledir procsafe) || {
    echo "PKG_CONFIG_PATH=$PKG_CONFIG_PATH: no procsafe.pc"; exit 1; }
[ "$found" = "$prefix/lib/pkgconfig" ] || { echo "procsafe.pc found in '$found', not in $prefix/lib/pkgconfig"; exit 1; }
flags=$(pkg-config --cflags --libs procsafe)
echo "pkg-config --cflags --libs procsafe: $flags"
# The include directory must be the prefix's, wherever it was installed.
inc=$(cd "$(pkg-config --variable=includedir procsafe)" && pwd -P)
[ "$inc" = "$(cd "$prefix/include" && pwd -P)" ] || { echo "includedir $inc is not $prefix/include"; exit 1; }
mkdir -p "$work"
# shellcheck disable=SC2086  # the flags are words
"$cxx" "$src/examples/00_readme.cpp" -o "$work/readme" $flags
# shellcheck disable=SC2086
"$cxx" "$src/tests/package/consumer.cpp" -o "$work/consumer" $flags
"$work/consumer"
echo "pkg-config consumer: ok"
