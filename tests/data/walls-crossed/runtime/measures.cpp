// A runtime file that takes a size from the planner's memory model: the crossing
// cmake/CheckWalls.cmake must refuse (test walls_detects_a_crossing).
#include "planner/config/schedule.hpp"
#include "planner/simulate/memory.hpp"
