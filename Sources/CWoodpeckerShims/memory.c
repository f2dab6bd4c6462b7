#include "CWoodpeckerShims.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

long wp_allocator_free_bytes(void) {
#if defined(__GLIBC__)
    struct mallinfo2 mi = mallinfo2();
    return (long)mi.fordblks;
#else
    return 0;
#endif
}

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

long wp_allocator_mmapped_bytes(void) {
#if defined(__GLIBC__)
    struct mallinfo2 mi = mallinfo2();
    return (long)mi.hblkhd;
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

long wp_allocator_used_bytes(void) {
#if defined(__GLIBC__)
    struct mallinfo2 mi = mallinfo2();
    return (long)mi.uordblks;
#else
    return 0;
#endif
}
