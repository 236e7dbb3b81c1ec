// A planner/config header that includes a later step (planner/graph): also refused.
#include "planner/graph/graph.hpp"
