// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// procsafe-redis: the `procsafe flush` and `procsafe fleet show|export`
// subcommands as a program of their own, until the procsafe command takes
// them (both call procsafe::redis::cli::commands).
//
//   procsafe-redis flush web --redis 127.0.0.1:6379 --host-id web1 --interval 1
//   procsafe-redis fleet show --redis 127.0.0.1:6379 --namespace web [--json]
//   procsafe-redis fleet export --redis 127.0.0.1:6379 --output /var/lib/node_exporter/fleet.prom
#include <procsafe/redis_cli.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    try {
        CLI::App app{"procsafe-redis: exact fleet-wide totals of procsafe counters in Redis"};
        app.require_subcommand(1);
        procsafe::redis::cli::commands redis;
        redis.add_to(app);
        CLI11_PARSE(app, argc, argv);
        return redis.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe-redis: %s\n", e.what());
        return 1;
    }
}
