#include "tools/emit_torch.hpp"

#include <fmt/format.h>

#include <utility>
#include <vector>

#include "planner/config/error.hpp"
#include "planner/config/units.hpp"

namespace remat {

std::string torch_code(const Question& q, const Evaluation& e) {
    const Chain& c = e.chain;
    for (const Action& a : e.plan.schedule.actions)
        if (a.offload)
            throw InputError(
                "--emit torch: the bridge does not offload checkpoints yet; drop "
                "--offload-checkpoints");
    std::size_t first_block = 0;
    while (first_block < c.stages.size() && c.stages[first_block].kind != StageKind::block)
        ++first_block;
    std::vector<std::pair<std::size_t, std::size_t>> runs;
    for (std::size_t i = 0; i < c.stages.size(); ++i) {
        const Keep k = e.plan.keeps[i];
        if (k == Keep::selective)
            throw InputError(
                "--emit torch: selective recomputation needs torch's selective activation "
                "checkpointing, which the bridge does not use yet; choose another --strategy");
        if (k != Keep::input) continue;
        std::size_t j = i;
        while (j + 1 < c.stages.size() && e.plan.keeps[j + 1] == Keep::none) ++j;
        for (std::size_t s = i; s <= j; ++s)
            if (c.stages[s].kind != StageKind::block)
                throw InputError(fmt::format(
                    "--emit torch: the plan recomputes {}, which is not a transformer block; "
                    "the bridge checkpoints blocks only: choose another --strategy",
                    c.stages[s].name));
        runs.emplace_back(i - first_block, j - first_block);
        i = j;
    }
    std::string list;
    for (const auto& [a, b] : runs)
        list += fmt::format("{}({}, {})", list.empty() ? "" : ", ", a, b);
    return fmt::format(
        "# remat plan: {} {}, micro-batch {} x seq {}, {}: predicted peak {} ({} allocator)\n"
        "# `model` is your Hugging Face model (GPT-2, Llama, Mistral or NeoX); "
        "PYTHONPATH=<remat>/python\n"
        "import remat_torch\n"
        "runs = remat_torch.apply_segments(model, [{}], n_blocks={})\n",
        q.model.name, e.plan.strategy, q.options.micro_batch, q.options.seq,
        precision_name(q.options.precision), format_bytes(e.result.peak_bytes),
        format_bytes(e.result.allocator_peak_bytes), list, c.n_blocks());
}

}  // namespace remat
