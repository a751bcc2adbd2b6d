// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// The contenders of procsafe-bench: procsafe's counters, and the raw
// primitives they wrap, all in the same kind of shared memory.

#include <procsafe/bench/harness.hpp>

#include <boost/interprocess/sync/interprocess_mutex.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <pthread.h>

namespace contenders {

/// One 128-byte line holding one value.
struct alignas(procsafe::cache_line) line {
    std::int64_t value = 0;
};

inline std::int64_t load(std::int64_t& v) { return std::atomic_ref<std::int64_t>(v).load(std::memory_order_relaxed); }

template <class Counter>
auto procsafe_counter() {
    return [](procsafe::segment& seg, int) {
        struct ops {
            Counter* c;
            void increment() { c->increment(); }
            std::int64_t read() { return c->value(); }
            std::int64_t total() { return c->value(); }
        };
        return ops{&seg.construct<Counter>("counter")};
    };
}

/// procsafe::sharded_counter with a given slot strategy (default slot count),
/// through increment() (the thread's last counter and its slot, checked at each call).
inline auto sharded(procsafe::shard_strategy strategy) {
    return [strategy](procsafe::segment& seg, int) {
        using counter = procsafe::sharded_counter<std::int64_t>;
        struct ops {
            counter* c;
            void increment() { c->increment(); }
            void increment_loop(long n) {  // as a user writes it
                counter& mine = *c;
                for (long i = 0; i < n; ++i) ++mine;
            }
            std::int64_t read() { return c->sum(); }
            std::int64_t total() { return c->sum(); }
        };
        return ops{&seg.construct<counter>("sharded", counter::default_slots(), strategy)};
    };
}

/// The same through a per-thread writer (local()), the hot-loop API.
inline auto sharded_writer(procsafe::shard_strategy strategy) {
    return [strategy](procsafe::segment& seg, int) {
        using counter = procsafe::sharded_counter<std::int64_t>;
        struct ops {
            counter* c;
            std::optional<counter::writer> w;
            void start(int) { w.emplace(*c); }  // before the start barrier
            void increment() { w->increment(); }
            void increment_loop(long n) {  // as a user writes it
                counter::writer& mine = *w;
                for (long i = 0; i < n; ++i) ++mine;
            }
            std::int64_t read() { return c->sum(); }
            std::int64_t total() { return c->sum(); }
        };
        return ops{&seg.construct<counter>("sharded", counter::default_slots(), strategy), {}};
    };
}

/// std::atomic_ref<int64_t>::fetch_add on one line: what atomic_counter wraps.
inline auto raw_fetch_add() {
    return [](procsafe::segment& seg, int) {
        struct ops {
            std::int64_t* v;
            void increment() { std::atomic_ref<std::int64_t>(*v).fetch_add(1); }
            std::int64_t read() { return std::atomic_ref<std::int64_t>(*v).load(); }
            std::int64_t total() { return read(); }
        };
        return ops{&seg.construct<line>("line").value};
    };
}

/// A process-shared pthread mutex around a plain value (robust or not).
struct pthread_locked {
    pthread_mutex_t mutex;
    std::int64_t value = 0;
    explicit pthread_locked(bool robust) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        if (robust) pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&mutex, &a);
        pthread_mutexattr_destroy(&a);
    }
};

inline auto raw_pthread_mutex(bool robust) {
    return [robust](procsafe::segment& seg, int) {
        struct ops {
            pthread_locked* m;
            void increment() {
                pthread_mutex_lock(&m->mutex);
                ++m->value;
                pthread_mutex_unlock(&m->mutex);
            }
            std::int64_t read() {
                pthread_mutex_lock(&m->mutex);
                const std::int64_t v = m->value;
                pthread_mutex_unlock(&m->mutex);
                return v;
            }
            std::int64_t total() { return read(); }
        };
        return ops{&seg.construct<pthread_locked>(robust ? "robust" : "plain", robust)};
    };
}

struct boost_locked {
    boost::interprocess::interprocess_mutex mutex;
    std::int64_t value = 0;
};

inline auto boost_interprocess_mutex() {
    return [](procsafe::segment& seg, int) {
        struct ops {
            boost_locked* m;
            void increment() {
                m->mutex.lock();
                ++m->value;
                m->mutex.unlock();
            }
            std::int64_t read() {
                m->mutex.lock();
                const std::int64_t v = m->value;
                m->mutex.unlock();
                return v;
            }
            std::int64_t total() { return read(); }
        };
        return ops{&seg.construct<boost_locked>("boost")};
    };
}

