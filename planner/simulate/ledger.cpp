#include "planner/simulate/ledger.hpp"

namespace remat {

std::string_view category_name(Category k) {
    static constexpr std::string_view names[n_categories] = {
        "parameters",           "gradients",   "optimizer state",
        "unsharded parameters", "activations", "temporaries"};
    return names[static_cast<std::size_t>(k)];
}

Breakdown Ledger::breakdown() const {
    Breakdown b;
    b.parameters_bytes = bytes_[index(Category::parameters)];
    b.gradients_bytes = bytes_[index(Category::gradients)];
    b.optimizer_bytes = bytes_[index(Category::optimizer)];
    b.unsharded_parameters_bytes = bytes_[index(Category::unsharded)];
    b.activations_bytes = bytes_[index(Category::activations)];
    b.temporaries_bytes = bytes_[index(Category::temporaries)];
    return b;
}

void Ledger::raise_peak(Category k, const std::string* op) {
    peak_.bytes = used_;
    peak_.action = action_;
    peak_.op = op ? *op : std::string();
    peak_.category = category_name(k);
    peak_.at = breakdown();
}

}  // namespace remat
