// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// procsafe::redis (the procsafe::redis target, a static library linking
// hiredis): exact fleet-wide totals of procsafe counters in Redis.
//
// Each host counts in shared memory at memory speed; a flusher reads its
// segments (segment_view: read-only, lock-free, never slows a writer) and
// sends Redis each counter's *cumulative* value. A Redis function applies,
// atomically, the difference between that value and what this host and
// this segment's incarnation reported last (its watermark) to the fleet
// total, and records the new watermark. A retry, a replay after a kill, a
// reply lost on the network: each changes nothing the second time. The
// header-only core (include/procsafe) does not depend on any of this.
//
// The key layout, the function's rules for counters and gauges, and when to
// use Prometheus instead: docs/redis.md.
//
// ```
// procsafe::redis::flush_options o;
// o.connection.redis = procsafe::redis::endpoint::parse("10.0.0.5:6379");
// o.connection.auth = procsafe::redis::credentials::from_environment();
// o.segments = {"web"};
// procsafe::redis::flusher f(o);
// std::atomic<bool> stop{false};
// std::thread t([&] { f.run(stop); });  // every o.interval seconds, until stop
// // ... count in segment "web" ...
// stop = true;
// t.join();  // run() flushes once more on its way out
// ```

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace procsafe::redis {

/// Where Redis listens: "HOST:PORT", "HOST" (port 6379), "[::1]:6379".
struct endpoint {
    std::string host = "127.0.0.1";
    int port = 6379;

    /// Throws: std::invalid_argument naming what is wrong.
    static endpoint parse(std::string_view text);
    /// "HOST:PORT,HOST:PORT,...": one or more.  Throws: std::invalid_argument.
    static std::vector<endpoint> parse_list(std::string_view text);
    std::string str() const;
};

/// AUTH: a password alone (`requirepass`, the default user), or an ACL user
/// and its password. Never taken from a command line (ps shows it to every
/// user of the host): from the environment or from a file.
struct credentials {
    std::string user;      ///< empty: the default user
    std::string password;  ///< empty: no AUTH

    /// PROCSAFE_REDIS_USER and PROCSAFE_REDIS_PASSWORD (unset: empty).
    static credentials from_environment();
    /// The password from the first line of `path` (its line end dropped);
    /// the user from `user`, or PROCSAFE_REDIS_USER when `user` is empty.
    /// Throws: std::runtime_error when the file cannot be read.
    static credentials from_file(const std::string& path, const std::string& user = {});
};

/// Why `id` cannot be a host id or a namespace, or "" when it can: 1 to 200
/// bytes of UTF-8 (it goes into JSON), none a control character, a space,
/// '|', '{' or '}' (they delimit Redis keys). The text quotes the id, its
/// bytes that are not printable ASCII escaped: "'h\xe9': not valid UTF-8".
std::string id_problem(std::string_view id);

/// How to reach Redis. Every wait is bounded by one of the two timeouts.
struct connection_options {
    endpoint redis;  ///< one server (not used when `cluster` is given)
    /// A Redis Cluster: some of its nodes (any master or replica; one that
    /// answers is enough). The slot map is learned from them and followed:
    /// MOVED, ASK, a failover (docs/redis.md, "Redis Cluster").
    std::vector<endpoint> cluster;
    credentials auth;
    double connect_timeout = 1.0;  ///< seconds
    double command_timeout = 2.0;  ///< seconds, for each read or write of a command or a pipeline
};

/// Where the flusher's log lines go (one line, no line end). Empty: stderr.
using log_function = std::function<void(std::string_view line)>;

struct flush_options {
    connection_options connection;
    std::vector<std::string> segments;  ///< flushed in this order, each its own reporter
    std::string host_id;                ///< empty: this host's name (gethostname)
    /// The fleet the totals add up in. Empty: each segment's own name (the
    /// same program on many hosts names its segment the same).
    std::string fleet_namespace;
    double interval = 1.0;   ///< seconds between flushes (run())
    double gauge_ttl = 0;    ///< seconds a gauge value counts after its last flush; 0: max(5 x interval, 2 s)
    /// The hash slots (stripes) a namespace is spread over, proposed at its
    /// first flush; the number the namespace recorded then wins afterwards.
    /// 0: 1 on one server, 16 on a cluster. At most 1024.
    std::uint32_t stripes = 0;
    std::size_t batch = 2000;  ///< fields per FCALL (the batches of a flush are pipelined)
    double max_backoff = 5.0;  ///< seconds: the longest wait between attempts while Redis fails
    /// run_flush() with `once`: keep trying that many seconds before giving up.
    double retry_for = 0;
    bool once = false;  ///< run_flush(): one flush, then exit
    log_function log;   ///< empty: "procsafe flush: ..." lines on stderr
    /// Tests only: called at "watermarks.read" (between the read of the
    /// watermarks and the FCALLs) and "fcall.sent" (the FCALLs written, no
    /// reply read yet). An exception thrown there is a connection lost.
    std::function<void(std::string_view point)> test_hook;
};

/// What one flush_once() did.
struct flush_result {
    bool ok = false;            ///< every segment flushed
    bool reached_redis = false; ///< Redis answered (a segment may still have failed)
    std::string error;          ///< the first reason why not
    std::size_t segments = 0;   ///< flushed
    std::size_t fields = 0;     ///< counter values sent (unchanged ones are not sent)
    std::size_t gauges = 0;     ///< gauge values sent
    std::size_t fcalls = 0;
    std::size_t conflicts = 0;  ///< batches another flusher had changed first (re-read and sent again)
    std::size_t redirects = 0;  ///< replies a cluster redirected (MOVED, ASK, TRYAGAIN) and that were sent again
    double seconds = 0;
    /// Objects and fields it cannot flush, met for the first time (also logged).
    std::vector<std::string> warnings;
};

/// Counts over a flusher's life (this process's).
struct flush_stats {
    std::uint64_t rounds = 0;           ///< flush_once() calls
    std::uint64_t failed_rounds = 0;    ///< of them, failed (Redis unreachable, a segment missing...)
    std::uint64_t connects = 0;         ///< connections made (the first and every reconnect)
    std::uint64_t conflicts = 0;
    std::uint64_t redirects = 0;
    std::uint64_t fields = 0;
    std::uint64_t fcalls = 0;
};

/// Carries segments' counters to Redis (see the top of this file).
///
/// Safe to kill at any moment (SIGKILL included) and to restart: it keeps no
/// state that matters (what it remembers of the watermarks is a cache,
/// checked by the function on every call). Two flushers on one segment
/// count nothing twice (the function compares each watermark with the one
/// the flusher read; the loser reads again and retries).
///
/// Not thread-safe: one thread calls flush_once() or run().
class flusher {
public:
    /// Throws: std::invalid_argument for options that cannot work (no
    /// segment, an interval <= 0, a host id or namespace with a space, '|',
    /// '{' or '}').
    explicit flusher(flush_options options);
    ~flusher();
    flusher(flusher&&) noexcept;
    flusher& operator=(flusher&&) noexcept;

    /// One flush of every segment: reads it, sends what changed, records
    /// what Redis accepted. Connects (and AUTHs) first if it has no
    /// connection; logs a line when its state changes (connected, Redis
    /// failing, flushing again, a segment missing or back, an object it
    /// cannot total), never one per attempt. Never throws; bounded in time
    /// by the timeouts.
    flush_result flush_once();

    /// Flushes every `interval` seconds until `stop` is true, then once more.
    /// While Redis fails, it retries with capped exponential backoff (0.1 s
    /// doubling up to max_backoff, with jitter); the next flush that
    /// succeeds carries everything. Never throws.
    void run(const std::atomic<bool>& stop);

    const flush_stats& stats() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// ---------------------------------------------------------------------------
// The key layout (docs/redis.md). A namespace is spread over K stripes
// (K recorded at its first flush); every key of a stripe shares the hash
// slot of its tag, "{procsafe:NS}" for stripe 0 and "{procsafe:NS|I}" for
// stripe I > 0, so a function call touches one slot. With K = 1 the layout
// is the one before stripes.

namespace keys {
/// The most stripes a namespace can have.
inline constexpr std::uint32_t max_stripes = 1024;
/// "{procsafe:NS}:" (stripe 0), "{procsafe:NS|I}:" (stripe I).
std::string prefix(std::string_view ns, std::uint32_t stripe = 0);
/// HASH field -> the fleet total (of the reporters of the stripe).
std::string totals(std::string_view ns, std::uint32_t stripe = 0);
/// HASH field -> the reporter's last reported cumulative value.
std::string watermarks(std::string_view ns, std::string_view reporter, std::uint32_t stripe = 0);
/// HASH field -> the reporter's last gauge value (expires with the reporter).
std::string gauges(std::string_view ns, std::string_view reporter, std::uint32_t stripe = 0);
/// HASH reporter -> "LAST_FLUSH_MS INFO_JSON" (Redis' clock).
std::string reporters(std::string_view ns, std::uint32_t stripe = 0);
/// HASH object name -> its metadata as JSON.
std::string meta(std::string_view ns, std::uint32_t stripe = 0);
/// HASH "stripes" -> K, the namespace's stripes (stripe 0's slot).
std::string config(std::string_view ns);
/// SET of the namespaces flushed to this Redis (an index for `fleet show`).
inline constexpr std::string_view namespaces = "procsafe:namespaces";
/// "HOST|SEGMENT|INCARNATION" (the incarnation in 16 hex digits).
std::string reporter(std::string_view host, std::string_view segment, std::uint64_t incarnation);
/// The stripe of a reporter among `stripes`: FNV-1a (64-bit) of its id,
/// modulo `stripes`. All its keys and the totals it adds to are there.
std::uint32_t stripe_of(std::string_view reporter, std::uint32_t stripes);
}  // namespace keys

/// The Redis function library the flusher loads (FUNCTION LOAD; it
/// persists through restarts with the data), and its functions' names.
std::string_view function_library();
inline constexpr std::string_view flush_function = "procsafe_flush_1";
inline constexpr std::string_view gauges_function = "procsafe_gauges_1";

// ---------------------------------------------------------------------------
// Reading the fleet.

/// One reporter: a host's segment in one incarnation.
struct fleet_reporter {
    std::string id;  ///< HOST|SEGMENT|INCARNATION
    std::uint32_t stripe = 0;  ///< where its keys are
    std::string host, segment;
    std::uint64_t incarnation = 0;
    std::int64_t pid = 0;                ///< of the flusher that reported last
    std::int64_t last_flush_ms = 0;      ///< Redis' clock, ms since the Unix epoch
    double age_seconds = 0;              ///< since its last flush, by Redis' clock
    double interval = 0, gauge_ttl = 0;  ///< the flusher's
    bool live = false;                   ///< its gauges still count (flushed within gauge_ttl)
    std::map<std::string, std::string> watermarks;  ///< field -> its last reported value
    std::map<std::string, std::string> gauges;      ///< field -> its last gauge value (live only)
};

/// What an object is, as its flusher described it (from the segment's metadata).
struct fleet_object {
    std::string name, kind, type, metric, help, unit, label;
};

/// A namespace's totals: each stripe read in one MULTI/EXEC (its totals
/// consistent with its watermarks), the stripes' totals summed.
struct fleet_snapshot {
    std::string fleet_namespace;
    std::uint32_t stripes = 1;  ///< read one by one: each consistent in itself, summed here
    std::int64_t server_time_ms = 0;  ///< of stripe 0's read
    /// field -> the fleet total, as Redis holds it (a decimal integer; a
    /// decimal fraction for the floating-point fields, histogram sums).
    std::map<std::string, std::string> totals;
    /// field -> the sum of the live reporters' last values (gauges).
    std::map<std::string, std::string> gauges;
    std::map<std::string, fleet_object> objects;  ///< by object name
    std::vector<fleet_reporter> reporters;        ///< by id
    /// What makes the totals doubtful, one line each, printable: a reporter
    /// found off its stripe or in two (the namespace's stripes changed
    /// under it). Printed by `fleet show`, commented in `fleet export`.
    std::vector<std::string> warnings;
};

/// The namespaces flushed to this Redis (or cluster), sorted.  Throws: std::runtime_error.
std::vector<std::string> fleet_namespaces(const connection_options& o);
/// One namespace's totals, gauges, objects and reporters (with their
/// watermarks).  Throws: std::runtime_error (Redis unreachable, refused).
fleet_snapshot read_fleet(const connection_options& o, const std::string& ns);

/// The Prometheus text format (0.0.4) of fleet totals: counters with
/// _total, gauges, histograms (_bucket{le}, _sum, _count), one # HELP and
/// # TYPE per family, every sample labelled namespace="NS".
std::string prometheus_text(const std::vector<fleet_snapshot>& fleets);
/// The JSON `procsafe fleet show --json` prints (docs/redis.md).
std::string json_text(const std::vector<fleet_snapshot>& fleets);

// ---------------------------------------------------------------------------
// The `procsafe` command's subcommands, options already parsed. Each prints
// as the command should (errors: one line on stderr each) and returns the
// exit status (0, or 1 on an error).

/// `procsafe flush SEGMENT... --redis HOST:PORT [--host-id ID] [--namespace
/// NAME] [--interval SECONDS] [--once]`: with o.once, one flush (retried for
/// o.retry_for seconds); else flushes every o.interval until SIGINT or
/// SIGTERM (handlers installed while it runs), then once more.
int run_flush(const flush_options& o);

struct fleet_options {
    connection_options connection;
    std::string fleet_namespace;  ///< empty: every namespace
};
/// `procsafe fleet show --redis HOST:PORT [--namespace NAME] [--json]`.
int run_fleet_show(const fleet_options& o, bool json);
/// `procsafe fleet export --redis HOST:PORT [--namespace NAME] [--output
/// FILE]`: the Prometheus text on stdout, or written to FILE by a temporary
/// file and a rename (node_exporter's textfile collector reads whole files).
int run_fleet_export(const fleet_options& o, const std::string& output = {});

}  // namespace procsafe::redis
