// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// The Redis Cluster fixture (redis_cluster.hpp) itself, without procsafe:
// a cluster of 3 masters and 3 replicas comes up, a key set on its master is
// read back (and MOVED elsewhere), a master SIGKILLed is replaced by its
// replica, a master added receives slots from a background reshard, and one
// slot moves step by step with its keys (ASK while it is half moved).
#include "redis_cluster.hpp"

#include "support/skip.hpp"

#include "catch.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using procsafe_test::redis_cluster;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int slot_count(const redis_cluster& c, int port) {
    int n = 0;
    for (const auto& e : c.nodes_of(port))
        if (e.port == port)
            for (const auto& [lo, hi] : e.slots) n += hi - lo + 1;
    return n;
}

}  // namespace

TEST_CASE("redis cluster fixture: up, failover, a master added, a reshard, one slot moved step by step", "[redis][cluster]") {
    PROCSAFE_NEED_REDIS_CLUSTER();
    const auto t0 = std::chrono::steady_clock::now();
    redis_cluster cluster(3, 1, 1000);
    const double up = seconds_since(t0);
    REQUIRE(cluster.addresses().size() == 6);
    REQUIRE(cluster.master_ports().size() == 3);
    const std::string seeds = cluster.seeds();
    CHECK(std::count(seeds.begin(), seeds.end(), ',') == 5);

    // A key on its master; MOVED from another one.
    const std::string key = "fixture:{k}";
    const int slot = static_cast<int>(cluster.command(cluster.master_ports()[0], {"CLUSTER", "KEYSLOT", key}).integer);
    const int master = cluster.master_of_slot(slot);
    REQUIRE(cluster.command(master, {"SET", key, "v1"}).str == "OK");
    CHECK(cluster.command(master, {"GET", key}).str == "v1");
    for (int p : cluster.master_ports())
        if (p != master) {
            const auto r = cluster.command(p, {"GET", key});
            CHECK(r.error());
            CHECK(r.str == "MOVED " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(master));
        }

    // Its master killed: its replica takes the slot over, with the key.
    const int replica = cluster.replica_of(master);
    REQUIRE(cluster.command(master, {"WAIT", "1", "2000"}).integer == 1);  // the replica has the key
    const auto t1 = std::chrono::steady_clock::now();
    cluster.kill9(master);
    const int promoted = cluster.wait_failover(slot);
    const double failover = seconds_since(t1);
    CHECK(promoted == replica);
    CHECK(cluster.addresses().size() == 5);
    CHECK(cluster.master_ports().size() == 3);
    CHECK(cluster.command(promoted, {"GET", key}).str == "v1");

    // A master added; 200 slots resharded to it in the background (keys in them moved).
    const auto t2 = std::chrono::steady_clock::now();
    const int added = cluster.add_master();
    CHECK(cluster.master_ports().size() == 4);
    CHECK(slot_count(cluster, added) == 0);
    const int from = cluster.master_ports()[0] == added ? cluster.master_ports()[1] : cluster.master_ports()[0];
    const int before = slot_count(cluster, from);
    cluster.reshard_async(from, added, 200);
    cluster.wait_reshard();
    const double reshard = seconds_since(t2);
    CHECK(slot_count(cluster, added) == 200);
    CHECK(slot_count(cluster, from) == before - 200);

    // One slot moved step by step with its 5 keys; while half moved, a
    // moved key is answered ASK by the source, a key still there is served.
    const int owner = cluster.master_of_slot(slot);
    const int target = added == owner ? from : added;
    for (int i = 0; i < 4; ++i) REQUIRE(cluster.command(owner, {"SET", "fixture:{k}:" + std::to_string(i), std::to_string(i)}).str == "OK");
    std::vector<std::string> steps;
    int asked = 0, served = 0;
    cluster.migrate_slot(slot, target, [&](std::string_view step) {
        steps.emplace_back(step);
        if (step != "batch") return;
        for (int i = 0; i < 4; ++i) {
            const auto r = cluster.command(owner, {"GET", "fixture:{k}:" + std::to_string(i)});
            if (r.error() && r.str.rfind("ASK ", 0) == 0) ++asked;
            else if (r.str == std::to_string(i)) ++served;
        }
    });
    CHECK(steps.front() == "importing");
    CHECK(steps[1] == "migrating");
    CHECK(std::count(steps.begin(), steps.end(), "batch") == 3);  // 5 keys, 2 a batch
    CHECK(steps[steps.size() - 2] == "moved");
    CHECK(steps.back() == "assigned");
    CHECK(asked > 0);
    CHECK(served > 0);
    CHECK(cluster.master_of_slot(slot) == target);
    CHECK(cluster.command(owner, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}).integer == 0);
    CHECK(cluster.command(target, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}).integer == 5);
    CHECK(cluster.command(target, {"GET", key}).str == "v1");
    CHECK(cluster.command(target, {"GET", "fixture:{k}:3"}).str == "3");
    std::printf("cluster fixture: 3+3 nodes up in %.1f s; failover in %.1f s; add-node and a 200-slot reshard in %.1f s; "
                "one slot moved in %zu steps (%d ASK, %d served while half moved); %.1f s in all\n",
                up, failover, reshard, steps.size(), asked, served, seconds_since(t0));
    std::fflush(stdout);
}
