// A JSON document as a Python pickle (protocol 2), for the files Python tools read: PyTorch's
// memory snapshot viewer takes pickles only (torch/utils/viz/MemoryViz.js has its own
// unpickler, protocols 2 to 4 and a fixed set of opcodes).
//
//   std::string bytes = to_pickle({{"segments", nlohmann::json::array()}});
//   // python3 -c 'import pickle,sys; print(pickle.load(open(sys.argv[1], "rb")))' file
//
// Objects become dicts, arrays lists, strings str, integers int (any uint64 or int64), floats
// float, booleans bool, null None. Only the opcodes MemoryViz.js reads are written: PROTO,
// EMPTY_DICT, EMPTY_LIST, MARK, SETITEMS, APPENDS, BINUNICODE, BININT, LONG1, BINFLOAT,
// NEWTRUE, NEWFALSE, NONE and STOP; containers go in batches of 1000, as CPython's pickler
// writes them (one huge APPENDS overflows the viewer's JavaScript stack).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace remat::cli {

std::string to_pickle(const nlohmann::json& document);

}  // namespace remat::cli
