#include "runtime/run.hpp"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <fstream>
#include <mutex>
#include <thread>

#include "planner/config/error.hpp"
#include "runtime/device_parts.hpp"
#include "runtime/host_speed.hpp"
#include "runtime/limits.hpp"

namespace remat::rt {
namespace {

// The tokens of one step: W*B sequences of S+1 tokens (inputs, then shifted targets).
class TokenSource {
  public:
    TokenSource(const RunConfig& c) : c_(c) {
        if (c.data_path.empty()) return;
        std::ifstream in(c.data_path, std::ios::binary);
        if (!in)
            throw InputError(
                fmt::format("{} '{}': cannot open the file", named(Input::data), c.data_path));
        std::int32_t t;
        while (in.read(reinterpret_cast<char*>(&t), sizeof t)) {
            if (t < 0 || static_cast<std::uint64_t>(t) >= c.model.vocab)
                throw InputError(fmt::format(
                    "{} '{}': token {} at index {} is outside the vocabulary of {} ({})",
                    named(Input::data), c.data_path, t, file_.size(), c.model.vocab, c.model.name));
            file_.push_back(t);
        }
        if (file_.size() <= c.seq + 1)
            throw InputError(fmt::format(
                "{} '{}': {} tokens, need more than {} + 1 = {} (little-endian int32 ids)",
                named(Input::data), c.data_path, file_.size(), named(Input::seq), c.seq + 1));
    }
    // The S + 1 tokens of global row `row` at `step`: inputs, then shifted targets.
    void sequence(std::uint64_t step, std::uint64_t row, std::vector<std::int32_t>& out) const {
        const std::uint64_t S = c_.seq, rows = c_.world * c_.micro_batch;
        out.resize(S + 1);
        if (!file_.empty()) {
            const std::uint64_t start = ((step * rows + row) * S) % (file_.size() - S - 1);
            std::copy(file_.begin() + static_cast<std::ptrdiff_t>(start),
                      file_.begin() + static_cast<std::ptrdiff_t>(start + S + 1), out.begin());
            return;
        }
        // A random first token per sequence, then a fixed successor rule over the first 64 ids:
        // a stream with structure to learn, so that the loss falls from ln V as training works.
        const std::uint64_t K = std::min<std::uint64_t>(c_.model.vocab, 64);
        std::uint64_t t = mix64(mix64(mix64(c_.seed) ^ step) ^ row) % K;
        for (std::uint64_t pos = 0; pos <= S; ++pos, t = (31 * t + 7) % K)
            out[pos] = static_cast<std::int32_t>(t);
    }
    void rank_batch(std::uint64_t step, std::size_t rank, std::vector<std::int32_t>& ids,
                    std::vector<std::int32_t>& targets) const {
        const std::uint64_t B = c_.micro_batch, S = c_.seq;
        ids.resize(B * S);
        targets.resize(B * S);
        std::vector<std::int32_t> row;
        for (std::uint64_t b = 0; b < B; ++b) {
            sequence(step, rank * B + b, row);
            std::copy(row.begin(), row.end() - 1, ids.begin() + static_cast<std::ptrdiff_t>(b * S));
            std::copy(row.begin() + 1, row.end(),
                      targets.begin() + static_cast<std::ptrdiff_t>(b * S));
        }
    }

