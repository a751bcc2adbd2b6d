// procsafe/histogram.hpp: histogram: buckets, sum and count across processes, a row per CPU.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>
#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/platform.hpp>
#include <procsafe/error.hpp>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace procsafe {

/// A histogram across processes: bucket upper bounds fixed at construction,
/// a count per bucket, and the sum of what was observed (Prometheus'
/// histogram: observe(v) counts v in the first bucket whose bound is >= v,
/// the last bucket being +Inf).
///
/// Lock-free and striped: the counts and the sum are kept in rows, one
/// 128-byte-aligned row per CPU slot, and observe() adds to the row of the
/// CPU it runs on with fetch_add (no ownership to claim, so nothing to lose
/// when a process dies, forks or migrates; writers on different CPUs never
/// share a line). read() adds the rows up.
///
/// Memory ordering: relaxed; read() is not an atomic snapshot while writers
/// run (a bucket and the sum may disagree by the observations in flight) and
/// is exact once they stop. Crash behaviour: an observation is two atomic
/// additions, the bucket's then the sum's: a process killed between them
/// leaves one counted without its value.
///
/// ```
/// auto& latency = seg.construct<procsafe::histogram>(
///     "request_seconds", procsafe::metadata{.help = "Request latency.", .unit = "seconds"},
///     std::vector{0.005, 0.01, 0.05, 0.1, 0.5, 1.0});
/// latency.observe(0.042);  // in any worker
/// auto snap = latency.read();  // snap.counts[2] == 1, snap.sum == 0.042
/// ```
class alignas(cache_line) histogram {
    // Only a segment constructs one: the bounds and the rows live after it.
    friend struct detail::object_access;

public:
    /// At most this many bounds (the +Inf bucket comes on top).
    static constexpr std::size_t max_bounds = 127;

    /// Bounds given as integers or floats are converted to double; bool is no bound.
    template <class B>
    static constexpr bool non_double_bound =
        std::is_arithmetic_v<B> && !std::is_same_v<B, double> && !std::is_same_v<B, bool>;
    /// At most this many rows.
    static constexpr std::size_t max_rows = 256;

    /// What read() returns: bounds, per-bucket counts (not cumulative; the
    /// last is +Inf), the sum, and the count (the counts' total).
    struct snapshot {
        std::vector<double> bounds;
        std::vector<std::uint64_t> counts;
        double sum = 0;
        std::uint64_t count = 0;
    };

    histogram(const histogram&) = delete;
    histogram& operator=(const histogram&) = delete;

    /// Counts v in its bucket and adds it to the sum. NaN counts in +Inf.
    /// Process-safe. Lock-free. Never allocates.
    void observe(double v) noexcept {
        const std::uint32_t b = bucket_of(v);
        std::uint64_t* row = row_at(detail::current_cpu() & (rows_ - 1));
        std::atomic_ref<std::uint64_t>(row[b]).fetch_add(1, std::memory_order_relaxed);
        std::atomic_ref<double>(*reinterpret_cast<double*>(row + buckets())).fetch_add(v, std::memory_order_relaxed);
    }

    /// The bounds, counts and sum, added up over the rows.
    /// Process-safe. Lock-free. Allocates the snapshot's vectors.
    /// Cost: one load per bucket and row.
    snapshot read() const {
        snapshot s;
        s.bounds.assign(bounds(), bounds() + bounds_);
        s.counts.assign(buckets(), 0);
        for (std::uint32_t r = 0; r < rows_; ++r) {
            std::uint64_t* row = row_at(r);
            for (std::uint32_t b = 0; b < buckets(); ++b)
                s.counts[b] += std::atomic_ref<std::uint64_t>(row[b]).load(std::memory_order_relaxed);
            s.sum += std::atomic_ref<double>(*reinterpret_cast<double*>(row + buckets())).load(std::memory_order_relaxed);
        }
        for (std::uint64_t c : s.counts) s.count += c;
        return s;
    }

    /// Buckets, the +Inf one included.
    /// Zeroes every bucket and the sum (prometheus_client's remove() of a
    /// series that starts again). Exact only when no writer runs: an
    /// observation made meanwhile may keep its bucket or its sum.
    /// Process-safe. Lock-free. Never allocates.
    void reset() noexcept {
        for (std::uint32_t r = 0; r < rows_; ++r) {
            std::uint64_t* row = row_at(r);
            for (std::uint32_t b = 0; b < buckets(); ++b) std::atomic_ref<std::uint64_t>(row[b]).store(0, std::memory_order_relaxed);
            std::atomic_ref<double>(*reinterpret_cast<double*>(row + buckets())).store(0.0, std::memory_order_relaxed);
        }
    }

    std::uint32_t buckets() const noexcept { return bounds_ + 1; }
    std::uint32_t rows() const noexcept { return rows_; }

    /// Bounds start, start * factor, ... (count of them): the usual latency buckets.
    static std::vector<double> exponential(double start, double factor, std::size_t count) {
        std::vector<double> v;
        for (std::size_t i = 0; i < count; ++i, start *= factor) v.push_back(start);
        return v;
    }
    /// Rows by default: the machine's CPUs, rounded up to a power of two.
    static std::size_t default_rows() {
        const std::size_t cpus = std::thread::hardware_concurrency();
        return std::bit_ceil(std::max<std::size_t>(1, std::min<std::size_t>(cpus, max_rows)));
    }

