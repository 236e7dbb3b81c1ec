// Collectives between the ranks of one run: FSDP's all-gather and reduce-scatter of a unit's
// flat parameters and gradients, and a sum of scalars (the loss). The interface is what a NCCL
// implementation provides; InProcessCollectives runs W ranks as threads of one process.
//
//   InProcessCollectives c(W);
//   c.all_gather(rank, unit_params, shard, shard_n, unit_n);   // every rank calls, in order
//
// Sums run over ranks 0..W-1 in order, so results are the same on every run (deterministic).
// A rank that fails calls abort(): the others leave their next collective with Aborted instead
// of waiting forever.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "runtime/numeric.hpp"

namespace remat::rt {

struct Aborted : std::runtime_error {
    Aborted() : std::runtime_error("another rank failed") {}
};

template <class T>
class Collectives {
  public:
    virtual ~Collectives() = default;
    virtual std::size_t world_size() const = 0;
    // dst(unit_n) of every rank = the concatenation of the ranks' fp32 shards (shard_n each,
    // the last padded), converted to T.
    virtual void all_gather(std::size_t rank, T* dst, const float* shard, std::size_t shard_n,
                            std::size_t unit_n) = 0;
    // dst(shard_n) of rank r = sum over ranks of their src(unit_n)[r*shard_n ...], padding 0.
    virtual void reduce_scatter(std::size_t rank, T* dst, const T* src, std::size_t shard_n,
                                std::size_t unit_n) = 0;
    virtual double all_reduce_sum(std::size_t rank, double x) = 0;
    virtual void abort() = 0;
};

template <class T>
class InProcessCollectives final : public Collectives<T> {
  public:
    explicit InProcessCollectives(std::size_t world)
        : world_(world), ptrs_(world), scalars_(world) {}
    std::size_t world_size() const override { return world_; }
    void all_gather(std::size_t rank, T* dst, const float* shard, std::size_t shard_n,
                    std::size_t unit_n) override;
    void reduce_scatter(std::size_t rank, T* dst, const T* src, std::size_t shard_n,
                        std::size_t unit_n) override;
    double all_reduce_sum(std::size_t rank, double x) override;
    void abort() override;

  private:
    void barrier();
    std::size_t world_;
    std::vector<const void*> ptrs_;
    std::vector<double> scalars_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::size_t arrived_ = 0;
    std::uint64_t generation_ = 0;
    bool aborted_ = false;
};

}  // namespace remat::rt
