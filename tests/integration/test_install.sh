#!/usr/bin/env bash
# cmake --install puts the library (with its soname), the headers, the
# pkg-config file, the CMake package and the fedc command in a prefix, and a
# user's program builds against them both ways.
source "$(dirname "$0")/lib.sh"
: "${FEDC_BUILD_DIR:?FEDC_BUILD_DIR must point to the build tree}"
prefix="$WORK/prefix"
cmake --install "$FEDC_BUILD_DIR" --prefix "$prefix" > "$WORK/install.log"
libdir=$(dirname "$(find "$prefix" -name 'libfedc.so' | head -n 1)")
[[ -n "$libdir" ]] || fail "libfedc.so not installed"
soname=$(objdump -p "$libdir/libfedc.so" | awk '/SONAME/ {print $2}')
[[ "$soname" == libfedc.so.0 ]] || fail "soname is '$soname', want libfedc.so.0"
[[ -e "$libdir/libfedc.so.0" ]] || fail "libfedc.so.0 missing"
for h in core.h tensor.h config.h client.h server.h nn.h data.h; do
  [[ -f "$prefix/include/fedc/$h" ]] || fail "header fedc/$h not installed"
done
[[ -x "$prefix/bin/fedc" ]] || fail "fedc command not installed"
pass "library (soname $soname), headers and command installed"

# pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c11 -Wall -Werror "$FEDC_SOURCE_DIR/examples/custom_client.c" -o "$WORK/client_pc" \
  $(pkg-config --cflags --libs fedc) -lm -Wl,-rpath,"$libdir"
out=$("$WORK/client_pc" 2>&1 || true)
[[ "$out" == *usage* ]] || fail "program built with pkg-config does not run: $out"
pass "a program builds with pkg-config --cflags --libs fedc"

# CMake package
mkdir -p "$WORK/user"
cat > "$WORK/user/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.18)
project(user C)
find_package(fedc REQUIRED)
add_executable(user_client "$FEDC_SOURCE_DIR/examples/custom_client.c")
target_link_libraries(user_client PRIVATE fedc::fedc m)
CM
cmake -S "$WORK/user" -B "$WORK/user/build" -DCMAKE_PREFIX_PATH="$prefix" > "$WORK/cm.log" 2>&1 \
  || { cat "$WORK/cm.log"; fail "find_package(fedc) failed"; }
cmake --build "$WORK/user/build" > "$WORK/cmb.log" 2>&1 || { cat "$WORK/cmb.log"; fail "build with fedc::fedc failed"; }
out=$(LD_LIBRARY_PATH="$libdir" "$WORK/user/build/user_client" 2>&1 || true)
[[ "$out" == *usage* ]] || fail "CMake-built program does not run: $out"
pass "a program builds with find_package(fedc) and fedc::fedc"
LD_LIBRARY_PATH="$libdir" "$prefix/bin/fedc" version | grep -q "fedc 0.1.0" || fail "installed fedc does not run"
pass "test_install"
