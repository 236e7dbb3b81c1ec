# clang-format over every C++ and CUDA source of the project, with the checked-in .clang-format:
#   cmake -DROOT=<source tree> -DCLANG_FORMAT=<clang-format> [-DFIX=ON] -P cmake/Format.cmake
# Without FIX it checks (CTest test `format`: it fails and names each file and line that would
# change); with FIX it rewrites the files in place (`cmake --build build --target format`).
if(NOT ROOT OR NOT CLANG_FORMAT)
  message(FATAL_ERROR "Format.cmake: pass -DROOT=<source tree> -DCLANG_FORMAT=<clang-format>")
endif()
set(sources "")
foreach(folder planner runtime tools tests bench fuzz cmake)
  file(GLOB_RECURSE found ${ROOT}/${folder}/*.hpp ${ROOT}/${folder}/*.cpp ${ROOT}/${folder}/*.cuh ${ROOT}/${folder}/*.cu)
  list(APPEND sources ${found})
endforeach()
list(FILTER sources EXCLUDE REGEX "^${ROOT}/tests/data/")  # fixtures, kept as written
list(LENGTH sources n)
if(n EQUAL 0)
  message(FATAL_ERROR "Format.cmake: no sources under ${ROOT}")
endif()
if(FIX)
  execute_process(COMMAND ${CLANG_FORMAT} -i --style=file ${sources} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "clang-format failed (${rc})")
  endif()
  message(STATUS "format: ${n} files formatted")
  return()
endif()
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror --style=file ${sources}
                RESULT_VARIABLE rc ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  string(REGEX MATCHALL "[^\n]*error: code should be clang-formatted[^\n]*" errs "${out}")
  list(LENGTH errs n_errs)
  list(SUBLIST errs 0 20 first)
  string(REPLACE ";" "\n" first "${first}")
  message(FATAL_ERROR "format: ${n_errs} places in ${n} files differ from .clang-format "
                      "(first 20 below); fix with `cmake --build build --target format`\n${first}")
endif()
message(STATUS "format: ${n} files match .clang-format")
