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
        try {
            app.parse(argc, argv);
        } catch (const CLI::ParseError& e) {
            if (e.get_exit_code() == 0) return app.exit(e);  // the help
            std::fputs(procsafe::detail::usage_line(app, e.what()).c_str(), stderr);  // as the procsafe command
            return 2;
        }
        return redis.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "procsafe-redis: %s\n", e.what());
        return 1;
    }
}
