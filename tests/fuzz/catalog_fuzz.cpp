// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// libFuzzer target over what a reader follows in a segment someone else
// wrote: the header, the catalog's chunks and entries, every object's header
// and metadata, and the values of every kind (segment_view::over). Every
// input must give a procsafe::error or a listing; never a crash, a hang or
// a read outside the image.
//   ./dev fuzz [seconds]
// The seed corpus (tests/fuzz/corpus-catalog) holds real segment images,
// written by this program when run as `procsafe_fuzz_catalog --write-seeds DIR`.
#include <procsafe/procsafe.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

/// A real segment with one object of every kind, as bytes.
std::vector<unsigned char> seed_image(int variant) {
    auto seg = procsafe::segment::anonymous(variant == 0 ? 6000 : 14000);
    seg.construct<procsafe::atomic_counter<std::int64_t>>("a", procsafe::metadata{.help = "A counter."}, 5);
    seg.construct<procsafe::mutex_counter<double>>("m", 1.5);
    seg.construct<procsafe::sharded_counter<std::int32_t>>("s", 2).increment(3);
    seg.construct<procsafe::counter_array<std::int64_t, procsafe::atomic_sync>>(
        "arr", procsafe::metadata{.label = "code", .label_values = {"200", "404"}}, 2, procsafe::array_layout::packed);
    if (variant > 0) {
        seg.construct<procsafe::histogram>("h", procsafe::metadata{.unit = "seconds"}, std::vector{0.5, 1.0}, 1).observe(0.7);
        seg.construct<procsafe::live_gauge<std::int64_t>>("g", 2).add(1);
        seg.construct<procsafe::latch>("l", 2);
        seg.construct<procsafe::barrier>("b", 2);
    }
    const auto* p = static_cast<const unsigned char*>(seg.data());
    return {p, p + seg.size()};
}

alignas(4096) unsigned char image[64 * 1024];

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    if (*argc == 3 && std::strcmp((*argv)[1], "--write-seeds") == 0) {
        for (int v = 0; v < 2; ++v) {
            const auto bytes = seed_image(v);
            const std::string path = std::string((*argv)[2]) + "/segment-" + std::to_string(v);
            if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
                std::fwrite(bytes.data(), 1, bytes.size(), f);
                std::fclose(f);
            }
        }
        std::exit(0);
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > sizeof image) return 0;
    std::memcpy(image, data, size);  // aligned as a mapping is
    try {
        const auto view = procsafe::segment_view::over(image, size, "fuzz");
        std::size_t seen = 0;
        for (const auto& o : view.objects()) seen += o.name.size() + o.values.size();
        (void)view.info();
        procsafe::prometheus_exposition text;
        text.add(view);
        return text.str().size() + seen == 0 ? 0 : 0;
    } catch (const procsafe::error&) {
        return 0;
    }
}
