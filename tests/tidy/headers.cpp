// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// One translation unit with every public header, for clang-tidy (.ci/run).
#include <procsafe/bench/harness.hpp>
#include <procsafe/procsafe.hpp>

template class procsafe::counter<long, procsafe::atomic_sync>;
template class procsafe::counter<long, procsafe::mutex_sync>;
template class procsafe::sharded_counter<long>;
template class procsafe::counter_array<long, procsafe::atomic_sync>;
template class procsafe::counter_array<double, procsafe::mutex_sync>;

int main() {
    try {
        auto seg = procsafe::segment::anonymous(1 << 20);
        seg.construct<procsafe::atomic_counter<long>>("a").increment();
        seg.construct<procsafe::mutex_counter<long>>("m").increment();
        auto& s = seg.construct<procsafe::sharded_counter<long>>("s");
        s.local().increment();
        seg.construct<procsafe::counter_array<long, procsafe::atomic_sync>>("arr", 4)[1].increment();
        return static_cast<int>(s.sum() - 1);
    } catch (const std::exception&) {
        return 1;
    }
}
