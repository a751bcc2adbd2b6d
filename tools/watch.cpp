// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// procsafe watch: values and their rates, refreshed in place on a terminal
// (plain lines otherwise), following the segment through removal and
// recreation.
#include "common.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>

#include <sys/ioctl.h>
#include <unistd.h>

namespace procsafe::cli {

namespace {

using steady = std::chrono::steady_clock;

/// Waits until `deadline` or SIGINT/SIGTERM (blocked, taken here
/// synchronously). True when a signal came.
bool wait_for_signal(const sigset_t& sigs, steady::time_point deadline) {
    for (;;) {
        const auto left = deadline - steady::now();
        if (left <= steady::duration::zero()) return false;
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        const timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
        if (::sigtimedwait(&sigs, nullptr, &ts) > 0) return true;
        // EAGAIN: the time is up (checked above); EINTR: another signal, wait on.
    }
}

std::string wall_time() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
    return fmt::format("{}.{:03}", buf, ms);
}

/// The segment watched: attached, missing, or failing to open, with the
/// state changes said once.
class watched {
public:
    explicit watched(procsafe::segment_view v) : name_(v.name()), incarnation_(v.incarnation()), view_(std::move(v)) {}

    /// The objects now, or nullopt while the segment cannot be read. Sets
    /// `event` to a line when the state changed, and `restarted` when the
    /// values start over (another segment under the name).
    std::optional<std::vector<procsafe::object_info>> read(std::string& event, bool& restarted) {
        restarted = false;
        if (view_) {
            bool stale = true;
            try {
                stale = view_->is_stale();
            } catch (const procsafe::error&) {
            }
            if (stale) view_.reset();
        }
        if (!view_) {
            try {
                view_.emplace(procsafe::segment_view::open(name_));
            } catch (const procsafe::error& e) {
                if (e.code_value() == errc::segment_not_found) {
                    say(event, "missing", fmt::format("segment '{}' is missing (removed); waiting for it to come back", name_));
                } else {
                    say(event, "error:" + describe(e), describe(e) + "; retrying");
                }
                return std::nullopt;
            }
            restarted = view_->incarnation() != incarnation_;
            incarnation_ = view_->incarnation();
            say(event, "attached",
                restarted ? fmt::format("segment '{}' was recreated: re-attached (values and rates start over)", name_)
                          : fmt::format("segment '{}' is back: re-attached", name_));
        }
        try {
            return view_->objects();
        } catch (const procsafe::error& e) {
            view_.reset();
            say(event, "error:" + describe(e), describe(e) + "; retrying");
            return std::nullopt;
        }
    }

private:
    void say(std::string& event, const std::string& state, const std::string& line) {
        if (state == state_) return;
        state_ = state;
        event = line;
    }

    std::string name_;
    std::uint64_t incarnation_;
    std::optional<procsafe::segment_view> view_;
    std::string state_ = "attached";
};

struct sample {
    double value;
    steady::time_point at;
};

std::string rate_text(const std::optional<double>& r) {
    if (!r || !std::isfinite(*r)) return "-";
    return fmt::format("{:.1f}", *r);
}

std::string value_text(const procsafe::number& n) {
    return std::holds_alternative<std::monostate>(n) ? "?" : procsafe::to_string(n);
}

}  // namespace

int run_watch(const watch_options& o) {
    watched seg(open_view(o.segment));  // a segment missing at the start is an error

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &sigs, nullptr);

    const bool tty = ::isatty(STDOUT_FILENO) == 1;
    const auto interval = std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.interval));
    std::map<std::string, sample> last;
    std::string status_line;  // the last state change, shown on a terminal
    if (!tty) std::printf("# procsafe watch %s: time, series, value, rate per second\n", o.segment.c_str());

    auto next = steady::now();
    for (long n = 0; o.count == 0 || n < o.count; ++n) {
        if (n > 0 && wait_for_signal(sigs, next)) break;
        next += interval;
        if (next < steady::now()) next = steady::now() + interval;  // fell behind (a stopped terminal): no burst

        std::string event;
        bool restarted = false;
        const auto objects = seg.read(event, restarted);
        const auto now = steady::now();
        const std::string when = wall_time();
        if (restarted) last.clear();
        if (!event.empty()) {
            status_line = when + "  " + event;
            if (!tty) std::printf("# %s %s\n", when.c_str(), event.c_str());
        }

        table t({tty ? "NAME" : "TIME", tty ? "VALUE" : "NAME", tty ? "RATE/s" : "VALUE", tty ? "" : "RATE/s"},
                {false, tty, true, true});
        std::map<std::string, sample> seen;
        if (objects) {
            for (const auto& obj : *objects) {
                for (const auto& s : series_of(obj)) {
                    const double v = as_double(s.value);
                    std::optional<double> rate;
                    if (const auto it = last.find(s.name); it != last.end()) {
                        const double dt = std::chrono::duration<double>(now - it->second.at).count();
                        if (dt > 0) rate = (v - it->second.value) / dt;
                    }
                    seen[s.name] = {v, now};
                    if (tty) t.add({s.name, value_text(s.value), rate_text(rate)});
                    else t.add({when, s.name, value_text(s.value), rate_text(rate)});
                }
            }
        }
        last = std::move(seen);

        if (!tty) {
            auto lines = t.lines();
            for (std::size_t i = 1; i < lines.size(); ++i) std::printf("%s\n", lines[i].c_str());  // no header per refresh
            std::fflush(stdout);
            continue;
        }
        winsize ws{};
        const std::size_t cols = ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
        const std::size_t rows = ws.ws_row > 4 ? ws.ws_row : 24;
        std::vector<std::string> screen;
        screen.push_back(fmt::format("procsafe watch {}   every {}s   {}   (Ctrl-C quits)", o.segment, o.interval, when));
        screen.push_back(status_line);
        screen.push_back("");
        for (auto& l : t.lines()) screen.push_back(std::move(l));
        if (!objects) screen.push_back("(no values: see above)");
        if (screen.size() > rows - 1) {
            const std::size_t hidden = screen.size() - (rows - 2);
            screen.resize(rows - 2);
            screen.push_back(fmt::format("... {} more (a taller terminal shows them)", counted(hidden, "row")));
        }
        std::string frame = n == 0 ? "\x1b[2J\x1b[H" : "\x1b[H";  // clear once, then redraw in place
        for (auto& l : screen) {
            if (l.size() > cols) l.resize(cols);
            frame += l + "\x1b[K\n";  // erase what the previous frame left on the line
        }
        frame += "\x1b[J";  // and below the table
        std::fputs(frame.c_str(), stdout);
        std::fflush(stdout);
    }
    return 0;
}

}  // namespace procsafe::cli