    // For segment: the storage after the object, and its validation on find.
    static std::size_t procsafe_extra_bytes(const std::vector<double>& bounds, std::size_t rows = default_rows()) {
        check(bounds, rows);
        return bounds_bytes(bounds.size()) + std::bit_ceil(rows) * row_stride(bounds.size() + 1);
    }
    // Bounds of another arithmetic type (std::vector{1, 5, 10}) are taken as doubles.
    template <class B>
        requires non_double_bound<B>
    static std::size_t procsafe_extra_bytes(const std::vector<B>& bounds, std::size_t rows = default_rows()) {
        return procsafe_extra_bytes(as_doubles(bounds), rows);
    }
    bool procsafe_fits(std::size_t bytes_after) const noexcept {
        return bounds_ <= max_bounds && rows_ >= 1 && rows_ <= max_rows && std::has_single_bit(rows_) &&
               stride_ == row_stride(bounds_ + 1) &&
               bytes_after >= bounds_bytes(bounds_) + std::size_t{rows_} * stride_;
    }

private:
    /// Constructed by segment::construct<histogram>(name, bounds, rows).
    /// Throws: procsafe::error (invalid_argument) for bounds that are not
    /// finite and strictly increasing, more than max_bounds of them, or 0 or
    /// more than max_rows rows.
    explicit histogram(const std::vector<double>& bounds, std::size_t rows = default_rows())
        : bounds_(static_cast<std::uint32_t>(bounds.size())),
          rows_(static_cast<std::uint32_t>(std::bit_ceil(rows))),
          stride_(static_cast<std::uint32_t>(row_stride(bounds.size() + 1))) {
        check(bounds, rows);
        double* b = const_cast<double*>(this->bounds());
        for (std::size_t i = 0; i < bounds.size(); ++i) b[i] = bounds[i];
        for (std::uint32_t r = 0; r < rows_; ++r) {
            std::uint64_t* row = row_at(r);
            for (std::uint32_t i = 0; i < buckets(); ++i) row[i] = 0;
            *reinterpret_cast<double*>(row + buckets()) = 0.0;
        }
    }

    /// As histogram(bounds, rows), each bound converted to double.
    template <class B>
        requires non_double_bound<B>
    explicit histogram(const std::vector<B>& bounds, std::size_t rows = default_rows())
        : histogram(as_doubles(bounds), rows) {}

    template <class B>
    static std::vector<double> as_doubles(const std::vector<B>& bounds) {
        return std::vector<double>(bounds.begin(), bounds.end());
    }

    static void check(const std::vector<double>& bounds, std::size_t rows) {
        auto bad = [](const std::string& why) { throw error(errc::invalid_argument, {}, {}, "histogram: " + why); };
        if (bounds.size() > max_bounds) bad("at most " + std::to_string(max_bounds) + " bounds");
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            if (!std::isfinite(bounds[i])) bad("bounds must be finite (+Inf is the last bucket already)");
            if (i > 0 && !(bounds[i - 1] < bounds[i])) bad("bounds must be strictly increasing");
        }
        if (rows == 0 || rows > max_rows) bad("1 to " + std::to_string(max_rows) + " rows, not " + std::to_string(rows));
    }
    static std::size_t bounds_bytes(std::size_t n) noexcept { return (n * sizeof(double) + cache_line - 1) / cache_line * cache_line; }
    /// A row: a count per bucket, then the sum; whole lines.
    static std::size_t row_stride(std::size_t buckets) noexcept {
        return ((buckets + 1) * sizeof(std::uint64_t) + cache_line - 1) / cache_line * cache_line;
    }

    const double* bounds() const noexcept { return reinterpret_cast<const double*>(this + 1); }
    std::uint64_t* row_at(std::uint32_t r) const noexcept {
        auto* base = reinterpret_cast<unsigned char*>(const_cast<histogram*>(this) + 1) + bounds_bytes(bounds_);
        return reinterpret_cast<std::uint64_t*>(base + std::size_t{r} * stride_);
    }
    /// The first bucket whose bound is >= v (le); NaN and above every bound: +Inf.
    std::uint32_t bucket_of(double v) const noexcept {
        const double* b = bounds();
        std::uint32_t lo = 0, hi = bounds_;  // answer in [lo, hi]
        while (lo < hi) {
            const std::uint32_t mid = lo + (hi - lo) / 2;
            if (v <= b[mid]) hi = mid;
            else lo = mid + 1;  // also for NaN: never <=, so it ends at bounds_ (+Inf)
        }
        return lo;
    }

    std::uint32_t bounds_;
    std::uint32_t rows_;
    std::uint32_t stride_;
};

namespace detail {
template <>
struct object_traits<histogram> {
    static_assert(sizeof(histogram) % cache_line == 0);
    static constexpr type_facts facts() {
        return value_facts<double>(object_kind::histogram, sizeof(histogram), alignof(histogram));
    }
};
}  // namespace detail

}  // namespace procsafe
