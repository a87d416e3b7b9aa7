// Memory figures of this process, for request logs and /metrics.
#pragma once
#include <cstdint>

namespace lcmd::serve {

double peak_rss_mb();             // the high-water mark (getrusage)
int64_t resident_memory_bytes();  // now (/proc/self/statm); 0 when unavailable

// Threads for the engine: the CPUs this process may run on, capped by a cgroup CPU quota
// (containers, AWS Lambda), at least 1.
int default_thread_count();

}  // namespace lcmd::serve
