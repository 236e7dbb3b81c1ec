#include "runtime/collectives.hpp"

#include <algorithm>

namespace remat::rt {

template <class T>
void InProcessCollectives<T>::barrier() {
    std::unique_lock lock(mu_);
    if (aborted_) throw Aborted();
    const std::uint64_t gen = generation_;
    if (++arrived_ == world_) {
        arrived_ = 0;
        ++generation_;
        cv_.notify_all();
        return;
    }
    cv_.wait(lock, [&] { return generation_ != gen || aborted_; });
    if (generation_ == gen) throw Aborted();
}

template <class T>
void InProcessCollectives<T>::abort() {
    std::lock_guard lock(mu_);
    aborted_ = true;
    cv_.notify_all();
}

template <class T>
void InProcessCollectives<T>::all_gather(std::size_t rank, T* dst, const float* shard,
                                         std::size_t shard_n, std::size_t unit_n) {
    ptrs_[rank] = shard;
    barrier();
    for (std::size_t q = 0; q < world_; ++q) {
        const auto* src = static_cast<const float*>(ptrs_[q]);
        const std::size_t begin = q * shard_n, end = std::min(unit_n, begin + shard_n);
        for (std::size_t j = begin; j < end; ++j)
            dst[j] = store<T>(static_cast<acc_t<T>>(src[j - begin]));
    }
    barrier();  // no rank moves on (and may change its shard) while another still reads it
}

template <class T>
void InProcessCollectives<T>::reduce_scatter(std::size_t rank, T* dst, const T* src,
                                             std::size_t shard_n, std::size_t unit_n) {
    ptrs_[rank] = src;
    barrier();
    const std::size_t begin = rank * shard_n;
    for (std::size_t j = 0; j < shard_n; ++j) {
        acc_t<T> sum = 0;
        if (begin + j < unit_n)
            for (std::size_t q = 0; q < world_; ++q)
                sum += load(static_cast<const T*>(ptrs_[q])[begin + j]);
        dst[j] = store<T>(sum);
    }
    barrier();
}

template <class T>
double InProcessCollectives<T>::all_reduce_sum(std::size_t rank, double x) {
    scalars_[rank] = x;
    barrier();
    double sum = 0;
    for (double v : scalars_) sum += v;
    barrier();
    return sum;
}

template class InProcessCollectives<float>;
template class InProcessCollectives<bf16>;

}  // namespace remat::rt
