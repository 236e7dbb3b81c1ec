// Running the real `remat` binary from a test: its exit code, stdout and stderr, a per-process
// temporary directory, and the one-line-error check every CLI test uses. Shared by the CLI test
// files (cli_test.cpp, cli_calibrate_test.cpp); REMAT_BINARY comes from tests/CMakeLists.txt.
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace cli_process {

struct Run {
    int code = -1;
    std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

inline std::filesystem::path temp_dir() {
    static const auto dir = [] {
        auto d = std::filesystem::temp_directory_path() /
                 ("remat_cli_test_" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

inline Run run_remat(const std::string& args) {
    const auto out = temp_dir() / "out.txt", err = temp_dir() / "err.txt";
    const std::string cmd =
        std::string(REMAT_BINARY) + " " + args + " > " + out.string() + " 2> " + err.string();
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

inline std::string write_temp(const std::string& name, const std::string& text) {
    const auto p = temp_dir() / name;
    std::ofstream(p) << text;
    return p.string();
}

// Invalid input: exit code 2 and exactly one line on stderr that contains `needle`.
inline void check_rejected(const std::string& args, const std::string& needle) {
    CAPTURE(args);
    const Run r = run_remat(args);
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_MESSAGE(r.err.find(needle) != std::string::npos, r.err);
}

}  // namespace cli_process
