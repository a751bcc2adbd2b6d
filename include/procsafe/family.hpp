// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/layout.hpp>
#include <procsafe/detail/names.hpp>
#include <procsafe/detail/test_hook.hpp>
#include <procsafe/error.hpp>
#include <procsafe/metadata.hpp>
#include <procsafe/segment.hpp>

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace procsafe {

/// A metric family with label sets, the Prometheus clients' way: several
/// label names, and each set of values met at run time (a 503 nobody
/// listed) an object of its own, found or constructed by labels().
///
/// A child is an ordinary named object of the segment: its name is the
/// series, `http_requests_total{method="GET",code="503"}` (values escaped),
/// and its metadata carries the family's help, unit and type, the label
/// names ("method,code") and its values. So any process finds the same
/// child for the same values, a reader (segment_view, `procsafe show`)
/// sees it without knowing the family, the exposition gathers a family's
/// children under one # HELP and # TYPE, and the Redis flusher gives each
/// its own field. The family itself is nothing in the segment: a handle
/// that any process makes with the same arguments.
///
/// remove() takes a child out of the exposition (Prometheus clients'
/// remove(labels)); labels() in any process puts it back. Objects are never
/// freed: a removed child is hidden (export_switch), not destroyed, and
/// keeps its values (reset it before remove() for a series that should
/// come back from zero) and its place among max_series. A reference to it
/// held anywhere stays valid and keeps counting into the hidden series:
/// what it counts after remove() is shown when labels() brings it back.
///
/// Children are never destroyed, so a family is bounded: `max_series`
/// children at most, counted under the segment's directory lock, and the
/// next label set is refused with out_of_range naming the family (a label
/// taken from input, a user id or a path, would grow it without end).
///
/// ```
/// procsafe::family<procsafe::atomic_counter<std::int64_t>> requests(
///     seg, "http_requests_total", {"method", "code"}, procsafe::metadata{.help = "Requests by method and code."});
/// requests.labels({"GET", "503"}).increment();
/// auto& ok = requests.labels({"GET", "200"});  // keep it: labels() takes the directory lock
/// ++ok;
/// ```
template <class C>
class family {
    static_assert(!detail::is_array_kind(detail::object_traits<std::remove_cv_t<C>>::facts().kind),
                  "procsafe: a family's children are single series: a counter, a sharded_counter, a live_gauge, "
                  "a histogram (a counter_array's elements are already labelled)");

public:
    static constexpr std::size_t default_max_series = 1000;

    /// A family named `name` in `seg` with these label names; `meta` gives
    /// its help, unit and type (its label and label_values must be empty).
    /// Constructs nothing: the first labels() does. The segment must
    /// outlive the family and every reference labels() returns.
    /// Throws: invalid_name (a family name that is not a metric name, for
    /// an exported type), invalid_argument (no label names, bad or
    /// repeated label names, bad metadata, max_series 0).
    family(segment& seg, std::string_view name, std::initializer_list<std::string_view> label_names,
           const metadata& meta = {}, std::size_t max_series = default_max_series)
        : family(seg, name, std::vector<std::string_view>(label_names), meta, max_series) {}

    family(segment& seg, std::string_view name, const std::vector<std::string_view>& label_names,
           const metadata& meta = {}, std::size_t max_series = default_max_series)
        : seg_(&seg), name_(name), max_series_(max_series), help_(meta.help), unit_(meta.unit), type_(meta.type) {
        auto bad = [&](errc code, const std::string& why) { throw error(code, seg.name(), name, why); };
        detail::check_object_name(seg.name(), name);
        const bool exported = detail::resolve_metric(meta.type, detail::object_traits<std::remove_cv_t<C>>::facts().kind) !=
                              metric_type::automatic;
        if (exported) {
            if (const char* why = detail::metric_name_problem(name)) bad(errc::invalid_name, why);
        } else if (name.find('{') != std::string_view::npos) {
            bad(errc::invalid_name, "a family's name has no '{'");
        }
        if (!meta.label.empty() || !meta.label_values.empty()) {
            bad(errc::invalid_argument, "a family's label names are its own argument, not its metadata's label");
        }
        if (label_names.empty()) bad(errc::invalid_argument, "a family has at least one label name");
        if (max_series == 0) bad(errc::invalid_argument, "max_series must be at least 1");
        for (const std::string_view l : label_names) {
            if (!labels_.empty()) labels_ += ',';
            labels_ += l;
        }
        for (const std::string_view l : detail::split_labels(labels_)) label_names_.emplace_back(l);
        const std::vector<std::string_view> values(label_names_.size(), std::string_view{});
        detail::check_metadata(child_meta(values), seg.name(), name);
    }

    /// The child for these label values, one per label name: found, or
    /// constructed from `args` (C's constructor arguments: a histogram's
    /// bounds) if no process has yet. Two processes asking for the same new
    /// values at once get the same object. A child that remove() took out of
    /// the exposition is put back, with the values it holds (a labels()
    /// racing a remove() in another process: whichever of the two sets the
    /// flag last wins; nothing counted is lost either way). Process-safe.
    /// Cost: the directory lock (twice: the child, then its export switch)
    /// and, for a new child, a walk of the segment's catalog: keep the
    /// reference for a hot path.
    /// Throws: invalid_argument (not one value per label name, a bad value,
    /// a series name over 200 bytes), out_of_range (the family has
    /// max_series children already), what find_or_construct throws.
    template <class... Args>
    C& labels(std::initializer_list<std::string_view> values, Args&&... args) {
        return labels(std::vector<std::string_view>(values), std::forward<Args>(args)...);
    }
    template <class... Args>
    C& labels(const std::vector<std::string_view>& values, Args&&... args) {
        if (values.size() != label_names_.size()) {
            throw error(errc::invalid_argument, seg_->name(), name_,
                        std::to_string(values.size()) + " label values for the " +
                            std::to_string(label_names_.size()) + " label names (" + labels_ + ")");
        }
        const metadata meta = child_meta(values);
        const std::string child = detail::series_name(name_, label_names_, values);
        detail::check_metadata(meta, seg_->name(), child.size() > 64 ? name_ : child);
        if (child.size() > detail::max_name_length) {
            throw error(errc::invalid_argument, seg_->name(), name_,
                        "the series " + detail::escape_bytes(child.substr(0, 64)) + "... is " +
                            std::to_string(child.size()) + " bytes: an object name has at most 200");
        }
        C& c = seg_->template place_child<C>(child, meta, max_series_, std::forward<Args>(args)...);
        PROCSAFE_TEST_HOOK("family.labels.found");
        seg_->set_exported(child, true);
        return c;
    }

    /// Takes the child for these label values out of the exposition (see
    /// the class comment); false when no process made it. Its values stay:
    /// labels() brings it back with them. Process-safe.
    /// Cost: the directory lock.
    /// Throws: invalid_argument (not one value per label name), timed_out.
    bool remove(std::initializer_list<std::string_view> values) { return remove(std::vector<std::string_view>(values)); }
    bool remove(const std::vector<std::string_view>& values) {
        if (values.size() != label_names_.size()) {
            throw error(errc::invalid_argument, seg_->name(), name_,
                        std::to_string(values.size()) + " label values for the " +
                            std::to_string(label_names_.size()) + " label names (" + labels_ + ")");
        }
        const std::string child = detail::series_name(name_, label_names_, values);
        if (child.size() > detail::max_name_length) return false;
        try {
            seg_->set_exported(child, false);
        } catch (const error& e) {
            if (e.code() != errc::object_not_found) throw;
            return false;
        }
        return true;
    }

    const std::string& name() const noexcept { return name_; }
    const std::vector<std::string>& label_names() const noexcept { return label_names_; }
    std::size_t max_series() const noexcept { return max_series_; }

private:
    metadata child_meta(const std::vector<std::string_view>& values) const {
        return metadata{.help = help_, .unit = unit_, .type = type_, .label = labels_, .label_values = values};
    }

    segment* seg_;
    std::string name_;
    std::size_t max_series_;
    std::string help_, unit_;
    metric_type type_;
    std::string labels_;                        // "method,code": how children store them
    std::vector<std::string> label_names_;
};

}  // namespace procsafe
