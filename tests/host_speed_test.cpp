// The host probe (runtime/host_speed.hpp) and what validate and run make of it (steady_step,
// tools/validation.hpp): a step is the measurement only when the probes around it ran at full
// speed, so that a neighbour's work on a shared host is not taken for the model's error.
#include "runtime/host_speed.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>

#include "planner/strategy/strategy.hpp"
#include "tests/runtime_question.hpp"
#include "tools/validation.hpp"

using namespace remat;
using namespace remat::cli;

TEST_SUITE("host_speed") {
    TEST_CASE("host_speed::the probe times itself and keeps the fastest") {
        const double a = rt::probe_host(), b = rt::probe_host();
        CHECK(a > 0);
        CHECK(b > 0);
        const double f = rt::fastest_probe_s();
        CHECK(f <= std::min(a, b));
        CHECK(rt::host_contention(f) == doctest::Approx(1.0));
        CHECK(rt::uncontended(f));
        CHECK(rt::uncontended(f * 1.09));
        CHECK_FALSE(rt::uncontended(f * 1.11));
        // A yardstick slower than the fastest seen changes nothing.
        rt::note_probe_s(2 * f);
        rt::note_probe_s(0);
        CHECK(rt::fastest_probe_s() == f);
    }

    TEST_CASE("host_speed::the steady step is the fastest the host ran at full speed") {
        rt::probe_host();
        const double f = rt::fastest_probe_s(), slow = 1.5 * f;
        rt::RunResult run;
        run.step_seconds = {0.5, 0.2, 0.1, 0.3};
        SUBCASE("not probed: the fastest after the first") {
            const SteadyStep s = steady_step(run);
            CHECK(s.seconds == 0.1);
            CHECK(s.uncontended);
        }
        SUBCASE("the fastest step was slowed: the fastest of the others") {
            run.step_probe_s = {f, f, slow, f};
            const SteadyStep s = steady_step(run);
            CHECK(s.seconds == 0.2);
            CHECK(s.uncontended);
        }
        SUBCASE("every step after the first slowed: the fastest, marked") {
            run.step_probe_s = {f, slow, slow, slow};
            const SteadyStep s = steady_step(run);
            CHECK(s.seconds == 0.1);
            CHECK_FALSE(s.uncontended);
        }
        SUBCASE("the first step pays first-touch: it never counts while there are others") {
            run.step_seconds = {0.05, 0.2};
            run.step_probe_s = {f, f};
            CHECK(steady_step(run).seconds == 0.2);
        }
        SUBCASE("a single step is the measurement") {
            run.step_seconds = {0.4};
            run.step_probe_s = {f};
            CHECK(steady_step(run).seconds == 0.4);
        }
        SUBCASE("no step") {
            run.step_seconds.clear();
            CHECK(steady_step(run).seconds == 0);
        }
    }

    TEST_CASE("host_speed::a probed CPU run has a probe per step, outside the steps' time") {
        const Question q = test::runtime_test_question(rt::Device::cpu, "tiny-gpt2", 1, 32, 2,
                                                       Precision::fp32, Attention::flash);
        RunSettings s;
        s.steps = 3;
        const RunReport r = run_and_compare(q, parse_strategy("sqrt"), s);
        REQUIRE(r.run.step_seconds.size() == 3);
        REQUIRE(r.run.step_probe_s.size() == 3);
        for (double p : r.run.step_probe_s) CHECK(p >= rt::fastest_probe_s());
        // The run's time is its steps', the probes between them left out.
        CHECK(r.run.seconds == doctest::Approx(std::accumulate(r.run.step_seconds.begin(),
                                                               r.run.step_seconds.end(), 0.0)));
        const std::vector<double> c = step_contention(r.run);
        REQUIRE(c.size() == 3);
        for (double x : c) CHECK(x >= 1.0);
        // The memory check is unchanged by the probes.
        CHECK(r.worst_peak_error() == 0);
    }
}
