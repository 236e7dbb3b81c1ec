#include "planner/graph/stage_request.hpp"

namespace remat {

std::string_view stage_kind_name(StageKind k) {
    switch (k) {
        case StageKind::embedding:
            return "embedding";
        case StageKind::block:
            return "block";
        case StageKind::norm:
            return "norm";
        case StageKind::head:
            return "head";
    }
    return "?";
}

}  // namespace remat
