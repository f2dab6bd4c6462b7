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

int wp_allocator_trim(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}
