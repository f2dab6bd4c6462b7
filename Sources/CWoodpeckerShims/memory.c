#include "CWoodpeckerShims.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

int wp_allocator_configure(size_t mmap_threshold, size_t trim_threshold, size_t top_pad) {
#if defined(__GLIBC__)
    int ok = mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold);
    ok &= mallopt(M_TRIM_THRESHOLD, (int)trim_threshold);
    ok &= mallopt(M_TOP_PAD, (int)top_pad);
    return ok;
#else
    return 0;
#endif
}

int wp_allocator_trim(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}

int wp_allocator_stats(long *free_bytes, long *used_bytes, long *mapped_bytes) {
#if defined(__GLIBC__)
    struct mallinfo2 mi = mallinfo2();
    *free_bytes = (long)mi.fordblks;
    *used_bytes = (long)mi.uordblks;
    *mapped_bytes = (long)mi.hblkhd;
    return 1;
#else
    *free_bytes = *used_bytes = *mapped_bytes = 0;
    return 0;
#endif
}
