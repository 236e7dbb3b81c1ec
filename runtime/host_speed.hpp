// Whether this machine's cores run at their full speed right now. A virtual machine's vCPUs
// share physical cores with other tenants' work: on the 2-vCPU machine this project is developed
// on, the same arithmetic runs in 1.0x or in 1.3-1.5x its fastest time, in stretches of seconds,
// with nothing in the guest to show it (no steal time, no other process). A step or a calibration
// benchmark timed in a slow stretch measures the neighbour, not the model.
//
// The probe is a fixed workload (about a millisecond of exp and fused multiply-adds on data in
// L1), timed in the calling thread's CPU time so that ranks sharing a core do not slow it. Its
// fastest time in this process is the uncontended speed; a probe within k_uncontended of it says
// the core was running at full speed.
//
//   const double before = probe_host();   // seconds of thread CPU time, recorded
//   ... time something ...
//   const double after = probe_host();
//   bool clean = uncontended(std::max(before, after));
#pragma once

namespace remat::rt {

// A probe this much slower than the fastest seen is contended. The fastest state's probes vary by
// about 1%, the slow state's are 30-50% slower.
inline constexpr double k_uncontended = 1.10;

// Runs the probe once in the calling thread and returns its thread CPU seconds. Records it
// towards fastest_probe_s(). Thread-safe.
double probe_host();
// A yardstick from elsewhere: a calibration's fastest probe (Calibration::host_probe_s), so that
// a run judges its steps as the calibration judged its benchmarks. Thread-safe.
void note_probe_s(double probe_s);
// The fastest probe in this process so far; 0 before the first.
double fastest_probe_s();
// probe_s against the fastest so far: 1.0 at full speed; 0 when no probe has run.
double host_contention(double probe_s);
// Whether a probe of probe_s seconds ran at full speed (within k_uncontended of the fastest).
bool uncontended(double probe_s);

}  // namespace remat::rt
