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
find_package(ZLIB)
if(NOT ZLIB_FOUND)
  message(FATAL_ERROR "zlib not found: install the Debian package zlib1g-dev")
endif()
find_program(PROTOC_C NAMES protoc-c)
if(NOT PROTOC_C)
  message(FATAL_ERROR "protoc-c not found: install the Debian package protobuf-c-compiler")
endif()
find_package(Threads REQUIRED)

set(FEDC_DEP_TARGETS PkgConfig::PROTOBUFC PkgConfig::SODIUM PkgConfig::CJSON PkgConfig::LIBUV
    PkgConfig::OPENBLAS ZLIB::ZLIB Threads::Threads m)
# Names for the generated pkg-config file.
set(FEDC_PC_REQUIRES_PRIVATE "libprotobuf-c libsodium libcjson libuv openblas zlib")
