# Warnings as errors on procsafe's own tests, examples and benchmarks only;
# never on the interface target users link.
function(procsafe_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /WX)
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror)
  endif()
endfunction()
