#include "ops/work_counter.h"

#include <atomic>

namespace lcmd::ops {

namespace {
std::atomic<uint64_t> g_macs{0};
}

void count_macs(uint64_t n) { g_macs.fetch_add(n, std::memory_order_relaxed); }
uint64_t macs_done() { return g_macs.load(std::memory_order_relaxed); }

}  // namespace lcmd::ops
