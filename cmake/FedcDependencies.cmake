# Every dependency is a Debian package; scripts/setup-deps.sh installs them.
# Each check below fails with the name of the package that provides it.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install the Debian package pkg-config")
endif()

function(fedc_require_pkg var module debpkg)
  pkg_check_modules(${var} IMPORTED_TARGET ${module})
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "${module} not found: install the Debian package ${debpkg} "
                        "(or run scripts/setup-deps.sh)")
  endif()
endfunction()

fedc_require_pkg(PROTOBUFC libprotobuf-c libprotobuf-c-dev)
fedc_require_pkg(SODIUM libsodium libsodium-dev)
fedc_require_pkg(CJSON libcjson libcjson-dev)
fedc_require_pkg(LIBUV libuv libuv1-dev)
fedc_require_pkg(OPENBLAS openblas libopenblas-dev)
fedc_require_pkg(LIBCRYPTO libcrypto libssl-dev)
fedc_require_pkg(LIBSSL libssl libssl-dev)
find_package(ZLIB)
if(NOT ZLIB_FOUND)
  message(FATAL_ERROR "zlib not found: install the Debian package zlib1g-dev")
endif()
find_program(PROTOC_C NAMES protoc-c)
if(NOT PROTOC_C)
  message(FATAL_ERROR "protoc-c not found: install the Debian package protobuf-c-compiler")
endif()
find_package(Threads REQUIRED)

# MPI is optional: without it, fedc sim runs in one process only.
option(FEDC_MPI "Spread fedc sim over MPI ranks when an MPI library is found" ON)
set(FEDC_HAVE_MPI OFF)
if(FEDC_MPI)
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    set(FEDC_HAVE_MPI ON)
  else()
    message(STATUS "MPI not found: fedc sim --mpi disabled (Debian: libopenmpi-dev openmpi-bin)")
  endif()
endif()

set(FEDC_DEP_TARGETS PkgConfig::PROTOBUFC PkgConfig::SODIUM PkgConfig::CJSON PkgConfig::LIBUV
    PkgConfig::OPENBLAS PkgConfig::LIBSSL PkgConfig::LIBCRYPTO ZLIB::ZLIB Threads::Threads m)
# Names for the generated pkg-config file.
set(FEDC_PC_REQUIRES_PRIVATE "libprotobuf-c libsodium libcjson libuv openblas libssl libcrypto zlib")
if(FEDC_HAVE_MPI)
  list(APPEND FEDC_DEP_TARGETS MPI::MPI_C)
  set(FEDC_PC_REQUIRES_PRIVATE "${FEDC_PC_REQUIRES_PRIVATE} ompi-c")
endif()
