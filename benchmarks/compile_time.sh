#!/usr/bin/env bash
# What each procsafe header costs to compile, beside Boost.Interprocess's own
# header doing the same kind of work, measured side by side in one run.
#
#   benchmarks/compile_time.sh [repetitions]     (default 5)
#
# Each translation unit includes one header and uses its object the way a
# program does (so its code is generated, not only parsed), and is compiled
# with `$CXX -std=c++20 -O2 -c` (CXX: g++ unless set). The repetitions are
# interleaved across the units, so that a change in the machine's load hits
# them all alike; the table gives the median, the preprocessed lines
# (`-E | wc -l`) and the ratio to Boost.Interprocess alone.
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-5}
cxx=${CXX:-g++}
include=$PWD/include
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unit() {  # unit NAME DESCRIPTION [FLAGS] < source
    cat > "$work/$1.cpp"
    printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >> "$work/units"
}
same() {  # same NAME AS DESCRIPTION FLAGS: unit AS's source again, with FLAGS
    cp "$work/$2.cpp" "$work/$1.cpp"
    printf '%s\t%s\t%s\n' "$1" "$3" "$4" >> "$work/units"
}

unit boost "Boost.Interprocess alone: managed_shared_memory, find_or_construct<long>" <<'EOF'
#include <boost/interprocess/managed_shared_memory.hpp>
int main() {
    namespace bi = boost::interprocess;
    bi::managed_shared_memory m(bi::open_or_create, "ct", 65536);
    return static_cast<int>(++*m.find_or_construct<long>("c")(0));
}
EOF
unit segment "procsafe/segment.hpp: open_or_create" <<'EOF'
#include <procsafe/segment.hpp>
int main() { return procsafe::segment::open_or_create("ct", 65536).size() > 0 ? 0 : 1; }
EOF
unit counter "procsafe/segment.hpp + counter.hpp: find_or_construct<atomic_counter<long>>" <<'EOF'
#include <procsafe/segment.hpp>
#include <procsafe/counter.hpp>
int main() {
    auto seg = procsafe::segment::open_or_create("ct", 65536);
    return static_cast<int>(seg.find_or_construct<procsafe::atomic_counter<long>>("c").increment());
}
EOF
unit two_counters "... + a mutex_counter<long> too" <<'EOF'
#include <procsafe/segment.hpp>
#include <procsafe/counter.hpp>
int main() {
    auto seg = procsafe::segment::open_or_create("ct", 65536);
    auto& a = seg.find_or_construct<procsafe::atomic_counter<long>>("a");
    auto& m = seg.find_or_construct<procsafe::mutex_counter<long>>("m");
    return static_cast<int>(a.increment() + m.increment());
}
EOF
unit sharded "procsafe/segment.hpp + sharded_counter.hpp" <<'EOF'
#include <procsafe/segment.hpp>
#include <procsafe/sharded_counter.hpp>
int main() {
    auto seg = procsafe::segment::open_or_create("ct", 65536);
    auto& c = seg.find_or_construct<procsafe::sharded_counter<long>>("c");
    ++c;
    return static_cast<int>(c.sum());
}
EOF
unit histogram "procsafe/segment.hpp + histogram.hpp" <<'EOF'
#include <procsafe/segment.hpp>
#include <procsafe/histogram.hpp>
int main() {
    auto seg = procsafe::segment::open_or_create("ct", 65536);
    auto& h = seg.find_or_construct<procsafe::histogram>("h", std::vector<double>{0.1, 1.0});
    h.observe(0.5);
    return static_cast<int>(h.read().count);
}
EOF
unit live_gauge "procsafe/segment.hpp + live_gauge.hpp" <<'EOF'
#include <procsafe/segment.hpp>
#include <procsafe/live_gauge.hpp>
int main() {
    auto seg = procsafe::segment::open_or_create("ct", 65536);
    auto& g = seg.find_or_construct<procsafe::live_gauge<long>>("g");
    g.add(1);
    return static_cast<int>(g.value());
}
EOF
unit reader "procsafe/segment_view.hpp + prometheus.hpp: a scrape" <<'EOF'
#include <procsafe/segment_view.hpp>
#include <procsafe/prometheus.hpp>
int main() {
    auto view = procsafe::segment_view::open("ct");
    procsafe::prometheus_exposition e;
    e.add(view);
    return static_cast<int>(e.str().size() % 2);
}
EOF
unit readme "the README's example: procsafe/procsafe.hpp, fork, wait" < examples/00_readme.cpp
# The optional compiled part (procsafe::compiled): the same units with
# PROCSAFE_SEPARATE_COMPILATION, and the library's one translation unit,
# compiled once per program.
sep=-DPROCSAFE_SEPARATE_COMPILATION
same counter_sep counter "compiled part: segment.hpp + counter.hpp" "$sep"
same two_counters_sep two_counters "compiled part: ... + a mutex_counter<long> too" "$sep"
same sharded_sep sharded "compiled part: segment.hpp + sharded_counter.hpp" "$sep"
same histogram_sep histogram "compiled part: segment.hpp + histogram.hpp" "$sep"
same live_gauge_sep live_gauge "compiled part: segment.hpp + live_gauge.hpp" "$sep"
same readme_sep readme "compiled part: the README's example" "$sep"
unit library "the compiled part itself (src/procsafe.cpp), once per program" < src/procsafe.cpp

printf '%s\n' "compiler: $($cxx --version | head -1); -std=c++20 -O2 -c; median of $repeat, interleaved; $(nproc) CPUs"
while IFS=$'\t' read -r name _ flags; do
    # shellcheck disable=SC2086  # flags: words
    "$cxx" -std=c++20 $flags -I"$include" -E "$work/$name.cpp" | wc -l > "$work/$name.lines"
    : > "$work/$name.times"
done < "$work/units"
for ((r = 0; r < repeat; ++r)); do
    while IFS=$'\t' read -r name _ flags; do
        start=$(date +%s.%N)
        # shellcheck disable=SC2086
        "$cxx" -std=c++20 $flags -O2 -I"$include" -c "$work/$name.cpp" -o "$work/$name.o"
        end=$(date +%s.%N)
        echo "$end - $start" | bc -l >> "$work/$name.times"
    done < "$work/units"
done
median() { sort -g "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
base=$(median "$work/boost.times")
printf '| %s | %s | %s | %s | %s |\n' "translation unit" "lines" "seconds" "x Boost" "object text"
printf '| --- | ---: | ---: | ---: | ---: |\n'
while IFS=$'\t' read -r name what _; do
    m=$(median "$work/$name.times")
    text=$(size -A "$work/$name.o" | awk '$1 ~ /^\.text/ {s += $2} END {print s}')
    printf '| %s | %s | %.2f | %.2fx | %s |\n' "$what" "$(cat "$work/$name.lines")" "$m" "$(echo "$m / $base" | bc -l)" "$text"
done < "$work/units"
