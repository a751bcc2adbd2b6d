# Warnings on procsafe's own tests, examples, benchmarks and tools only;
# never on the interface targets users link. As errors only with
# PROCSAFE_WERROR (CI's presets turn it on; packagers leave it off).
function(procsafe_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${PROCSAFE_WERROR}>:/WX>)
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic $<$<BOOL:${PROCSAFE_WERROR}>:-Werror>)
  endif()
endfunction()
