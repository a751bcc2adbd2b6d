// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#include "cluster.hpp"

#include "common.hpp"

#include <hiredis.h>

#include <algorithm>
#include <array>
#include <optional>
#include <unordered_map>
#include <chrono>
#include <thread>

namespace procsafe::redis::detail {

namespace {

constexpr int slot_count = 16384;
constexpr int max_hops = 5;       // redirections followed for one command
constexpr int max_retries = 20;   // TRYAGAIN / CLUSTERDOWN: waits of 50 ms, then again
constexpr std::size_t max_masters = 1000;

constexpr std::array<std::uint16_t, 256> crc16_table() {
    std::array<std::uint16_t, 256> t{};
    for (unsigned i = 0; i < 256; ++i) {
        std::uint16_t c = static_cast<std::uint16_t>(i << 8);
        for (int b = 0; b < 8; ++b) c = static_cast<std::uint16_t>((c & 0x8000) != 0 ? (c << 1) ^ 0x1021 : c << 1);
        t[i] = c;
    }
    return t;
}
constexpr auto crc16_of = crc16_table();

std::uint16_t crc16(std::string_view s) {
    std::uint16_t c = 0;
    for (const char ch : s) c = static_cast<std::uint16_t>((c << 8) ^ crc16_of[((c >> 8) ^ static_cast<unsigned char>(ch)) & 0xff]);
    return c;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

void nap_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

}  // namespace

std::uint16_t key_slot(std::string_view key) {
    const auto open = key.find('{');
    if (open != std::string_view::npos) {
        const auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
    }
    return static_cast<std::uint16_t>(crc16(key) & (slot_count - 1));
}

static bool host_ok(std::string_view host) {
    if (host.empty() || host.size() > 255) return false;
    for (const char c : host)
        if (c <= ' ' || c > '~') return false;
    return true;
}

bool parse_redirect(std::string_view text, std::uint16_t& slot, endpoint& to, const std::string& host) {
    // "MOVED 3999 127.0.0.1:6381", "ASK 3999 ::1:6381" (Redis writes an
    // IPv6 address without brackets), "MOVED 3999 :6381" (Redis 7: the
    // host of this connection).
    const auto sp1 = text.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : text.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return false;
    const auto n = parse_integer(text.substr(sp1 + 1, sp2 - sp1 - 1));
    if (!n || *n < 0 || *n >= slot_count) return false;
    std::string_view where = text.substr(sp2 + 1);
    const auto colon = where.rfind(':');
    if (colon == std::string_view::npos) return false;
    std::string_view h = where.substr(0, colon);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    const auto port = parse_integer(where.substr(colon + 1));
    if (!port || *port < 1 || *port > 65535) return false;
    to.host = h.empty() ? host : std::string(h);
    to.port = static_cast<int>(*port);
    if (!host_ok(to.host)) return false;
    slot = static_cast<std::uint16_t>(*n);
    return true;
}

bool is_redirect(const redisReply& r) {
    if (r.type != REDIS_REPLY_ERROR) return false;
    const std::string_view t(r.str, r.len);
    return starts_with(t, "MOVED ") || starts_with(t, "ASK ") || starts_with(t, "TRYAGAIN") || starts_with(t, "CLUSTERDOWN");
}

router::router(connection_options o, std::function<void(connection&)> on_connect)
    : o_(std::move(o)), on_connect_(std::move(on_connect)) {}

router::~router() = default;

std::string router::where() const {
    if (!clustered()) return "redis " + o_.redis.str();
    std::string s = "redis cluster ";
    for (std::size_t i = 0; i < o_.cluster.size(); ++i) s += (i ? "," : "") + o_.cluster[i].str();
    return s;
}

void router::reset() noexcept {
    conns_.clear();
    slots_.clear();
    nodes_.clear();
}

connection& router::connection_to(const endpoint& e) {
    const std::string k = e.str();
    if (const auto it = conns_.find(k); it != conns_.end()) return *it->second;
    connection_options co = o_;
    co.redis = e;
    co.cluster.clear();
    std::unique_ptr<connection> c;
    try {
        c = std::make_unique<connection>(co);
    } catch (const command_failure& e) {  // AUTH refused: no connection, as when refused
        throw io_failure(e.what());
    }
    ++connects_;
    if (on_connect_) on_connect_(*c);
    return *conns_.emplace(k, std::move(c)).first->second;
}

void router::refresh() {
    // Known masters first (they answer fastest when the map merely moved),
    // then the seeds. A node that does not answer is skipped.
    std::vector<endpoint> ask = nodes_;
    for (const auto& s : o_.cluster)
        if (std::none_of(ask.begin(), ask.end(), [&](const endpoint& e) { return e.str() == s.str(); })) ask.push_back(s);
    std::string why;
    for (const auto& e : ask) {
        try {
            connection_options co = o_;
            co.redis = e;
            co.cluster.clear();
            connection c(co);
            reply r = c.run({"CLUSTER", "SLOTS"});
            if (is_error(*r)) {
                why = c.where() + ": CLUSTER SLOTS: " + text_of(*r);
                continue;
            }
            // [[start, end, [host, port, id, ...], replicas...], ...]:
            // read from a node we trust as much as the data it holds, but
            // checked: slots in range, ports in range, bounded counts.
            std::vector<endpoint> nodes;
            std::unordered_map<std::string, std::int16_t> index;  // endpoint text -> in nodes
            std::vector<std::int16_t> slots(slot_count, -1);
            std::size_t covered = 0;
            const std::size_t ranges = elements(*r);
            if (ranges > slot_count) throw command_failure(c.where() + ": CLUSTER SLOTS: " + std::to_string(ranges) + " ranges, more than the slots");
            for (std::size_t i = 0; i < ranges; ++i) {
                const auto& range = element(*r, i);
                if (elements(range) < 3) continue;
                const auto& m = element(range, 2);
                if (elements(m) < 2) continue;
                const auto lo = parse_integer(text_of(element(range, 0))), hi = parse_integer(text_of(element(range, 1)));
                const auto port = parse_integer(text_of(element(m, 1)));
                if (!lo || !hi || !port || *lo < 0 || *hi >= slot_count || *lo > *hi || *port <= 0 || *port > 65535) continue;
                const auto& h = element(m, 0);
                std::string host = h.type == REDIS_REPLY_STRING && h.len <= 255 ? text_of(h) : std::string("?");
                if (host.empty()) host = e.host;  // "the host you asked"
                if (!host_ok(host)) continue;     // "?" (unknown), or not a host name: that range is not served
                endpoint at;
                at.host = std::move(host);
                at.port = static_cast<int>(*port);
                auto [it, added] = index.emplace(at.str(), static_cast<std::int16_t>(nodes.size()));
                if (added) {
                    if (nodes.size() >= max_masters) throw command_failure(c.where() + ": CLUSTER SLOTS: more than " + std::to_string(max_masters) + " masters");
                    nodes.push_back(at);
                }
                for (auto s = *lo; s <= *hi; ++s) {
                    if (slots[static_cast<std::size_t>(s)] < 0) ++covered;
                    slots[static_cast<std::size_t>(s)] = it->second;
                }
            }
            if (covered == 0) {
                why = c.where() + ": CLUSTER SLOTS: no slot is served";
                continue;
            }
            nodes_ = std::move(nodes);
            slots_ = std::move(slots);
            // Connections to nodes that are masters no more stay until
            // reset(): a caller may hold one (a pipeline's replies are read
            // before any is settled); a MOVED from one is followed.
            return;
        } catch (const std::exception& ex) {
            why = ex.what();
        }
    }
    throw io_failure(where() + ": no node gave the slot map" + (why.empty() ? std::string() : " (last: " + why + ")"));
}

const endpoint& router::owner(std::uint16_t slot) {
    if (slots_.empty() || slots_[slot] < 0) refresh();
    if (slots_[slot] < 0) throw io_failure(where() + ": no master serves hash slot " + std::to_string(slot) + " (CLUSTERDOWN?)");
    return nodes_[static_cast<std::size_t>(slots_[slot])];
}

connection& router::node_for(std::string_view key) {
    if (!clustered()) return connection_to(o_.redis);
    return connection_to(owner(key_slot(key)));
}

std::string router::host_of_slot(std::uint16_t slot) const {
    if (!clustered()) return o_.redis.host;
    if (slots_.empty() || slots_[slot] < 0) return o_.cluster.front().host;
    return nodes_[static_cast<std::size_t>(slots_[slot])].host;
}

std::string router::host_of(std::string_view key) const { return host_of_slot(key_slot(key)); }

std::vector<endpoint> router::masters() {
    if (!clustered()) return {o_.redis};
    refresh();
    return nodes_;
}

reply router::run(std::string_view key, const std::vector<std::string>& args) {
    connection& c = node_for(key);
    return settle(c.run(args), key, args);
}

reply router::settle(reply r, std::string_view key, const std::vector<std::string>& args) {
    if (!is_redirect(*r)) return r;
    return follow(std::move(r), key_slot(key), args, 0);
}

reply router::follow(reply r, std::uint16_t slot, const std::vector<std::string>& args, int hops) {
    int retries = 0;
    std::optional<endpoint> asked;  // the node an ASK sent this command to: a TRYAGAIN from it is asked there again
    auto ask = [&](const endpoint& to) {
        connection& c = connection_to(to);
        c.append({"ASKING"});
        c.append(args);
        c.send();
        reply asking = c.next_reply();
        reply answer = c.next_reply();
        if (is_error(*asking)) throw command_failure(c.where() + ": ASKING: " + text_of(*asking));
        return answer;
    };
    while (is_redirect(*r)) {
        const std::string text = text_of(*r);
        if (!clustered()) {
            throw command_failure(where() + ": " + args.front() + ": " + text.substr(0, 200) +
                                  " (a Redis Cluster node: give its nodes with --redis-cluster)");
        }
        if (starts_with(text, "TRYAGAIN") || starts_with(text, "CLUSTERDOWN")) {
            // A slot half migrated with some of the keys moved, or a
            // failover under way: the same question again shortly.
            if (++retries > max_retries) {
                throw command_failure(where() + ": " + args.front() + ": " + text.substr(0, 200) + " (still, after 1 s)");
            }
            nap_ms(50);
            if (starts_with(text, "CLUSTERDOWN")) slots_.clear(), asked.reset();
            r = asked ? ask(*asked) : connection_to(owner(slot)).run(args);
            continue;
        }
        if (++hops > max_hops) {
            throw command_failure(where() + ": " + args.front() + ": redirected " + std::to_string(max_hops) +
                                  " times (last: " + text.substr(0, 200) + ")");
        }
        std::uint16_t to_slot = 0;
        endpoint to;
        const std::string here = host_of_slot(slot);
        if (!parse_redirect(text, to_slot, to, here)) {
            throw command_failure(where() + ": " + args.front() + ": a redirection not understood: " + text.substr(0, 200));
        }
        if (to_slot != slot) {  // not this command's slot: a node confused, or the map: learn it again
            slots_.clear();
            asked.reset();
            r = connection_to(owner(slot)).run(args);
            continue;
        }
        if (starts_with(text, "MOVED ")) {
            // The slot is served elsewhere now: remember it; the rest of
            // the map is learned again at the next refresh.
            asked.reset();
            if (!slots_.empty()) {
                auto it = std::find_if(nodes_.begin(), nodes_.end(), [&](const endpoint& x) { return x.str() == to.str(); });
                if (it == nodes_.end() && nodes_.size() < max_masters) {
                    nodes_.push_back(to);
                    it = nodes_.end() - 1;
                }
                if (it != nodes_.end()) slots_[slot] = static_cast<std::int16_t>(it - nodes_.begin());
            }
            r = connection_to(to).run(args);
        } else {  // ASK: this command only, on the importing node, after ASKING
            asked = to;
            r = ask(to);
        }
    }
    return r;
}

}  // namespace procsafe::redis::detail
