// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// The procsafe command: see procsafe's counters from outside.
//   procsafe list | show SEGMENT | watch SEGMENT | export SEGMENT... |
//   serve SEGMENT... | rm SEGMENT... | flush SEGMENT... | fleet show|export
// (flush and fleet when built with procsafe::redis: docs/redis.md).
// Exit status: 0 success, 1 a failure (one line on stderr), 2 a usage error.
#include "common.hpp"

#include <procsafe/detail/cli_options.hpp>
#include <procsafe/version.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#if defined(PROCSAFE_CLI_REDIS)
#include <procsafe/redis_cli.hpp>
#endif

#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <sstream>
#include <string_view>

namespace {

using procsafe::cli::failure;

/// A command's manual page: what `--help` prints besides the options.
struct manual {
    std::string synopsis;
    std::string description;  // paragraphs, one line each: wrapped when printed
    std::string examples;     // lines as they are
};

std::string wrap(const std::string& text, std::size_t indent, std::size_t width = 78) {
    std::string out;
    std::istringstream paragraphs(text);
    std::string paragraph;
    bool first = true;
    while (std::getline(paragraphs, paragraph)) {
        if (!first) out += "\n";
        first = false;
        std::istringstream words(paragraph);
        std::string word, line;
        while (words >> word) {
            if (!line.empty() && indent + line.size() + 1 + word.size() > width) {
                out += std::string(indent, ' ') + line + "\n";
                line.clear();
            }
            line += (line.empty() ? "" : " ") + word;
        }
        out += std::string(indent, ' ') + line + "\n";
    }
    return out;
}

/// Help in the shape of a manual page: NAME, SYNOPSIS, DESCRIPTION,
/// ARGUMENTS, OPTIONS, COMMANDS, EXAMPLES.
class man_formatter : public CLI::Formatter {
public:
    explicit man_formatter(std::shared_ptr<std::map<const CLI::App*, manual>> pages) : pages_(std::move(pages)) {}

    std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode) const override {
        const auto it = pages_->find(app);
        const manual page = it != pages_->end() ? it->second : manual{};
        std::string full = app->get_parent() == nullptr ? app->get_name() : "procsafe " + app->get_name();
        std::string out = "NAME\n    " + full + " - " + app->get_description() + "\n";
        out += "\nSYNOPSIS\n    " + (page.synopsis.empty() ? name : page.synopsis) + "\n";
        if (!page.description.empty()) out += "\nDESCRIPTION\n" + wrap(page.description, 4);
        const auto positionals = app->get_options([](const CLI::Option* o) { return o->get_positional(); });
        if (!positionals.empty()) {
            out += "\nARGUMENTS\n";
            for (const auto* o : positionals) out += item(o->get_name(true, false), o->get_description());
        }
        const auto options = app->get_options([](const CLI::Option* o) { return o->nonpositional(); });
        if (!options.empty()) {
            out += "\nOPTIONS\n";
            for (const auto* o : options) out += item(o->get_name(false, true) + make_option_opts(o), o->get_description());
        }
        const auto subs = app->get_subcommands([](const CLI::App*) { return true; });
        if (!subs.empty()) {
            out += "\nCOMMANDS\n";
            for (const auto* s : subs) out += item(s->get_name(), s->get_description());
            out += "\n    procsafe COMMAND --help shows a command's options and examples.\n";
        }
        if (!page.examples.empty()) {
            out += "\nEXAMPLES\n";
            std::istringstream lines(page.examples);
            for (std::string l; std::getline(lines, l);) out += (l.empty() ? "" : "    " + l) + "\n";
        }
        if (app->get_parent() == nullptr) {
            out += "\nEXIT STATUS\n    0 success; 1 a failure, said in one line on stderr (a missing or foreign\n"
                   "    segment, no permission, a port in use); 2 a usage error.\n";
        }
        return out;
    }

private:
    static std::string item(const std::string& name, const std::string& description) {
        constexpr std::size_t column = 30;
        std::string out = "    " + name;
        if (out.size() + 2 > column) {
            out += "\n";
            out += wrap(description, column);
        } else {
            const std::string body = wrap(description, column);
            out += std::string(column - out.size(), ' ') + body.substr(std::min(body.size(), column));
        }
        return out;
    }

    std::shared_ptr<std::map<const CLI::App*, manual>> pages_;
};

}  // namespace

