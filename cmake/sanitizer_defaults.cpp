// Compiled into each executable of a REMAT_SANITIZE build (CMakeLists.txt): the sanitizers'
// settings for CI's sanitizer job, whoever starts the binary (ctest, a test's child `remat`
// process, a person). The first report of either sanitizer ends the process with a non-zero
// exit; leaks are reported at exit. ASAN_OPTIONS / UBSAN_OPTIONS in the environment still
// override each setting.
extern "C" const char* __asan_default_options() {
    return "halt_on_error=1:detect_leaks=1:strict_string_checks=1";
}
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }
