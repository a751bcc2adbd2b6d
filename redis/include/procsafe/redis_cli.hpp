// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The `flush` and `fleet show|export` subcommands for a CLI11 program: the
// `procsafe` command, and procsafe-redis (redis/procsafe_redis.cpp).
// Header-only; needs CLI11 and procsafe::redis.
//
// ```
// CLI::App app{"procsafe"};
// procsafe::redis::cli::commands redis;
// redis.add_to(app);            // adds "flush" and "fleet"
// CLI11_PARSE(app, argc, argv);
// if (redis.selected()) return redis.run();
// ```
//
// Passwords never come from the command line (ps shows it to every user of
// the host): PROCSAFE_REDIS_PASSWORD, or --password-file; the ACL user from
// --user or PROCSAFE_REDIS_USER.

#include <procsafe/detail/cli_options.hpp>
#include <procsafe/redis.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace procsafe::redis::cli {

using procsafe::detail::seconds_option;  // every duration: finite, within a range said in --help

/// A CLI11 check of --host-id and --namespace: "'a b': printable characters only, no space".
inline std::string id_check(const std::string& id) { return id_problem(id); }

/// Where Redis is and how to log in: the options every subcommand takes.
struct connection_args {
    std::string redis = "127.0.0.1:6379";
    std::string cluster;  // seeds, "HOST:PORT,HOST:PORT"
    std::string password_file, user;
    double connect_timeout = 1.0, command_timeout = 2.0;

    void add_to(CLI::App& app) {
        auto* one = app.add_option("--redis", redis, "Redis as HOST:PORT")->capture_default_str();
        app.add_option("--redis-cluster", cluster,
                       "a Redis Cluster: some of its nodes as HOST:PORT[,HOST:PORT...] (the slot map is learned from them)")
            ->excludes(one)
            ->check([](const std::string& seeds) -> std::string {
                try {
                    endpoint::parse_list(seeds);
                    return {};
                } catch (const std::invalid_argument& e) {
                    return e.what();
                }
            });
        app.add_option("--password-file", password_file,
                       "a file whose first line is the password (else PROCSAFE_REDIS_PASSWORD)");
        app.add_option("--user", user, "the ACL user (else PROCSAFE_REDIS_USER; none: the default user)");
        seconds_option(app.add_option("--connect-timeout", connect_timeout, "to connect"), 0.001, 60)->capture_default_str();
        seconds_option(app.add_option("--command-timeout", command_timeout, "each command's"), 0.001, 60)->capture_default_str();
    }
    /// Throws: std::invalid_argument (a bad HOST:PORT), std::runtime_error (an unreadable password file).
    connection_options resolve() const {
        connection_options o;
        o.redis = endpoint::parse(redis);
        if (!cluster.empty()) o.cluster = endpoint::parse_list(cluster);
        o.auth = password_file.empty() ? credentials::from_environment() : credentials::from_file(password_file, user);
        if (!user.empty()) o.auth.user = user;
        o.connect_timeout = connect_timeout;
        o.command_timeout = command_timeout;
        return o;
    }
};

class commands {
public:
    /// Adds "flush" and "fleet" ("show", "export") to app.
    void add_to(CLI::App& app) {
        flush_ = app.add_subcommand("flush", "carry segments' counters to Redis: exact fleet-wide totals");
        flush_->add_option("segments", segments_, "the segments to flush")->required();
        flush_conn_.add_to(*flush_);
        flush_->add_option("--host-id", flush_opts_.host_id, "this host in the fleet (default: the host name)")->check(id_check);
        flush_->add_option("--namespace", flush_opts_.fleet_namespace,
                           "the fleet the totals add up in (default: each segment's name)")
            ->check(id_check);
        seconds_option(flush_->add_option("--interval", flush_opts_.interval, "between flushes"), 0.01, 86400)->capture_default_str();
        flush_->add_flag("--once", flush_opts_.once, "flush once and exit");
        seconds_option(flush_->add_option("--retry-for", flush_opts_.retry_for, "with --once: how long to keep trying"), 0, 86400)
            ->capture_default_str();
        seconds_option(flush_->add_option("--gauge-ttl", flush_opts_.gauge_ttl,
                                          "how long a gauge value counts after its last flush (default: max(5 x interval, 2))"),
                       0.001, 604800);
        flush_->add_option("--stripes", flush_opts_.stripes,
                           "hash slots a new namespace is spread over (recorded at its first flush; default: 1, 16 on a cluster)")
            ->check(CLI::Range(1u, keys::max_stripes));
        flush_->add_option("--batch", flush_opts_.batch, "fields per FCALL")->capture_default_str()->check(CLI::PositiveNumber);
        seconds_option(flush_->add_option("--max-backoff", flush_opts_.max_backoff, "the longest wait between attempts"), 0.001, 3600)
            ->capture_default_str();

        fleet_ = app.add_subcommand("fleet", "read the fleet totals in Redis");
        fleet_->require_subcommand(1);
        show_ = fleet_->add_subcommand("show", "the totals and the reporters they came from");
        show_conn_.add_to(*show_);
        show_->add_option("--namespace", show_ns_, "one namespace (default: every one)");
        show_->add_flag("--json", json_, "as JSON: totals, gauges, objects, reporters with their watermarks");
        export_ = fleet_->add_subcommand("export", "the totals in the Prometheus text format");
        export_conn_.add_to(*export_);
        export_->add_option("--namespace", export_ns_, "one namespace (default: every one)");
        export_->add_option("--output", output_, "a file, replaced whole (default, or -: stdout)")->check([](const std::string& file) {
            return file.empty() ? "must name a file (- or no --output: stdout)" : "";
        });
    }

    /// One of the subcommands was given.
    bool selected() const {
        return (flush_ != nullptr && flush_->parsed()) || (fleet_ != nullptr && fleet_->parsed());
    }

    /// Runs the subcommand given; its exit status.
    int run() const {
        const char* which = flush_->parsed() ? "flush" : show_->parsed() ? "fleet show" : "fleet export";
        try {
            if (flush_->parsed()) {
                flush_options o = flush_opts_;
                o.connection = flush_conn_.resolve();
                o.segments = segments_;
                return run_flush(o);
            }
            fleet_options o;
            if (show_->parsed()) {
                o.connection = show_conn_.resolve();
                o.fleet_namespace = show_ns_;
                return run_fleet_show(o, json_);
            }
            o.connection = export_conn_.resolve();
            o.fleet_namespace = export_ns_;
            return run_fleet_export(o, output_);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "procsafe %s: %s\n", which, e.what());
            return 1;
        }
    }

private:
    CLI::App *flush_ = nullptr, *fleet_ = nullptr, *show_ = nullptr, *export_ = nullptr;
    connection_args flush_conn_, show_conn_, export_conn_;
    flush_options flush_opts_;
    std::vector<std::string> segments_;
    std::string show_ns_, export_ns_, output_;
    bool json_ = false;
};

}  // namespace procsafe::redis::cli
