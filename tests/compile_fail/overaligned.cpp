// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// Must NOT compile (ctest: compile_fail.overaligned looks for the message):
// a segment is mapped at a page boundary in each process, so an object
// aligned beyond a page would lie at different offsets in different
// processes' mappings. procsafe refuses it at compile time.
#include <procsafe/procsafe.hpp>

#include <cstdint>

struct alignas(8192) two_pages {
    std::int64_t v;
    friend two_pages operator+(two_pages a, two_pages b) { return {a.v + b.v}; }
    friend two_pages operator-(two_pages a, two_pages b) { return {a.v - b.v}; }
};

int main() {
    auto seg = procsafe::segment::anonymous(1 << 20);
    return static_cast<int>(seg.construct<procsafe::mutex_counter<two_pages>>("c").value().v);
}
