#ifndef WOODPECKER_SHIMS_H
#define WOODPECKER_SHIMS_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli). Uses SSE4.2 when the CPU has it (checked once at run time), else slicing-by-8.
/// `crc` is the running value (0 to start); the result is final-xored, so calls chain: wp_crc32c(wp_crc32c(0,a),b).
uint32_t wp_crc32c(uint32_t crc, const void *data, size_t length);
/// Same, forcing the portable table path (for tests and the benchmark).
uint32_t wp_crc32c_portable(uint32_t crc, const void *data, size_t length);
/// 1 when the hardware path is in use.
int wp_crc32c_hardware_available(void);
/// The CRC-32C of A followed by B from crc1 = CRC of A, crc2 = CRC of B and B's length, without reading the bytes:
/// about 0.1-1 µs whatever the length (a pass of the hardware CRC costs about that for 1-10 KiB).
uint32_t wp_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t length2);

/// An opaque per-thread token (address of a _Thread_local). Never `pthread_self()`: glibc marks it
/// __attribute__((const)) and LLVM caches it across `await`.
uintptr_t wp_thread_token(void) __attribute__((noinline));

/// Monotonic clock in nanoseconds.
uint64_t wp_monotonic_ns(void);
/// glibc's mallinfo2, summed over all arenas: bytes held free (fordblks), handed out (uordblks) and in chunks of their own
/// mmap (hblkhd). Returns 0 and zeros where there is no glibc. Walks the free lists: not on a loop thread.
int wp_allocator_stats(long *free_bytes, long *used_bytes, long *mapped_bytes);
/// malloc_trim(0): returns free arena pages to the kernel; 1 if any were released. Not on a loop thread.
int wp_allocator_trim(void);
/// glibc mallopt: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD and M_TOP_PAD (fixed, so glibc's dynamic threshold is off).
/// Returns 1 if all were accepted, 0 otherwise or where there is no glibc.
int wp_allocator_configure(size_t mmap_threshold, size_t trim_threshold, size_t top_pad);

#endif
