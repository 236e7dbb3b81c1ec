# The walls between remat's folders (docs/architecture.md), checked on every #include "...":
#   cmake -DROOT=<source tree> -P cmake/CheckWalls.cmake
# Each folder may include only the folders listed for it; a crossing prints the file, the line
# and the rule, and fails. CTest runs it (test `walls`), and once on a tree with one crossing
# (tests/data/walls-crossed, test `walls_detects_a_crossing`, which must fail).
if(NOT ROOT)
  message(FATAL_ERROR "CheckWalls.cmake: pass -DROOT=<source tree>")
endif()

# folder → the quoted-include prefixes its files may use. The planner's steps follow the flow
# config → graph → chain → simulate → strategy → search; dot draws a chain and a Schedule. The
# runtime takes only what a question is made of (planner/config), never a size the planner
# predicts. tools/, tests/, bench/ and fuzz/ may include everything.
set(allowed_planner/config   planner/config/)
set(allowed_planner/graph    planner/config/ planner/graph/)
set(allowed_planner/chain    planner/config/ planner/graph/ planner/chain/)
set(allowed_planner/simulate planner/config/ planner/graph/ planner/chain/ planner/simulate/)
set(allowed_planner/strategy planner/config/ planner/graph/ planner/chain/ planner/simulate/ planner/strategy/)
set(allowed_planner/search   planner/config/ planner/graph/ planner/chain/ planner/simulate/ planner/strategy/ planner/search/)
set(allowed_planner/dot      planner/config/ planner/graph/ planner/chain/ planner/dot/)
set(allowed_runtime          planner/config/ runtime/)
set(walled planner/config planner/graph planner/chain planner/simulate planner/strategy planner/search planner/dot runtime)

set(n_files 0)
set(crossings "")
foreach(folder IN LISTS walled)
  file(GLOB_RECURSE sources ${ROOT}/${folder}/*.hpp ${ROOT}/${folder}/*.cpp ${ROOT}/${folder}/*.cuh ${ROOT}/${folder}/*.cu)
  foreach(path IN LISTS sources)
    math(EXPR n_files "${n_files} + 1")
    file(RELATIVE_PATH rel ${ROOT} ${path})
    file(STRINGS ${path} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]")
    foreach(line IN LISTS lines)
      # CUDA's headers belong to runtime/cuda alone: the planner and the CPU runtime build without it.
      if(line MATCHES "<(cuda|cublas|nccl)[a-z_]*\\.h>" AND NOT rel MATCHES "^runtime/cuda/")
        string(APPEND crossings "  ${rel}: ${line}  (only runtime/cuda/ may include CUDA)\n")
      endif()
      if(NOT line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
        continue()
      endif()
      set(target ${CMAKE_MATCH_1})
      if(NOT target MATCHES "/")
        continue()  # a file beside this one
      endif()
      set(ok FALSE)
      foreach(prefix IN LISTS allowed_${folder})
        string(FIND "${target}" "${prefix}" at)
        if(at EQUAL 0)
          set(ok TRUE)
        endif()
      endforeach()
      if(NOT ok)
        string(REPLACE ";" ", " rule "${allowed_${folder}}")
        string(APPEND crossings "  ${rel} includes \"${target}\": ${folder}/ may include only ${rule}\n")
      endif()
    endforeach()
  endforeach()
endforeach()

if(n_files EQUAL 0)
  message(FATAL_ERROR "CheckWalls.cmake: no sources under ${ROOT}; is ROOT the source tree?")
endif()
if(crossings)
  message(FATAL_ERROR "walls crossed (docs/architecture.md):\n${crossings}")
endif()
message(STATUS "walls: ${n_files} files, no crossing")