  private:
    const RunConfig& c_;
    std::vector<std::int32_t> file_;
};

template <class T>
RunResult run_typed(const RunConfig& c, DeviceParts<T> parts) {
    const Model<T> model = build_model<T>(
        c.model, {c.micro_batch, c.seq, c.world, c.seed, c.attention}, parts.backend);
    const TokenSource tokens(c);
    Collectives<T>& coll = *parts.collectives;
    const std::size_t ranks = parts.ranks_run;
    RunResult result;
    result.device_overhead_bytes = parts.overhead_bytes;
    result.ranks.resize(ranks);
    if (c.keep_gradients)
        result.grads.resize(c.steps, std::vector<std::vector<std::vector<float>>>(ranks));
    std::mutex mu;
    std::string error;
    std::vector<double> losses(c.steps, 0.0), step_seconds(c.steps, 0.0);
    const bool probing = c.probe_host && c.device == Device::cpu;
    // probes[rank][s]: before step s; probes[rank][steps]: after the last.
    std::vector<std::vector<double>> probes(probing ? ranks : 0,
                                            std::vector<double>(c.steps + 1, 0.0));
    std::mutex probe_mu;
    std::vector<WorkTime> work;
    double seconds = 0;
    // The first rank to run out of memory reports; the others are stopped.
    auto report_oom = [&](const OutOfMemory& e, std::size_t rank) {
        std::lock_guard lock(mu);
        if (!result.oom)
            result.oom =
                OomReport{e.what(), e.text, e.requested_bytes, e.live_bytes, e.cap_bytes, e.action,
                          e.op,     rank};
        coll.abort();
    };
    auto rank_main = [&](std::size_t rank) {
        model.backend->bind_thread();
        CountingAllocator alloc(c.memory_cap_bytes, model.backend->memory());
        RankResult& out = result.ranks[rank];
        try {
            ExecutorOptions opt;
            opt.keep_gradients = c.keep_gradients;
            opt.time_work = c.time_work && rank == 0;
            RankExecutor<T> ex(model, c.schedule, rank, coll, alloc, c.seed, opt);
            std::vector<std::int32_t> ids, targets;
            coll.all_reduce_sum(rank, 0.0);  // start the clock together
            const auto t0 = std::chrono::steady_clock::now();
            auto step_start = t0;
            for (std::uint64_t s = 0; s < c.steps; ++s) {
                if (probing) {
                    // Outside the step, one rank at a time (ranks probing at once would slow each
                    // other on cores that share a physical one), then start it together.
                    {
                        std::lock_guard one_at_a_time(probe_mu);
                        probes[rank][s] = probe_host();
                    }
                    coll.all_reduce_sum(rank, 0.0);
                    if (rank == 0) step_start = std::chrono::steady_clock::now();
                }
                tokens.rank_batch(s, rank, ids, targets);
                StepRecord r = ex.step(s, ids, targets, rank * c.micro_batch);
                out.timeline = std::move(r.timeline);
                if (rank == 0) {
                    // The step ends with the loss's all-reduce, which every rank reaches.
                    const auto now = std::chrono::steady_clock::now();
                    step_seconds[s] = std::chrono::duration<double>(now - step_start).count();
                    step_start = now;
                    work = std::move(r.work);
                    losses[s] = r.loss;
                    if (c.progress) c.progress(s + 1, c.steps);
                }
                if (c.keep_gradients) result.grads[s][rank] = std::move(r.grads);
            }
            if (probing) {
                std::lock_guard one_at_a_time(probe_mu);
                probes[rank][c.steps] = probe_host();
            }
            if (rank == 0)
                seconds =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            out.saved = ex.saved_after_forward();
        } catch (const OutOfMemory& e) {
            report_oom(e, rank);
        } catch (const DeviceOutOfMemory& e) {
            report_oom(alloc.refused(e), rank);
        } catch (const Aborted&) {
        } catch (const std::exception& e) {
            std::lock_guard lock(mu);
            if (error.empty()) error = fmt::format("rank {}: {}", rank, e.what());
            coll.abort();
        }
        out.peak_bytes = alloc.peak_bytes();
    };
    std::vector<std::thread> threads;
    for (std::size_t r = 0; r < ranks; ++r) threads.emplace_back(rank_main, r);
    for (auto& t : threads) t.join();
    if (!error.empty()) throw std::runtime_error(error);
    if (parts.pool_stats) {
        const PoolStats p = parts.pool_stats();
        result.ranks.front().pool_used_high_bytes = p.used_high_bytes;
        result.ranks.front().pool_reserved_high_bytes = p.reserved_high_bytes;
        result.device_overhead_bytes =
            std::max(result.device_overhead_bytes, p.overhead_after_bytes);
    }
    if (!result.oom) {
        result.losses = losses;
        result.seconds = seconds;
        result.step_seconds = step_seconds;
        if (probing) {
            // The probes are not the steps' work: the run's time is its steps'.
            result.seconds = 0;
            for (double st : step_seconds) result.seconds += st;
            result.step_probe_s.assign(c.steps, 0.0);
            for (const auto& p : probes)
                for (std::uint64_t s = 0; s < c.steps; ++s)
                    result.step_probe_s[s] = std::max({result.step_probe_s[s], p[s], p[s + 1]});
        }
        result.work = std::move(work);
        result.tokens_per_s =
            result.seconds > 0
                ? static_cast<double>(c.micro_batch * c.seq * c.steps) / result.seconds
                : 0;
    }
    return result;
}

}  // namespace

RunResult run_schedule(const RunConfig& c) {
    check_run_config(c);
    openblas_set_num_threads(1);  // one BLAS thread per rank: W ranks use W cores
    const bool cuda = c.device == Device::cuda;
    if (c.precision == Precision::fp32)
        return run_typed<float>(c, cuda ? cuda_parts<float>(c.world) : cpu_parts<float>(c.world));
    return run_typed<bf16>(c, cuda ? cuda_parts<bf16>(c.world) : cpu_parts<bf16>(c.world));
}

}  // namespace remat::rt
