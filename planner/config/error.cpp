#include "planner/config/error.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>

#include "planner/config/checked.hpp"

namespace remat {
namespace {

constexpr char k_mark = '\x1f';

struct InputEntry {
    Input input;
    std::string_view key, words;
};
// The words read in every message that names the input, at the start ("the sequence length 2048
// exceeds ...") or after a verb ("lower the sequence length"), so some have an article.
constexpr InputEntry k_inputs[] = {
    {Input::attention, "attention", "attention"},
    {Input::base_dtype, "base_dtype", "the base's dtype"},
    {Input::calibration, "calibration", "calibration file"},
    {Input::data, "data", "token file"},
    {Input::device, "device", "device"},
    {Input::global_batch, "global_batch", "the global batch"},
    {Input::grad_accumulation, "grad_accumulation", "gradient accumulation"},
    {Input::lora_dropout, "lora_dropout", "the LoRA dropout"},
    {Input::lora_rank, "lora_rank", "the LoRA rank"},
    {Input::lora_targets, "lora_targets", "the LoRA targets"},
    {Input::memory_cap, "memory_cap", "the memory cap"},
    {Input::memory_slots, "memory_slots", "memory slots"},
    {Input::micro_batch, "micro_batch", "the micro-batch"},
    {Input::moe_capacity_factor, "moe_capacity_factor", "the expert capacity factor"},
    {Input::offload_checkpoints, "offload_checkpoints", "checkpoint offloading"},
    {Input::optimizer, "optimizer", "optimizer"},
    {Input::output, "output", "output file"},
    {Input::precision, "precision", "precision"},
    {Input::profile, "profile", "profile"},
    {Input::recipe, "recipe", "recipe"},
    {Input::seq, "seq", "the sequence length"},
    {Input::sharding, "sharding", "sharding"},
    {Input::steps, "steps", "the step count"},
    {Input::strategies, "strategies", "strategy list"},
    {Input::train, "train", "training mode"},
    {Input::world_size, "world_size", "the world size"},
};

// One entry per Input, in the enum's order: entry() indexes by the enum's value.
constexpr bool every_input_in_order() {
    for (std::size_t k = 0; k < std::size(k_inputs); ++k)
        if (static_cast<std::size_t>(k_inputs[k].input) != k) return false;
    return std::size(k_inputs) == static_cast<std::size_t>(Input::world_size) + 1;
}
static_assert(every_input_in_order(), "k_inputs lists every Input once, in the enum's order");

const InputEntry& entry(Input input) { return k_inputs[static_cast<std::size_t>(input)]; }

// The input whose placeholder starts at text[at] (a mark), and the placeholder's length.
const InputEntry* placeholder_at(std::string_view text, std::size_t at, std::size_t& length) {
    const std::size_t close = text.find(k_mark, at + 1);
    if (close == std::string_view::npos) return nullptr;
    const std::string_view key = text.substr(at + 1, close - at - 1);
    for (const InputEntry& e : k_inputs)
        if (e.key == key) {
            length = close - at + 1;
            return &e;
        }
    return nullptr;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = up;
        }
    }
    return row[b.size()];
}

// Control characters as escapes (\n, \t, \r, else \xNN); with `quotes`, single quotes and
// backslashes too, so that a quoted echo reads unambiguously.
void append_escaped(std::string& out, std::string_view text, bool quotes) {
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\n')
            out += "\\n";
        else if (c == '\t')
            out += "\\t";
        else if (c == '\r')
            out += "\\r";
        else if (quotes && (c == '\'' || c == '\\')) {
            out += '\\';
            out += ch;
        } else if (c < 0x20 || c == 0x7f)
            out += fmt::format("\\x{:02x}", c);
        else
            out += ch;
    }
}

}  // namespace

std::string named(Input input) {
    std::string out(1, k_mark);
    out += entry(input).key;
    out += k_mark;
    return out;
}

std::string_view input_words(Input input) { return entry(input).words; }

std::string name_inputs(std::string_view text, InputNames names) {
    std::string out;
    std::size_t done = 0;
    for (std::size_t at = text.find(k_mark); at != std::string_view::npos;
         at = text.find(k_mark, at)) {
        std::size_t length = 0;
        const InputEntry* e = placeholder_at(text, at, length);
        if (!e) {
            ++at;  // a lone mark is text (one_line() escapes it when printed)
            continue;
        }
        out.append(text.substr(done, at - done));
        out.append(names(e->input));
        at += length;
        done = at;
    }
    out.append(text.substr(done));
    return out;
}

bool names_inputs(std::string_view text) {
    std::size_t length = 0;
    for (std::size_t at = text.find(k_mark); at != std::string_view::npos;
         at = text.find(k_mark, at + 1))
        if (placeholder_at(text, at, length)) return true;
    return false;
}

std::string quote(std::string_view text) {
    std::string out = "'";
    append_escaped(out, text, true);
    return out + "'";
}

std::string one_line(std::string_view message) {
    std::string out;
    append_escaped(out, message, false);
    return out;
}

void throw_size_overflow() { throw SizeOverflow("a size exceeds 2^63 - 1 bytes or elements"); }

void throw_unknown(const std::string& what, const std::string& given,
                   const std::vector<std::string>& valid) {
    std::vector<std::pair<std::size_t, std::string>> ranked;
    for (const auto& v : valid) ranked.emplace_back(edit_distance(given, v), v);
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<std::string> closest;
    for (std::size_t i = 0; i < ranked.size() && i < 3; ++i) closest.push_back(ranked[i].second);
    throw InputError(fmt::format("unknown {} {}; closest valid: {} (all: {})", what, quote(given),
                                 fmt::join(closest, ", "), fmt::join(valid, ", ")));
}

}  // namespace remat
