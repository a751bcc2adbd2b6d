// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
// procsafe list: every procsafe segment on the host; procsafe rm.
#include "common.hpp"

#include <procsafe/detail/segment_header.hpp>
#include <procsafe/segment.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>

#include <sys/stat.h>

namespace procsafe::cli {

namespace {

/// What a listing says about one name under /dev/shm.
struct entry {
    std::string name;
    std::string status;  // ok, no_permission, not_initialized, incompatible, not_procsafe, error
    std::optional<procsafe::segment_info> info;
    std::optional<struct stat> st;  // for the entries that could not be opened
    std::string error;
};

std::optional<struct stat> stat_of(const std::string& name) {
    struct stat st {};
    // lstat: a link planted in /dev/shm is described, not followed.
    if (::lstat(("/dev/shm/" + name).c_str(), &st) != 0) return std::nullopt;
    return st;
}

/// Opens `name` and reads its facts; nullopt when it vanished meanwhile.
std::optional<entry> look_at(const std::string& name) {
    entry e{name, "ok", std::nullopt, std::nullopt, {}};
    try {
        e.info = procsafe::segment_view::open(name).info();
        return e;
    } catch (const procsafe::error& x) {
        e.error = describe(x);
        switch (x.code_value()) {
            case errc::segment_not_found: return std::nullopt;  // removed since the directory was read
            case errc::permission_denied: e.status = "no_permission"; break;
            case errc::bad_magic: e.status = "not_procsafe"; break;
            case errc::incompatible_layout: e.status = "incompatible"; break;
            case errc::timed_out: e.status = "not_initialized"; break;
            default: e.status = "error"; break;
        }
    }
    e.st = stat_of(name);
    // Smaller than a segment's header: not procsafe's (a POSIX semaphore, say),
    // whatever open() could tell.
    if (e.status == "not_initialized" && e.st &&
        static_cast<std::size_t>(e.st->st_size) < procsafe::detail::managed_offset) {
        e.status = "not_procsafe";
    }
    return e;
}

std::string status_text(const std::string& status) {
    if (status == "no_permission") return "no permission";
    if (status == "not_procsafe") return "not procsafe";
    if (status == "not_initialized") return "not initialized";
    return status;
}

}  // namespace

int run_list(const list_options& o) {
    std::vector<std::string> names = procsafe::segment_view::candidate_names();
    std::sort(names.begin(), names.end());
    std::vector<entry> entries;
    for (const auto& n : names) {
        auto e = look_at(n);
        if (!e) continue;
        // A FIFO, a link, a socket, a device under /dev/shm: never opened (a
        // FIFO would block the listing), said so even without --all, and
        // skipped: no row, with --all or --json either.
        if (e->st && !S_ISREG(e->st->st_mode)) {
            print_error("warning: " + e->error + ": skipped");
            continue;
        }
        if (e->status == "not_procsafe" && !o.all) continue;
        entries.push_back(std::move(*e));
    }

    if (o.json) {
        nlohmann::ordered_json out = nlohmann::ordered_json::array();
        for (const auto& e : entries) {
            nlohmann::ordered_json j = {{"name", e.name}, {"status", e.status}};
            if (e.info) {
                auto facts = json_of(*e.info);
                facts.erase("name");
                j.update(facts);
            } else {
                if (e.st) {
                    j["size"] = e.st->st_size;
                    j["uid"] = e.st->st_uid;
                    j["user"] = user_name(e.st->st_uid);
                    j["gid"] = e.st->st_gid;
                    j["group"] = group_name(e.st->st_gid);
                    j["mode"] = mode_string(e.st->st_mode);
                }
                j["error"] = e.error;
            }
            out.push_back(std::move(j));
        }
        std::puts(out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
        return 0;
    }

    if (entries.empty()) {
        std::puts(o.all ? "no shared memory objects under /dev/shm" : "no procsafe segments under /dev/shm");
        return 0;
    }
    table t({"SEGMENT", "STATUS", "SIZE", "USED", "OBJECTS", "OWNER", "MODE", "CREATOR", "CREATED"},
            {false, false, true, true, true, false, false, false, false});
    for (const auto& e : entries) {
        if (e.info) {
            const auto& i = *e.info;
            t.add({e.name, "ok", human_bytes(i.size), human_bytes(i.object_bytes), std::to_string(i.objects),
                   user_name(i.uid) + ":" + group_name(i.gid), mode_string(i.mode),
                   fmt::format("{} ({})", i.creator_pid, i.creator_alive ? "alive" : "gone"), local_time(i.created_ns)});
        } else if (e.st) {
            t.add({e.name, status_text(e.status), human_bytes(static_cast<std::uint64_t>(e.st->st_size)), "-", "-",
                   user_name(e.st->st_uid) + ":" + group_name(e.st->st_gid), mode_string(e.st->st_mode), "-", "-"});
        } else {
            t.add({e.name, status_text(e.status), "-", "-", "-", "-", "-", "-", "-"});
        }
    }
    std::fputs(t.str().c_str(), stdout);
    return 0;
}

int run_rm(const rm_options& o) {
    int status = 0;
    for (const auto& name : o.segments) {
        try {
            if (!o.force) {
                try {
                    (void)procsafe::segment_view::open(name);
                } catch (const procsafe::error& e) {
                    // Another layout is still procsafe's (its magic matched): removable.
                    if (e.code_value() != errc::incompatible_layout) {
                        const bool hint = e.code_value() == errc::bad_magic || e.code_value() == errc::timed_out;
                        throw failure(describe(e) + (hint ? ": not removed (--force removes it anyway)" : ""));
                    }
                }
            }
            if (!procsafe::segment::remove(name)) throw failure(fmt::format("segment '{}' not found", name));
        } catch (const procsafe::error& e) {
            print_error(describe(e));
            status = 1;
        } catch (const failure& f) {
            print_error(f.what());
            status = 1;
        }
    }
    return status;
}

}  // namespace procsafe::cli
