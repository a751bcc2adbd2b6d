// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// libFuzzer target over what procsafe reads from a segment someone else
// wrote: the segment header (check_header) and an object header's type facts
// (describe). Every input must give a procsafe::error or pass; never a crash.
//   ./dev fuzz [seconds]
#include <procsafe/procsafe.hpp>

#include <cstdint>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    alignas(procsafe::cache_line) unsigned char image[4096] = {};
    std::memcpy(image, data, size < sizeof image ? size : sizeof image);
    // The mapped size the opener saw: taken from the input too.
    std::size_t mapped = sizeof image;
    if (size >= sizeof image + sizeof(std::uint32_t)) {
        std::uint32_t m;
        std::memcpy(&m, data + sizeof image, sizeof m);
        mapped = m;
    }
    try {
        procsafe::detail::check_header(*reinterpret_cast<const procsafe::detail::segment_header*>(image), mapped,
                                       "fuzz");
    } catch (const procsafe::error&) {
    }
    procsafe::detail::type_facts facts;
    std::memcpy(&facts, image + 256, sizeof facts);
    const std::string text = procsafe::detail::describe(facts);
    return text.empty() ? 1 : 0;
}
