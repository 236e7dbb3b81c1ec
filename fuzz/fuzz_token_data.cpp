// Fuzzes `remat run --data FILE` (little-endian int32 token ids): the runtime reads the file
// when a run starts (runtime/run.cpp, TokenSource), so each input is written to a temporary file
// and run_schedule trains a one-block GPT-2 of 64 tokens on it: 2 ranks of micro-batch 2 at
// sequence 4, 2 steps, keeping everything. That covers reading (short files, partial trailing
// ids, ids outside the vocabulary) and the windows each rank takes from the file at each step.
//
// Findings besides crashes: an accepted file whose run reports no loss or a loss that is not
// finite, and a run error that is not an InputError.
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "fuzz/fuzz_common.hpp"
#include "planner/config/json_io.hpp"
#include "planner/config/model.hpp"
#include "planner/config/schedule.hpp"
#include "runtime/run.hpp"

namespace {

using namespace remat;

constexpr const char* k_model = R"({
  "format": "remat-model", "name": "fuzz-gpt2", "arch": "gpt2",
  "n_layers": 1, "hidden": 8, "n_heads": 2, "n_kv_heads": 2, "ffn": 16, "vocab": 64,
  "context": 16, "norm": "layernorm", "activation": "gelu_new", "tied_embeddings": true,
  "learned_positions": true, "rotary_pct": 0.0, "parallel_residual": false,
  "attn_bias": true, "mlp_bias": true, "attn_dropout": 0.1, "resid_dropout": 0.1,
  "embd_dropout": 0.1})";

rt::RunConfig config(const std::string& path) {
    rt::RunConfig c;
    c.model = model_from_json(parse_json_text(k_model, "fuzz_token_data"), "fuzz_token_data");
    c.micro_batch = 2;
    c.seq = 4;
    c.world = 2;
    c.steps = 2;
    // Embedding, the block, final norm, head: everything kept.
    c.schedule = schedule_from_keeps(std::vector<Keep>(c.model.n_layers + 3, Keep::all));
    c.data_path = path;
    return c;
}

// One file per process (libFuzzer's -jobs and -fork run several), removed at exit.
struct TokenFile {
    std::string path = (std::filesystem::temp_directory_path() /
                        fmt::format("remat_fuzz_tokens_{}.bin", ::getpid()))
                           .string();
    ~TokenFile() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
};

const std::string& token_path() {
    static const TokenFile f;
    return f.path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    {
        std::ofstream out(token_path(), std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
        if (!out) remat::fuzz::finding("cannot write " + token_path());
    }
    static const rt::RunConfig base = config(token_path());
    remat::fuzz::rejects_only_with_input_errors([&] {
        const rt::RunResult r = rt::run_schedule(base);
        if (r.oom) remat::fuzz::finding("out of memory without a cap: " + r.oom->message);
        if (r.losses.size() != base.steps)
            remat::fuzz::finding(
                fmt::format("{} losses for {} steps", r.losses.size(), base.steps));
        for (const double loss : r.losses)
            if (!std::isfinite(loss))
                remat::fuzz::finding(fmt::format("loss {} on an accepted token file", loss));
    });
    return 0;
}