struct slot_array {
    line lines[procsafe::bench::detail::max_processes];
};

/// One line per process: fetch_add (lock xadd) on the process's own line, or
/// (SingleWriter) a relaxed load + store, since nobody else writes it. A read
/// sums every line, as a sharded counter's would. The increment loop is the
/// fastest honest one, as a user writes it: the slot's address in a
/// register, no test in the loop.
template <bool SingleWriter>
inline auto per_process_slot() {
    return [](procsafe::segment& seg, int processes) {
        struct ops {
            line* slots;
            int count;
            std::int64_t* mine = nullptr;
            void start(int process) { mine = &slots[process].value; }
            static void bump(std::int64_t& slot) {
                std::atomic_ref<std::int64_t> v(slot);
                if constexpr (SingleWriter) v.store(v.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
                else v.fetch_add(1, std::memory_order_relaxed);
            }
            void increment() { bump(*mine); }
            void increment_loop(long n)
                requires SingleWriter
            {
                std::int64_t& slot = *mine;
                for (long i = 0; i < n; ++i) bump(slot);
            }
            std::int64_t read() {
                std::int64_t sum = 0;
                for (int i = 0; i < count; ++i) sum += load(slots[i].value);
                return sum;
            }
            std::int64_t total() { return read(); }
        };
        auto& all = seg.construct<slot_array>("slots");
        return ops{all.lines, processes};
    };
}

/// Many series (a label with `series` values): what a user writes is a
/// counter_array of padded atomic counters, one per series; the k-th increment
/// of each process goes to element k % series (counted by wrapping, not by a
/// division, the same index).
inline auto series_array(std::size_t series) {
    return [series](procsafe::segment& seg, int) {
        using array = procsafe::counter_array<std::int64_t, procsafe::atomic_sync>;
        struct ops {
            array* a;
            std::size_t k = 0;
            void increment() {
                (*a)[k].increment();
                if (++k == a->size()) k = 0;
            }
            std::int64_t read() { return (*a)[0].value(); }
            std::int64_t total() {
                std::int64_t sum = 0;
                for (std::size_t i = 0; i < a->size(); ++i) sum += (*a)[i].value();
                return sum;
            }
        };
        return ops{&seg.construct<array>("series", series)};
    };
}

/// The same series as `series` sharded counters (`slots` slots each), each
/// process holding a local() writer for every series: the fast path, at the
/// price of a counter per series and a writer per series and process.
inline auto series_sharded(std::size_t series, std::size_t slots) {
    return [series, slots](procsafe::segment& seg, int) {
        using counter = procsafe::sharded_counter<std::int64_t>;
        struct ops {
            std::vector<counter*> counters;
            std::shared_ptr<std::deque<counter::writer>> writers;  // writers are neither copied nor moved
            std::size_t k = 0;
            void start(int) {  // in the worker, before the start barrier
                writers = std::make_shared<std::deque<counter::writer>>();
                for (counter* c : counters) writers->emplace_back(*c);
            }
            void increment() {
                (*writers)[k].increment();
                if (++k == counters.size()) k = 0;
            }
            std::int64_t read() { return counters[0]->sum(); }
            std::int64_t total() {
                std::int64_t sum = 0;
                for (counter* c : counters) sum += c->sum();
                return sum;
            }
        };
        ops o;
        for (std::size_t i = 0; i < series; ++i)
            o.counters.push_back(&seg.construct<counter>("series_" + std::to_string(i), slots));
        return o;
    };
}

/// Segment bytes for series_sharded: a line per slot and the overflow line,
/// plus the object and its name, per series.
inline std::size_t series_sharded_bytes(std::size_t series, std::size_t slots) {
    return series * (slots + 4) * procsafe::cache_line;
}

/// The racy read-then-write, measured for its lost-update rate only.
inline auto racy() {
    return [](procsafe::segment& seg, int) {
        struct ops {
            std::int64_t* v;
            void increment() {
                std::atomic_ref<std::int64_t> r(*v);
                r.store(r.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            }
            std::int64_t read() { return load(*v); }
            std::int64_t total() { return read(); }
        };
        return ops{&seg.construct<line>("racy").value};
    };
}

}  // namespace contenders
