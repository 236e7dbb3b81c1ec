# Every third-party dependency is found here, in one place. All come from Debian 12 packages:
#   libboost-graph-dev 1.74   op graphs (adjacency_list, in_edges for the DOT writer)
#   nlohmann-json3-dev 3.11   presets, HF config.json, --json output
#   libfmt-dev 9              tables and messages
#   libcli11-dev 2.1          the CLI
#   doctest-dev 2.4           tests
#   libopenblas-dev 0.3       the CPU runtime's GEMMs (FindBLAS, vendor OpenBLAS)
find_package(Boost 1.74 REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(fmt 9 REQUIRED)
find_package(CLI11 2.1 REQUIRED)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_package(Threads REQUIRED)
if(REMAT_BUILD_TESTS)
  find_package(doctest 2.4 REQUIRED)
  include(doctest)
endif()
