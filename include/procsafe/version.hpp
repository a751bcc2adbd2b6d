// procsafe/version.hpp: PROCSAFE_VERSION_*; CMake reads the version from here.
// SPDX-License-Identifier: MIT
#pragma once

// CMake reads the version from these three lines: keep their shape.
#define PROCSAFE_VERSION_MAJOR 0
#define PROCSAFE_VERSION_MINOR 1
#define PROCSAFE_VERSION_PATCH 0

#define PROCSAFE_VERSION \
    (PROCSAFE_VERSION_MAJOR * 10000 + PROCSAFE_VERSION_MINOR * 100 + PROCSAFE_VERSION_PATCH)
