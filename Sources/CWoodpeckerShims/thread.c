#include "CWoodpeckerShims.h"
#include <time.h>

static _Thread_local char thread_marker;

__attribute__((noinline)) uintptr_t wp_thread_token(void) { return (uintptr_t)&thread_marker; }

uint64_t wp_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
