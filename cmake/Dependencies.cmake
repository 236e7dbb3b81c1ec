# Every third-party dependency is found here, in one place. All come from Debian 12 packages:
#   libboost-graph-dev 1.74   op graphs (adjacency_list, in_edges for the DOT writer)
#   nlohmann-json3-dev 3.11   presets, HF config.json, --json output
#   libfmt-dev 9              tables and messages
#   libcli11-dev 2.1          the CLI
#   doctest-dev 2.4           tests
#   libopenblas-dev 0.3       the CPU runtime's GEMMs (FindBLAS, vendor OpenBLAS)
#   libgraphviz-dev 2.42      the report's plan figure: DOT laid out and rendered to SVG (libgvc)
find_package(Boost 1.74 REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(fmt 9 REQUIRED)
find_package(CLI11 2.1 REQUIRED)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(GVC REQUIRED IMPORTED_TARGET libgvc)
if(REMAT_BUILD_TESTS)
  find_package(doctest 2.4 REQUIRED)
  include(doctest)
endif()

# CUDA (optional): the CUDA backend is built whenever nvcc is found (/usr/local/cuda on our
# machines and in CI). It uses the runtime API and cuBLAS only, so the binary starts and does
# all CPU work on a machine with the toolkit but no driver. Default architectures: sm_80 and
# sm_90 (pass -DCMAKE_CUDA_ARCHITECTURES=90 to build for Hopper alone).
option(REMAT_WITH_CUDA "Build the CUDA backend when nvcc is found" ON)
set(REMAT_HAVE_CUDA OFF)
if(REMAT_WITH_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(REMAT_HAVE_CUDA ON)
    message(STATUS "remat: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  else()
    message(STATUS "remat: CUDA backend OFF (no nvcc found)")
  endif()
endif()

