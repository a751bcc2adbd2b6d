// procsafe: process-safe shared counters.
// SPDX-License-Identifier: MIT
//
// The Redis function library: FUNCTION LOAD'ed by the flusher, called with
// FCALL. Functions persist with the data (AOF, RDB, replication), unlike
// EVALSHA's script cache, which a restart empties.
#include <procsafe/redis.hpp>

namespace procsafe::redis {

std::string_view function_library() {
    // The library's name carries its version: a flusher with other rules
    // loads procsafe_2 beside it and never replaces what older flushers call.
    static constexpr std::string_view code = R"lua(#!lua name=procsafe_1
-- procsafe fleet counters (docs/redis.md). Every key of a call is in the
-- hash slot of {procsafe:NAMESPACE}.
--
-- Lua numbers are doubles: no counter value is ever a Lua number here.
-- Values and deltas arrive as decimal strings (the flusher computes each
-- delta exactly, in C++), watermarks are compared as strings, and HINCRBY
-- and HINCRBYFLOAT parse the deltas in C. Their replies are not returned.

-- Redis' clock in ms, as text (seconds and a 3-digit ms part concatenated).
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

-- procsafe_flush_1
-- KEYS: totals hash, this reporter's watermark hash, reporters hash
-- ARGV: reporter, info, mode ('i': HINCRBY, 'f': HINCRBYFLOAT), then
--       (field, expected watermark ('' for none), new value, delta) tuples
-- Every watermark must equal the expected one, or nothing changes and the
-- reply is {'conflict', {fields}}: another flusher got there first. Else
-- each field gets its delta added to its total and its watermark set, as a
-- pair (a total that would overflow keeps both: {'ok', {field, error...}}).
local function flush(keys, args)
  local n = #args
  if #keys ~= 3 or n < 3 or (n - 3) % 4 ~= 0 then
    return redis.error_reply('ERR procsafe_flush_1: 3 keys; reporter, info, mode, then (field, expected, value, delta) tuples')
  end
  local totals, marks, reporters = keys[1], keys[2], keys[3]
  local incr
  if args[3] == 'i' then incr = 'HINCRBY'
  elseif args[3] == 'f' then incr = 'HINCRBYFLOAT'
  else return redis.error_reply('ERR procsafe_flush_1: mode i or f') end
  local conflicts = {}
  for i = 4, n, 4 do
    local mark = redis.call('HGET', marks, args[i])
    if not mark then mark = '' end
    if mark ~= args[i + 1] then conflicts[#conflicts + 1] = args[i] end
  end
  if #conflicts > 0 then return {'conflict', conflicts} end
  local failed = {}
  for i = 4, n, 4 do
    local r = redis.pcall(incr, totals, args[i], args[i + 3])
    if type(r) == 'table' and r.err then
      failed[#failed + 1] = args[i]
      failed[#failed + 1] = r.err
    else
      redis.call('HSET', marks, args[i], args[i + 2])
    end
  end
  redis.call('HSET', reporters, args[1], now_ms() .. ' ' .. args[2])
  return {'ok', failed}
end

-- procsafe_gauges_1
-- KEYS: this reporter's gauge hash, reporters hash
-- ARGV: reporter, info, ttl (ms), stamp (20 digits: when the values were
--       read, ns), then (field, value) pairs
-- Sets the values (a gauge's fleet value is the sum of the live reporters'
-- last values, added up by the reader) unless a newer read is there
-- already, and lets the hash expire ttl ms after this call.
local function gauges(keys, args)
  local n = #args
  if #keys ~= 2 or n < 4 or (n - 4) % 2 ~= 0 then
    return redis.error_reply('ERR procsafe_gauges_1: 2 keys; reporter, info, ttl, stamp, then (field, value) pairs')
  end
  local g, reporters = keys[1], keys[2]
  local stamp = redis.call('HGET', g, '\0stamp')
  if stamp and #stamp == #args[4] and stamp > args[4] then return {'stale', stamp} end
  redis.call('HSET', g, '\0stamp', args[4])
  local i = 5
  while i <= n do
    local chunk = {}
    local last = math.min(n, i + 999)
    for j = i, last do chunk[#chunk + 1] = args[j] end
    redis.call('HSET', g, unpack(chunk))
    i = last + 1
  end
  redis.call('PEXPIRE', g, args[3])
  redis.call('HSET', reporters, args[1], now_ms() .. ' ' .. args[2])
  return {'ok'}
end

redis.register_function('procsafe_flush_1', flush)
redis.register_function('procsafe_gauges_1', gauges)
)lua";
    return code;
}

}  // namespace procsafe::redis
