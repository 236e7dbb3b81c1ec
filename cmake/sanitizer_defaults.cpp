// Compiled into each executable of a REMAT_SANITIZE build (CMakeLists.txt): the sanitizers'
// settings for CI's sanitizer job, whoever starts the binary (ctest, a test's child `remat`
// process, a person). The first report of either sanitizer ends the process with a non-zero
// exit; leaks are reported at exit. ASAN_OPTIONS / UBSAN_OPTIONS in the environment still
// override each setting.
extern "C" const char* __asan_default_options() {
    return "halt_on_error=1:detect_leaks=1:strict_string_checks=1";
}
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }
// Leaks inside third-party libraries that remat cannot free: Graphviz 2.42's dot layout keeps
// the virtual nodes and edges of cluster skeletons (build_skeleton), gvContext's plugin
// configuration and fontconfig's caches outlive every handle remat releases (plan_figure.cpp
// frees the render data, the layout, the graph and the context). ASan's fast unwinder sees
// only libgvc's own allocator (gmalloc) on those stacks, so the whole library is exempt: a
// handle remat forgot to free through it would be missed too.
extern "C" const char* __lsan_default_suppressions() {
    return "leak:libgvplugin_dot_layout.so\n"
           "leak:libgvc.so\n"
           "leak:libfontconfig.so\n";
}
// The suppressed leaks are expected: no summary of them on stderr (a CLI test reads stderr).
extern "C" const char* __lsan_default_options() { return "print_suppressions=0"; }
