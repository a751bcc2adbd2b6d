// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// procsafe serve: GET /metrics in the Prometheus text format, read from the
// segments at each scrape; segments that appear, vanish or are recreated are
// followed without a restart.
#include "common.hpp"
#include "guarded_server.hpp"

#include <procsafe/prometheus.hpp>

#include <fmt/format.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

namespace procsafe::cli {

namespace {

struct endpoint {
    std::string host;
    int port = 0;
    std::string str() const { return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port); }
};

/// HOST:PORT or [IPV6]:PORT, the port 0 to 65535 (0: any free port).
endpoint parse_listen(const std::string& s) {
    auto bad = [&](const std::string& why) -> failure {
        return failure(fmt::format("bad --listen address '{}': {} (expected HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464)", s, why));
    };
    endpoint ep;
    std::string port;
    if (!s.empty() && s[0] == '[') {
        const auto close = s.find("]:");
        if (close == std::string::npos) throw bad("no ]:PORT after the IPv6 address");
        ep.host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        const auto colon = s.rfind(':');
        if (colon == std::string::npos) throw bad("no port");
        ep.host = s.substr(0, colon);
        port = s.substr(colon + 1);
        if (ep.host.find(':') != std::string::npos) throw bad("an IPv6 address goes in brackets");
    }
    if (ep.host.empty()) throw bad("no host");
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) throw bad("the port is not a number");
    ep.port = std::stoi(port);
    if (ep.port > 65535) throw bad("the port is above 65535");
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
        throw bad(fmt::format("cannot resolve '{}': {}", ep.host, ::gai_strerror(rc)));
    }
    ::freeaddrinfo(found);
    return ep;
}

void log_line(const std::string& line) {
    const std::string text = "procsafe serve: " + terminal_safe(line) + "\n";
    std::fputs(text.c_str(), stderr);
}

/// The segments served, each with the view the last scrape used: reopened
/// when its name no longer refers to it (removed, perhaps recreated) or when
/// it could not be opened before. A change of state is logged once.
class sources {
public:
    explicit sources(const std::vector<std::string>& names) {
        for (const auto& n : names) sources_.push_back({n, std::nullopt, {}, 0, {}});
    }

    struct result {
        std::string body;
        bool any_read = false;  // false: no segment could be read (answered 503)
    };

    /// The exposition of every segment that can be read now, then one
    /// comment line per segment that cannot, saying why (a Prometheus
    /// server ignores comments; a person reading the page sees them).
    result scrape() {
        const std::lock_guard lock(mutex_);
        procsafe::prometheus_exposition text;
        std::string missing;
        bool any = false;
        for (auto& s : sources_) {
            if (attach(s)) {
                try {
                    text.add(s.name, s.view->objects());
                    any = true;
                    continue;
                } catch (const procsafe::error& e) {
                    s.view.reset();
                    s.why = describe(e);
                    change(s, "error", s.why + ": left out of /metrics until it can be read");
                }
            }
            missing += "# procsafe serve: segment '" + s.name + "' left out: " + comment_safe(s.why) + '\n';
        }
        // Each warning once (a scrape every 15 s would repeat it forever).
        // Their number is bounded: past it, said once, then silence.
        for (const auto& w : text.warnings()) {
            if (warned_.size() < max_warnings) {
                if (warned_.insert(w).second) log_line("warning: " + w);
            } else if (!warned_.contains(w) && !warnings_suppressed_) {
                warnings_suppressed_ = true;
                log_line(fmt::format("warning: {} distinct warnings logged: further ones are not logged", max_warnings));
            }
        }
        return {text.str() + missing, any};
    }

private:
    /// One line of printable text (a reason may quote anything).
    static std::string comment_safe(const std::string& s) {
        std::string out = terminal_safe(s);
        for (char& c : out)
            if (c == '\n' || c == '\r') c = ' ';
        return out;
    }

    struct source {
        std::string name;
        std::optional<procsafe::segment_view> view;
        std::string state;  // "", "serving", "missing", "error"
        std::uint64_t incarnation;
        std::string why;  // why it cannot be read, when it cannot
    };

    static void change(source& s, const std::string& state, const std::string& line) {
        if (s.state == state && state != "serving") return;
        s.state = state;
        log_line(line);
    }

