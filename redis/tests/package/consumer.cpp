// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// A program outside the repository linking the installed procsafe::redis:
// the key layout it documents, and a flush to a Redis nobody runs, which
// must fail cleanly (bounded, no crash).
#include <procsafe/procsafe.hpp>
#include <procsafe/redis.hpp>

#include <cstdio>
#include <string>

#include <unistd.h>

int main() {
    if (procsafe::redis::keys::totals("web") != "{procsafe:web}:total") return 1;
    const std::string name = "pkgredis_" + std::to_string(::getpid());
    auto seg = procsafe::segment::create(name, 64 * 1024);
    seg.construct<procsafe::atomic_counter<long>>("hits").increment(3);
    procsafe::redis::flush_options o;
    o.connection.redis = procsafe::redis::endpoint::parse("127.0.0.1:1");  // nothing listens on port 1
    o.connection.connect_timeout = 0.5;
    o.segments = {name};
    o.log = [](std::string_view) {};
    procsafe::redis::flusher f(o);
    const auto r = f.flush_once();
    std::printf("flush to 127.0.0.1:1: %s\n", r.error.c_str());
    return r.ok ? 1 : 0;
}
