# Instructions per operation, by difference: N operations minus 0 operations.
set(_n 100000)
foreach(_kind raw single atomic mutex value writer sharded alternate per_process)
  foreach(_count 0 ${_n})
    execute_process(
      COMMAND ${VALGRIND} --tool=callgrind --callgrind-out-file=/dev/null ${PROBE} ${_kind} ${_count}
      ERROR_VARIABLE _err OUTPUT_QUIET RESULT_VARIABLE _rc)
    string(REGEX MATCH "Collected : ([0-9]+)" _m "${_err}")
    set(_ir_${_count} ${CMAKE_MATCH_1})
  endforeach()
  math(EXPR _per "(${_ir_${_n}} - ${_ir_0}) * 100 / ${_n}")
  math(EXPR _whole "${_per} / 100")
  math(EXPR _frac "${_per} % 100")
  if(_frac LESS 10)
    set(_frac "0${_frac}")  # 12.05, not 12.5
  endif()
  message(STATUS "${_kind}: ${_whole}.${_frac} instructions per operation")
endforeach()