    /// True when s.view can be read.
    static bool attach(source& s) {
        if (s.view) {
            bool stale = true;
            try {
                stale = s.view->is_stale();
            } catch (const procsafe::error&) {
            }
            if (!stale) return true;
            s.view.reset();
        }
        try {
            s.view.emplace(procsafe::segment_view::open(s.name));
        } catch (const procsafe::error& e) {
            if (e.code_value() == errc::segment_not_found) {
                s.why = "not found";
                change(s, "missing",
                       s.state == "serving" ? fmt::format("segment '{}' was removed: left out of /metrics until it is back", s.name)
                                            : fmt::format("segment '{}' not found (yet): left out of /metrics until it appears", s.name));
            } else {
                s.why = describe(e);
                change(s, "error", s.why + ": left out of /metrics until it can be read");
            }
            return false;
        }
        const std::uint64_t inc = s.view->incarnation();
        if (s.state != "serving" || inc != s.incarnation) {
            const bool recreated = s.incarnation != 0 && inc != s.incarnation;
            s.incarnation = inc;
            change(s, "serving",
                   recreated ? fmt::format("segment '{}' was recreated: serving the new one", s.name)
                             : fmt::format("segment '{}': serving it", s.name));
        }
        return true;
    }

    static constexpr std::size_t max_warnings = 10'000;
    std::mutex mutex_;
    std::vector<source> sources_;
    std::set<std::string> warned_;
    bool warnings_suppressed_ = false;
};

}  // namespace

int run_serve(const serve_options& o) {
    const endpoint ep = parse_listen(o.listen);
    for (const auto& name : o.segments) {
        try {
            procsafe::detail::check_segment_name(name);
        } catch (const procsafe::error& e) {
            throw failure(describe(e));
        }
    }

    // SIGINT and SIGTERM are taken synchronously by sigwait() below: blocked
    // here, before any thread starts, so that every thread inherits the mask.
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGINT);
    sigaddset(&term, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &term, nullptr);
    std::signal(SIGPIPE, SIG_IGN);  // a scraper that hangs up mid-response

    sources segs(o.segments);
    // Slow, idle or many clients cannot keep a scrape waiting: guarded_server.hpp.
    guarded_server svr(guarded_server::limits{});
    // httplib's default socket options set SO_REUSEPORT: a second exporter
    // would share the port silently. SO_REUSEADDR only: a port in use is an error.
    svr.set_socket_options([](socket_t sock) {
        int yes = 1;
        ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
        // None of the segments can be read: an error status, so that the
        // scrape fails and Prometheus's `up` says so (a 200 with nothing
        // in it would look like a healthy target with no metrics).
        auto [body, any_read] = segs.scrape();
        res.status = any_read ? 200 : 503;
        res.set_content(std::move(body), std::string(procsafe::prometheus_exposition::content_type));
    });
    std::string segment_list;
    for (const auto& n : o.segments) segment_list += (segment_list.empty() ? "" : ", ") + n;
    const std::string index = fmt::format("procsafe exporter for {}: metrics at /metrics\n", segment_list);
    svr.Get("/", [&](const httplib::Request&, httplib::Response& res) { res.set_content(index, "text/plain; charset=utf-8"); });
    svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
        if (res.status == 404) res.set_content("not found: try /metrics\n", "text/plain; charset=utf-8");
    });

    endpoint bound = ep;
    errno = 0;
    if (ep.port == 0) {
        bound.port = svr.bind_to_any_port(ep.host);
        if (bound.port <= 0) throw failure(fmt::format("cannot listen on {}: {}", ep.str(), std::system_category().message(errno)));
    } else if (!svr.bind_to_port(ep.host, ep.port)) {
        throw failure(fmt::format("cannot listen on {}: {}", ep.str(),
                                  errno != 0 ? std::system_category().message(errno) : "bind failed"));
    }
    std::printf("listening on %s\n", bound.str().c_str());
    std::fflush(stdout);
    (void)segs.scrape();  // log each segment's state now, not at the first scrape

    std::atomic<bool> stopping{false}, failed{false}, done{false};
    std::thread server([&] {
        svr.listen_after_bind();
        done = true;
        if (!stopping.load()) {  // the server gave up by itself: end the wait below
            failed = true;
            ::kill(::getpid(), SIGTERM);
        }
    });
    int sig = 0;
    while (::sigwait(&term, &sig) != 0) {
    }
    stopping = true;
    // stop() does nothing until the server runs: a signal right after the
    // bind must not leave it listening forever.
    while (!done.load() && !svr.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    svr.stop();
    server.join();
    svr.close_connections();
    if (failed) throw failure(fmt::format("the server on {} stopped unexpectedly", bound.str()));
    return 0;
}

}  // namespace procsafe::cli
