// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// Routing on hiredis 0.14, which has none: one Redis server, or a Redis
// Cluster found from seed nodes. What it covers (docs/redis.md, "Redis
// Cluster"): the slot map from CLUSTER SLOTS (learned from any seed or
// known node, refreshed after a redirect or a lost connection), one
// connection per master, commands routed by their key's hash slot, MOVED
// (the slot's new master, remembered), ASK (ASKING, then the command, on
// the node importing the slot), TRYAGAIN and CLUSTERDOWN (a short bounded
// wait, then again). Every hop and every wait is bounded. Not covered:
// reading from replicas, pub/sub, TLS, multi-slot commands (procsafe sends
// none: every command names keys of one slot).

#include "connection.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace procsafe::redis::detail {

/// Redis Cluster's hash slot of a key (CRC16 of the key, or of its first
/// non-empty {hash tag}, modulo 16384).
std::uint16_t key_slot(std::string_view key);

/// The reply is a redirection or a cluster in flux: MOVED, ASK, TRYAGAIN, CLUSTERDOWN.
bool is_redirect(const redisReply& r);

/// The slot and node of "MOVED SLOT HOST:PORT" or "ASK SLOT HOST:PORT"
/// (HOST an IPv6 address without brackets, or empty: `host`). False for
/// anything else, a host of more than 255 bytes or with a byte that is not
/// printable ASCII included.
bool parse_redirect(std::string_view text, std::uint16_t& slot, endpoint& to, const std::string& host);

class router {
public:
    /// Each new connection to a node is passed to on_connect (the flusher
    /// loads its function library there: every master it sends to has
    /// it, one that joins or is promoted later included). on_connect may throw
    /// io_failure.
    explicit router(connection_options o, std::function<void(connection&)> on_connect = {});
    ~router();
    router(const router&) = delete;
    router& operator=(const router&) = delete;

    /// o.cluster was given.
    bool clustered() const noexcept { return !o_.cluster.empty(); }

    /// The connection to the master of `key`'s slot (made, and the slot
    /// map learned, if needed). Throws: io_failure (no node answers).
    connection& node_for(std::string_view key);

    /// One command on `key`'s master, redirections followed. An error reply
    /// other than a redirection is returned. Throws: io_failure, and
    /// command_failure when the redirections do not settle.
    reply run(std::string_view key, const std::vector<std::string>& args);

    /// For pipelines: `r` is the reply of `args`, sent to node_for(key).
    /// A redirection is followed (args sent again where it points, bounded)
    /// and the final reply returned; any other reply is returned as it is.
    reply settle(reply r, std::string_view key, const std::vector<std::string>& args);

    /// Every master of the cluster (the slot map refreshed first), or the
    /// one server. Throws: io_failure.
    std::vector<endpoint> masters();

    /// The host of `key`'s master as the map names it (the seed's host when
    /// no map is known): what "MOVED SLOT :PORT" means.
    std::string host_of(std::string_view key) const;

    /// The connection to one node (made if needed).  Throws: io_failure.
    connection& connection_to(const endpoint& e);

    /// Drops every connection and forgets the slot map (after an I/O error:
    /// a pipeline's state is unknown, and the node may be gone).
    void reset() noexcept;

    /// Connections made so far (the first and every reconnect).
    std::uint64_t connects() const noexcept { return connects_; }

    /// "redis HOST:PORT", or "redis cluster HOST:PORT,HOST:PORT".
    std::string where() const;

private:
    void refresh();
    const endpoint& owner(std::uint16_t slot);
    std::string host_of_slot(std::uint16_t slot) const;
    reply follow(reply r, std::uint16_t slot, const std::vector<std::string>& args, int hops);

    connection_options o_;
    std::function<void(connection&)> on_connect_;
    std::map<std::string, std::unique_ptr<connection>> conns_;  // by endpoint text
    std::vector<endpoint> nodes_;           // masters, as the slot map names them
    std::vector<std::int16_t> slots_;       // slot -> index in nodes_, -1: unknown; empty: no map
    std::uint64_t connects_ = 0;
};

}  // namespace procsafe::redis::detail
