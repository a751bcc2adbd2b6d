// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
#pragma once

// From a segment's objects to fleet fields: which values add up, under
// which field names, by which rule.

#include "common.hpp"

#include <procsafe/segment_view.hpp>

#include <functional>
#include <string>
#include <vector>

namespace procsafe::redis::detail {

enum class rule : unsigned char {
    integer,   ///< an integer counter: HINCRBY by the exact delta
    floating,  ///< a floating-point counter, a histogram's sum: HINCRBYFLOAT by the delta
    gauge,     ///< goes up and down: the reporter's last value, summed by the reader
};

struct field {
    std::string name;  ///< the field in the namespace's hashes
    rule how = rule::integer;
    std::string text;  ///< the value as sent
    i128 integer = 0;  ///< rule::integer
    double real = 0;   ///< rule::floating
};

struct skipped_object {
    std::string object, why;
};

struct collected {
    std::vector<field> fields;
    std::vector<skipped_object> skipped;  ///< objects it cannot total, for good
    /// object name -> its metadata as JSON (kind, type, metric, help, unit, label).
    std::vector<std::pair<std::string, std::string>> meta;
};

/// The fields of these objects. Field names: a counter's object name; an
/// array element's NAME{LABEL="VALUE"} (LABEL "index" and the index when
/// the array has no label values); a histogram's NAME_bucket{le="B"}
/// (cumulative, "+Inf" last), NAME_sum, NAME_count. A value that cannot be
/// read this time (a constructor still running, a mutex counter updated too
/// often to be read without its lock) is left out of this round only.
/// `with_meta(name)`: whether to describe that object in `meta` (an
/// object's metadata is fixed at its construction: the flusher describes
/// each once per segment incarnation).
collected collect(const std::vector<object_info>& objects,
                  const std::function<bool(const std::string&)>& with_meta = {});

/// NAME{LABEL="VALUE"}, the value escaped as Prometheus escapes label values.
std::string element_field(std::string_view object, std::string_view label, std::string_view value);

}  // namespace procsafe::redis::detail
