// src/procsafe.cpp: the compiled part of procsafe (optional): the segment's management, defined once.
// SPDX-License-Identifier: MIT
//
// Built as the library procsafe::compiled (CMake) for programs that define
// PROCSAFE_SEPARATE_COMPILATION in every translation unit: they declare
// segment::create, open, remove, construct, find and the rest, and link
// their definitions from here instead of compiling them in each unit.
#ifndef PROCSAFE_SEPARATE_COMPILATION
#define PROCSAFE_SEPARATE_COMPILATION 1
#endif
#define PROCSAFE_BUILDING_LIBRARY 1
#include <procsafe/procsafe.hpp>
