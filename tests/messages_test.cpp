// Libraries know no command line (planner/config/error.hpp): planner/ and runtime/ messages name
// an input in words, never by its flag, and the CLI spells the flag. A scan of every string
// literal in planner/ and runtime/ for a flag, the words library callers read, and the CLI's
// lines, which are what they were before the flags left the libraries.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "planner/chain/chain.hpp"
#include "planner/config/error.hpp"
#include "planner/search/recommend.hpp"
#include "planner/simulate/calibration.hpp"
#include "planner/strategy/strategy.hpp"
#include "runtime/devices.hpp"
#include "runtime/limits.hpp"
#include "runtime/run.hpp"
#include "runtime/stage_program.hpp"
#include "tests/cli_process.hpp"
#include "tools/cli_options.hpp"

using namespace remat;

namespace {

struct Literal {
    int line = 0;      // where it starts
    std::string text;  // adjacent literals ("a" "b") joined, as the compiler joins them
};

// The string literals of C++ source, comments and character literals skipped; escapes are kept
// as written, raw strings read to their delimiter.
std::vector<Literal> string_literals(const std::string& src) {
    std::vector<Literal> out;
    bool adjacent = false;  // only blanks and comments since the last literal ended
    int line = 1;
    for (std::size_t i = 0; i < src.size();) {
        const char c = src[i];
        if (c == '\n') ++line;
        if (c == '/' && i + 1 < src.size() && src[i + 1] == '/') {
            i = src.find('\n', i);
            if (i == std::string::npos) break;
            continue;
        }
        if (c == '/' && i + 1 < src.size() && src[i + 1] == '*') {
            const std::size_t end = src.find("*/", i + 2);
            for (std::size_t k = i; k < end && k < src.size(); ++k) line += src[k] == '\n';
            i = end == std::string::npos ? src.size() : end + 2;
            continue;
        }
        if (c == '\'' &&
            !(i > 0 && std::isalnum(static_cast<unsigned char>(src[i - 1])))) {  // not 1'000
            for (++i; i < src.size() && src[i] != '\''; ++i)
                if (src[i] == '\\') ++i;
            ++i;
            adjacent = false;
            continue;
        }
        if (c == '"') {
            std::string text;
            const int start = line;
            const bool raw = i > 0 && src[i - 1] == 'R';
            if (raw) {
                const std::size_t open = src.find('(', i);
                const std::string close = ")" + src.substr(i + 1, open - i - 1) + "\"";
                const std::size_t end = src.find(close, open);
                text = src.substr(open + 1, end - open - 1);
                for (const char ch : text) line += ch == '\n';
                i = end + close.size();
            } else {
                for (++i; i < src.size() && src[i] != '"'; ++i) {
                    if (src[i] == '\\') text += src[i++];
                    text += src[i];
                }
                ++i;
            }
            if (adjacent && !out.empty())
                out.back().text += text;
            else
                out.push_back({start, text});
            adjacent = true;
            continue;
        }
        if (!std::isspace(static_cast<unsigned char>(c))) adjacent = false;
        ++i;
    }
    return out;
}

// A command to run, as a message may advise one: `remat calibrate --device cpu|cuda -o FILE`,
// up to its closing backtick or the end of its clause.
const std::regex k_command(R"(remat [a-z-]+[^`:;,]*)");
// A flag: - or -- and a letter, after the start, a blank, a quote, a backtick or a parenthesis.
const std::regex k_flag(R"((^|[\s'"`(])(--?[A-Za-z][A-Za-z0-9-]*))");
// Another tool's flag, which a message names as that tool's.
const std::vector<std::string> k_not_ours = {
    "Hugging Face's --fp16",  // planner/config/options.cpp: what fp16-mixed is, in HF's words
};

// The flags `text` spells outside commands to run and other tools' flags.
std::vector<std::string> flags_in(std::string text) {
    for (const std::string& s : k_not_ours)
        for (std::size_t at = text.find(s); at != std::string::npos; at = text.find(s, at))
            text.replace(at, s.size(), std::string(s.size(), ' '));
    text = std::regex_replace(text, k_command, "");
    std::vector<std::string> out;
    for (std::sregex_iterator it(text.begin(), text.end(), k_flag), end; it != end; ++it)
        out.push_back((*it)[2]);
    return out;
}

template <class F>
InputError input_error(F f) {
    try {
        f();
    } catch (const InputError& e) {
        return e;
    }
    FAIL("expected an InputError");
    return InputError("");
}

// A library error as library callers read it (words) and as the CLI prints it (flags).
void check_message(const InputError& e, const std::string& words, const std::string& flags) {
    CHECK(std::string(e.what()) == words);
    CHECK(cli::flagged(e) == flags);
    CHECK(flags_in(e.what()).empty());
    CHECK(names_inputs(e.text()));
}

}  // namespace

TEST_SUITE_BEGIN("messages");

TEST_CASE("messages::the source scan finds a flag in a literal, and only there") {
    const std::string src = R"src(// --seq in a comment
/* and --data in another */
throw InputError(fmt::format("{} 3: lower it", named(Input::seq)));
throw InputError("--world-size must be positive");
throw InputError(fmt::format("use fewer "
                             "--memory-slots (0, exact)"));
const char c = '"'; std::uint64_t n = 1'000;
auto s = R"x(raw -o "FILE")x";
advice("write one with `remat calibrate --device cpu|cuda -o FILE`");
advice("what Hugging Face's --fp16 runs");
)src";
    const std::vector<Literal> literals = string_literals(src);
    std::vector<std::string> flags;
    for (const Literal& l : literals)
        for (const std::string& f : flags_in(l.text))
            flags.push_back(std::to_string(l.line) + " " + f);
    CHECK(flags == std::vector<std::string>{"4 --world-size", "5 --memory-slots", "8 -o"});
    CHECK(flags_in("sizes in bf16-mixed or fp32, -1 is no size, a - b").empty());
}

TEST_CASE("messages::no string literal in planner/ or runtime/ spells a flag") {
    std::size_t n_files = 0;
    for (const char* folder : {"planner", "runtime"})
        for (const auto& entry : std::filesystem::recursive_directory_iterator(
                 std::filesystem::path(REMAT_SOURCE_DIR) / folder)) {
            const std::string ext = entry.path().extension().string();
            if (ext != ".cpp" && ext != ".hpp" && ext != ".cu" && ext != ".cuh") continue;
            ++n_files;
            for (const Literal& l : string_literals(cli_process::slurp(entry.path())))
                for (const std::string& flag : flags_in(l.text)) {
                    const std::string where =
                        entry.path().lexically_relative(REMAT_SOURCE_DIR).string() + ":" +
                        std::to_string(l.line);
                    FAIL_CHECK(where << " spells " << flag << " in \"" << l.text
                                     << "\"; name the input with named(Input::...) instead");
                }
        }
    CHECK(n_files > 50);
}

TEST_CASE("messages::a placeholder reads as its input's words, or a caller's names") {
    const std::string text = named(Input::seq) + " 9 exceeds 8; lower " + named(Input::seq);
    CHECK(name_inputs(text) == "the sequence length 9 exceeds 8; lower the sequence length");
    CHECK(cli::flagged(text) == "--seq 9 exceeds 8; lower --seq");
    CHECK(names_inputs(text));
    // User text with the mark but no known key between two is text.
    const std::string mark = "\x1f";
    for (const std::string& plain :
         {"a" + mark + "b", mark + "nokey" + mark, mark + mark, mark + "seq", mark + "no mark"}) {
        CAPTURE(plain);
        CHECK(name_inputs(plain) == plain);
        CHECK_FALSE(names_inputs(plain));
    }
    CHECK(name_inputs(mark + named(Input::data)) == mark + "token file");
    const InputError e(named(Input::output) + " 'x': cannot open");
    CHECK(std::string(e.what()) == "output file 'x': cannot open");
    CHECK(e.message(cli::flag_of) == "-o 'x': cannot open");
    CHECK(std::string(InputError("no input").what()) == "no input");
    // Every input (world_size is the enum's last).
    for (std::size_t k = 0; k <= static_cast<std::size_t>(Input::world_size); ++k) {
        const auto input = static_cast<Input>(k);
        CAPTURE(input_words(input));
        CHECK(name_inputs(named(input)) == input_words(input));
        CHECK(std::string(cli::flag_of(input)).rfind('-', 0) == 0);
        CHECK(flags_in(std::string(input_words(input))).empty());
    }
}

TEST_CASE("messages::library errors name inputs in words, the CLI by their flags") {
    SUBCASE("the strategy list") {
        check_message(input_error([] { parse_strategy_list("none,,sqrt"); }),
                      "strategy list 'none,,sqrt': empty name in the list",
                      "--strategies 'none,,sqrt': empty name in the list");
        check_message(input_error([] { parse_strategy_list("none,all"); }),
                      "strategy list: 'all' cannot be combined with other names",
                      "--strategies: 'all' cannot be combined with other names");
    }
    cli::CommonArgs a;
    a.model = "gpt2";
    SUBCASE("the global batch and the world size") {
        a.world_size = 2;
        const Question q = cli::make_question(a);
        RecommendOptions o;
        o.global_batch = 7;
        check_message(input_error([&] { recommend(q, o); }),
                      "the global batch 7 must be a positive multiple of the world size 2 "
                      "(sequences per optimizer step over all ranks)",
                      "--global-batch 7 must be a positive multiple of --world-size 2 "
                      "(sequences per optimizer step over all ranks)");
    }
    SUBCASE("the attention core") {
        a.attention = "eager";
        const Question q = cli::make_question(a);
        check_message(
            input_error([&] { build_chain(q.model, q.options); }),
            "attention eager: applies to profiles remat and remat-cuda (profile sdpa fixes its own "
            "attention; hf-eager is eager PyTorch's)",
            "--attention eager: applies to profiles remat and remat-cuda (profile sdpa fixes its "
            "own attention; hf-eager is eager PyTorch's)");
    }
    SUBCASE("the calibration file and the precision; make_question, the CLI's, names flags") {
        Calibration c;
        c.backend = "cpu";
        c.fp32 = MeasuredCompute{1e12, 1e12, {}};
        c.memory_bandwidth = 1e10;
        c.launch_s = 1e-6;
        const InputError uncovered =
            input_error([&] { check_covers(c, Precision::bf16_mixed, "cal.json"); });
        check_message(uncovered,
                      "calibration file 'cal.json' has no bf16 rates, which precision bf16-mixed "
                      "needs; calibrate with precision bf16-mixed, or plan with precision fp32",
                      "--calibration 'cal.json' has no bf16 rates, which --precision bf16-mixed "
                      "needs; calibrate with --precision bf16-mixed, or plan with --precision "
                      "fp32");
        const std::string path =
            cli_process::write_temp("fp32_only.json", calibration_json(c).dump());
        a.calibration = path;
        const InputError e = input_error([&] { cli::make_question(a); });
        CHECK(std::string(e.what()) ==
              "--calibration '" + path +
                  "' has no bf16 rates, which --precision bf16-mixed needs; calibrate with "
                  "--precision bf16-mixed, or plan with --precision fp32");
        CHECK_FALSE(names_inputs(e.text()));
    }
    SUBCASE("the output file") {
        check_message(
            input_error([] { save_calibration(Calibration{}, "/nonexistent/dir/cal.json"); }),
            "output file '/nonexistent/dir/cal.json': cannot open for writing; check the directory",
            "-o '/nonexistent/dir/cal.json': cannot open for writing; check the directory");
    }
    const ModelConfig tiny = load_model("tiny-llama");
    SUBCASE("the sequence length past the runtime's context") {
        rt::Shape s;
        s.seq = tiny.context + 1;
        const std::string at = std::to_string(s.seq), context = std::to_string(tiny.context);
        check_message(input_error([&] { rt::check_buildable(tiny, s); }),
                      "the sequence length " + at + " exceeds model 'tiny-llama''s context of " +
                          context + "; lower the sequence length",
                      "--seq " + at + " exceeds model 'tiny-llama''s context of " + context +
                          "; lower --seq");
    }
    rt::RunConfig c;
    c.model = tiny;
    c.seq = 16;
    SUBCASE("the run's counts") {
        c.steps = 0;
        check_message(input_error([&] { rt::run_schedule(c); }),
                      "the world size, the micro-batch, the sequence length and the step count "
                      "must be positive",
                      "--world-size, --micro-batch, --seq and --steps must be positive");
    }
    SUBCASE("the run's precision") {
        c.precision = Precision::fp16_mixed;
        check_message(input_error([&] { rt::run_schedule(c); }),
                      "precision fp16-mixed: the CPU runtime executes fp32 and bf16-mixed",
                      "--precision fp16-mixed: the CPU runtime executes fp32 and bf16-mixed");
    }
    SUBCASE("the token file") {
        c.data_path = "/nonexistent/tokens.bin";
        check_message(input_error([&] { rt::run_schedule(c); }),
                      "token file '/nonexistent/tokens.bin': cannot open the file",
                      "--data '/nonexistent/tokens.bin': cannot open the file");
        const std::int32_t three[] = {1, 2, 3};
        c.data_path = cli_process::write_temp(
            "three_tokens.bin", std::string(reinterpret_cast<const char*>(three), sizeof three));
        check_message(input_error([&] { rt::run_schedule(c); }),
                      "token file '" + c.data_path +
                          "': 3 tokens, need more than the sequence length + 1 = 17 "
                          "(little-endian int32 ids)",
                      "--data '" + c.data_path +
                          "': 3 tokens, need more than --seq + 1 = 17 (little-endian int32 ids)");
    }
    SUBCASE("the device") {
        if (!rt::visible_gpus().empty()) return;  // a GPU: --device cuda is no error here
        c.device = rt::Device::cuda;
        const InputError e = input_error([&] { rt::run_schedule(c); });
        const std::string why = rt::gpu_unavailable_reason();
        check_message(e, "device cuda: " + why + "; use device cpu",
                      "--device cuda: " + why + "; use --device cpu");
    }
}

TEST_CASE("messages::the CLI prints the library's messages with their flags") {
    using cli_process::run_remat;
    auto line = [](const std::string& args) {
        const cli_process::Run r = run_remat(args);
        CHECK(r.code == 2);
        return r.err;
    };
    CHECK(line("max-batch --model gpt2 --strategies none,,full") ==
          "remat: --strategies 'none,,full': empty name in the list\n");
    CHECK(line("recommend --model gpt2 --world-size 2 --global-batch 7") ==
          "remat: --global-batch 7 must be a positive multiple of --world-size 2 (sequences per "
          "optimizer step over all ranks)\n");
    CHECK(line("plan --model gpt2 --attention eager") ==
          "remat: --attention eager: applies to profiles remat and remat-cuda (profile sdpa fixes "
          "its own attention; hf-eager is eager PyTorch's)\n");
    CHECK(line("run --model tiny-llama --seq 100000") ==
          "remat: --seq 100000 exceeds model 'tiny-llama''s context of 1024; lower --seq\n");
    CHECK(line("run --model tiny-gpt2 --seq 32 --data /no/such/file") ==
          "remat: --data '/no/such/file': cannot open the file\n");
    const std::int32_t out_of_vocabulary[] = {1, -1};
    const std::string tokens = cli_process::write_temp(
        "bad_tokens.bin",
        std::string(reinterpret_cast<const char*>(out_of_vocabulary), sizeof out_of_vocabulary));
    CHECK(line("run --model tiny-gpt2 --seq 32 --data " + tokens) ==
          "remat: --data '" + tokens +
              "': token -1 at index 1 is outside the vocabulary of 4096 (tiny-gpt2)\n");
    if (rt::visible_gpus().empty())
        CHECK(line("run --model tiny-gpt2 --device cuda") ==
              "remat: --device cuda: " + rt::gpu_unavailable_reason() + "; use --device cpu\n");
    // Out of memory is no InputError, and exit code 3; its line names the cap's flag too.
    const cli_process::Run oom = run_remat(
        "run --model tiny-gpt2 --seq 128 --micro-batch 5 --world-size 2 --memory-cap 40MiB");
    CHECK(oom.code == 3);
    CHECK(oom.err.find("cap 41943040 bytes (--memory-cap), in ") != std::string::npos);
    CHECK(oom.err.find('\x1f') == std::string::npos);
}

TEST_SUITE_END();
