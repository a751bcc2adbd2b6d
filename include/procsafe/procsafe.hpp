// procsafe/procsafe.hpp: the umbrella header, the only include you need.
// SPDX-License-Identifier: MIT
#pragma once

#include <procsafe/detail/config.hpp>  // first: the C++20 check

// The only include you need.
#include <procsafe/barrier.hpp>
#include <procsafe/counter.hpp>
#include <procsafe/counter_array.hpp>
#include <procsafe/error.hpp>
#include <procsafe/family.hpp>
#include <procsafe/histogram.hpp>
#include <procsafe/latch.hpp>
#include <procsafe/live_gauge.hpp>
#include <procsafe/metadata.hpp>
#include <procsafe/prometheus.hpp>
#include <procsafe/segment.hpp>
#include <procsafe/segment_view.hpp>
#include <procsafe/sharded_counter.hpp>
#include <procsafe/version.hpp>
#include <procsafe/wait.hpp>