int main(int argc, char** argv) {
    namespace cli = procsafe::cli;
    auto pages = std::make_shared<std::map<const CLI::App*, manual>>();

    CLI::App app{"see procsafe's shared counters from outside", "procsafe"};
    app.formatter(std::make_shared<man_formatter>(pages));  // before the subcommands: they inherit it
    app.require_subcommand(1);
    app.set_help_flag("-h,--help", "print this help and exit");
    app.set_version_flag("--version",
                         fmt::format("procsafe {}.{}.{}", PROCSAFE_VERSION_MAJOR, PROCSAFE_VERSION_MINOR, PROCSAFE_VERSION_PATCH),
                         "print the version and exit");
    (*pages)[&app] = {
        "procsafe [--help] [--version] COMMAND [ARGS...]",
        "Reads procsafe segments (POSIX shared memory under /dev/shm) without writing a byte and without "
        "waiting on the processes that use them: read permission on a segment is enough.\n"
        "Lists the segments on this host, shows or watches their objects (counters, arrays, histograms, "
        "gauges, latches, barriers) with their help texts and units, and exports them in the Prometheus "
        "text format: once, to stdout or to a file for node_exporter's textfile collector, or over HTTP "
        "for Prometheus to scrape.",
        "procsafe list\n"
        "procsafe show web\n"
        "procsafe watch web --interval 0.5\n"
        "procsafe export web jobs --format prometheus --output /var/lib/node_exporter/procsafe.prom\n"
        "procsafe serve web --listen 127.0.0.1:9464"};

    cli::list_options list_o;
    auto* list = app.add_subcommand("list", "every procsafe segment on this host");
    list->add_flag("--json", list_o.json, "one JSON array, an object per segment");
    list->add_flag("-a,--all", list_o.all, "also the shared memory objects that are not procsafe's");
    (*pages)[list] = {
        "procsafe list [--json] [--all]",
        "One row per procsafe segment under /dev/shm: its size and the bytes its objects take, its "
        "owner and mode, the process that created it and whether that process still runs, and how many "
        "objects it holds. A segment this user may not read is listed as such (\"no permission\"); "
        "shared memory objects that are not procsafe's are left out, unless --all.",
        "procsafe list\n"
        "procsafe list --json | jq -r '.[] | select(.creator_alive == false) | .name'"};

    cli::show_options show_o;
    auto* show = app.add_subcommand("show", "a segment's objects, their values and metadata");
    show->add_option("SEGMENT", show_o.segment, "the segment's name (as under /dev/shm)")->required();
    show->add_flag("--json", show_o.json, "one JSON object: the segment's facts and its objects");
    (*pages)[show] = {
        "procsafe show [--json] SEGMENT",
        "Every object in the segment, read now: its name, type, metric type (counter, gauge, histogram), "
        "value, unit and help text. An array has a row per element, under its label; a histogram a row "
        "per bucket (cumulative, as Prometheus counts them), its sum and count; a mutex counter the number "
        "of times its lock was recovered from a process that died holding it. An object still being "
        "constructed, or whose constructor died, says so.",
        "procsafe show web\n"
        "procsafe show web --json | jq '.objects[] | {name, value}'"};

    cli::watch_options watch_o;
    auto* watch = app.add_subcommand("watch", "a segment's values and their rates, live");
    watch->add_option("SEGMENT", watch_o.segment, "the segment's name")->required();
    procsafe::detail::seconds_option(watch->add_option("-i,--interval", watch_o.interval, "between refreshes"), 0.01, 86400)
        ->option_text("SECONDS=1");
    watch->add_option("-n,--count", watch_o.count, "stop after N refreshes (0: until interrupted)")
        ->option_text("N=0")
        ->check(CLI::NonNegativeNumber);
    (*pages)[watch] = {
        "procsafe watch [--interval SECONDS] [--count N] SEGMENT",
        "Each value of the segment and its rate per second since the previous refresh, redrawn in place "
        "on a terminal; on a pipe or a file, one line per value and refresh (time, name, value, rate). "
        "A histogram shows its count and sum. Ctrl-C (SIGINT) or SIGTERM ends it with status 0.\n"
        "When the segment is removed, watch says so once and keeps trying; when it comes back (a server "
        "restarted and recreated it), watch re-attaches, says so, and starts the rates over.",
        "procsafe watch web\n"
        "procsafe watch web --interval 0.2 --count 10 > web.log"};

    cli::export_options export_o;
    auto* exp = app.add_subcommand("export", "segments in the Prometheus text format, once");
    exp->add_option("SEGMENT", export_o.segments, "the segments' names")->required();
    exp->add_option("-f,--format", export_o.format, "the output format; the one there is: prometheus")
        ->option_text("FORMAT=prometheus");
    exp->add_option("-o,--output", export_o.output,
                    "write FILE instead of stdout, atomically (a temporary file in its directory, then renamed); - is stdout")
        ->option_text("FILE")
        ->check([](const std::string& file) { return file.empty() ? "must name a file (- or no --output: stdout)" : ""; });
    exp->add_flag("--allow-missing", export_o.allow_missing, "leave out a segment that does not exist (with a warning)");
    (*pages)[exp] = {
        "procsafe export [--format prometheus] [--output FILE] [--allow-missing] SEGMENT...",
        "The Prometheus text format 0.0.4 of every object in the segments, each sample labelled "
        "segment=\"NAME\": one # HELP and # TYPE per metric however many segments hold it, counters ending "
        "in _total, histograms as _bucket, _sum and _count. No timestamps: node_exporter's textfile "
        "collector skips a file that has one. Objects that cannot be exported (a user type, one still being "
        "constructed) are left out, with a warning on stderr.\n"
        "With --output, the file is replaced in one rename, so node_exporter never reads half of it. Keep "
        "each help text the same in every file: node_exporter drops a metric whose help differs between "
        "files.",
        "procsafe export web\n"
        "procsafe export web jobs --output /var/lib/prometheus/node-exporter/procsafe.prom\n"
        "# from cron, every minute:\n"
        "* * * * * procsafe export web --output /var/lib/prometheus/node-exporter/web.prom"};

    cli::serve_options serve_o;
    auto* serve = app.add_subcommand("serve", "serve segments over HTTP for Prometheus to scrape");
    serve->add_option("SEGMENT", serve_o.segments, "the segments' names (they need not exist yet)")->required();
    serve->add_option("-l,--listen", serve_o.listen, "the address to listen on; port 0 picks a free port")
        ->option_text("HOST:PORT=127.0.0.1:9464");
    (*pages)[serve] = {
        "procsafe serve [--listen HOST:PORT] SEGMENT...",
        "An HTTP server: GET /metrics answers the Prometheus text format of the segments (as export "
        "writes it) read at that moment, with Content-Type text/plain; version=0.0.4; GET / a line that "
        "points there; anything else 404.\n"
        "A segment that does not exist yet, is removed, or is recreated (the program that owns it "
        "restarted) is followed without restarting the exporter: it is absent from /metrics while it is "
        "missing, and each change is logged once on stderr. The address it listens on is printed on stdout "
        "(\"listening on 127.0.0.1:9464\"). SIGINT or SIGTERM stops it with status 0.\n"
        "Slow or idle clients cannot hold up a scrape: a request's head must arrive within 5 s of the "
        "connection (or of its previous response), its response must be taken within 10 s more, and an "
        "idle connection is closed after 5 s; of more than 256 open connections, the one waiting longest is "
        "closed. It listens on 127.0.0.1 unless told otherwise: --listen 0.0.0.0:9464 exposes the counters "
        "to every host that can reach this one.",
        "procsafe serve web\n"
        "procsafe serve web jobs --listen 127.0.0.1:9464\n"
        "# prometheus.yml:\n"
        "#   scrape_configs:\n"
        "#     - job_name: procsafe\n"
        "#       static_configs: [{targets: ['127.0.0.1:9464']}]  # a Prometheus on this host\n"
        "# (one on another host scrapes the address given to --listen, e.g. 10.0.0.7:9464)"};

    cli::rm_options rm_o;
    auto* rm = app.add_subcommand("rm", "remove segments");
    rm->add_option("SEGMENT", rm_o.segments, "the segments' names")->required();
    rm->add_flag("--force", rm_o.force, "remove the name even when it is not a procsafe segment, or not initialized");
    (*pages)[rm] = {
        "procsafe rm [--force] SEGMENT...",
        "Removes the segments' names. Processes that map a segment keep it until they unmap it; the name "
        "is free at once. A name that is not a procsafe segment is not removed, unless --force.",
        "procsafe rm web\n"
        "procsafe rm --force stuck-segment"};

#if defined(PROCSAFE_CLI_REDIS)
    procsafe::redis::cli::commands redis;
    redis.add_to(app);
    (*pages)[app.get_subcommand("flush")] = {
        "procsafe flush [--redis HOST:PORT | --redis-cluster SEEDS] [--host-id ID] [--namespace NAME] [--interval SECONDS] [--once] "
        "SEGMENT...",
        "Carries the segments' counters to Redis, so that a fleet of hosts keeps exact totals there: each "
        "flush sends every counter's cumulative value, and a Redis function adds the difference from what "
        "this host reported last. A retry, a replay after the flusher was killed or a reply lost on the "
        "network changes nothing twice; Redis killed and restarted from its AOF loses nothing. Gauges "
        "are kept per host and expire when their host stops flushing. With --redis-cluster it routes to a "
        "Redis Cluster (MOVED, ASK, failover), a new namespace spread over --stripes hash slots.\n"
        "The password comes from PROCSAFE_REDIS_PASSWORD or --password-file, never from the command line. "
        "SIGINT or SIGTERM makes a last flush and exits 0; a wait on Redis is not interrupted, so against a "
        "Redis that does not answer (stopped, a partition) it exits within 2 x (--connect-timeout + "
        "--command-timeout) of the signal (about 2 x --command-timeout against a stopped server). "
        "docs/redis.md has the key layout and the rules.",
        "procsafe flush web --redis 10.0.0.5:6379 --host-id web-17 --interval 1\n"
        "procsafe flush web jobs --redis 10.0.0.5:6379 --namespace shop --once --retry-for 30\n"
        "procsafe flush web --redis-cluster 10.0.0.5:7000,10.0.0.6:7000 --stripes 48"};
    (*pages)[app.get_subcommand("fleet")] = {
        "procsafe fleet show|export [--redis HOST:PORT | --redis-cluster SEEDS] [--namespace NAME] ...",
        "Reads the fleet totals that procsafe flush keeps in Redis: show prints them with the reporters "
        "they came from (--json for a program), export writes them in the Prometheus text format.",
        "procsafe fleet show --redis 10.0.0.5:6379 --namespace web\n"
        "procsafe fleet export --redis 10.0.0.5:6379 --output /var/lib/prometheus/node-exporter/fleet.prom"};
    constexpr const char* commands = "list, show, watch, export, serve, rm, flush, fleet";
#else
    constexpr const char* commands = "list, show, watch, export, serve, rm";
    if (argc > 1 && (std::string_view(argv[1]) == "flush" || std::string_view(argv[1]) == "fleet")) {
        std::fprintf(stderr, "procsafe: '%s' needs procsafe::redis, which this build of procsafe left out "
                             "(hiredis or nlohmann/json was not found: docs/redis.md)\n", argv[1]);
        return 1;
    }
#endif

    // CLI11 would call an unknown command "a subcommand is required".
    const auto known = app.get_subcommands([&](const CLI::App* sub) { return argc > 1 && sub->check_name(argv[1]); });
    if (argc > 1 && argv[1][0] != '-' && known.empty()) {
        std::fprintf(stderr, "procsafe: unknown command '%s' (%s; see procsafe --help)\n", argv[1], commands);
        return 2;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // the help or the version
        std::fputs(procsafe::detail::usage_line(app, e.what()).c_str(), stderr);
        return 2;
    }

#if defined(PROCSAFE_CLI_REDIS)
    if (redis.selected()) return redis.run();  // says its own errors, "procsafe flush: ..."
#endif

    // A segment named twice would give its series twice (an invalid exposition).
    for (auto* names : {&export_o.segments, &serve_o.segments, &rm_o.segments}) {
        std::vector<std::string> once;
        for (auto& n : *names)
            if (std::find(once.begin(), once.end(), n) == once.end()) once.push_back(std::move(n));
        *names = std::move(once);
    }

    try {
        for (const auto* sub : app.get_subcommands()) cli::command_name = sub->get_name();
        if (list->parsed()) return cli::run_list(list_o);
        if (show->parsed()) return cli::run_show(show_o);
        if (watch->parsed()) return cli::run_watch(watch_o);
        if (exp->parsed()) return cli::run_export(export_o);
        if (serve->parsed()) return cli::run_serve(serve_o);
        if (rm->parsed()) return cli::run_rm(rm_o);
    } catch (const failure& f) {
        cli::print_error(f.what());
        return 1;
    } catch (const procsafe::error& e) {
        cli::print_error(cli::describe(e));
        return 1;
    } catch (const std::exception& e) {
        cli::print_error(e.what());
        return 1;
    }
    return 2;
}
