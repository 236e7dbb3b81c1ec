// `remat calibrate`'s glue: the runtime's measurements (runtime/calibrate) as the planner's
// calibration file (planner/calibration), and the table the command prints. Measures nothing
// itself and decides nothing about the figures.
//
//   Calibration c = to_calibration(rt::measure_device(options));
//   save_calibration(c, path);
//   std::cout << calibrate_text(c, path, seconds);
#pragma once
#include <string>

#include "planner/simulate/calibration.hpp"
#include "runtime/calibrate.hpp"

namespace remat::cli {

Calibration to_calibration(const rt::DeviceRates& r);
// Every benchmark, then the rates written to `path`; `wall_s` is how long the command took.
std::string calibrate_text(const Calibration& c, const std::string& path, double wall_s);

}  // namespace remat::cli
