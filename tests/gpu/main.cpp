// The GPU test binary: runs its doctest cases when a GPU is visible, and otherwise exits with
// code 77, which CTest reports as skipped, with the reason on stdout.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <iostream>

#include "runtime/devices.hpp"

int main(int argc, char** argv) {
    if (remat::rt::visible_gpus().empty()) {
        std::cout << "GPU tests skipped: " << remat::rt::gpu_unavailable_reason() << "\n";
        return 77;
    }
    doctest::Context context(argc, argv);
    return context.run();
}
