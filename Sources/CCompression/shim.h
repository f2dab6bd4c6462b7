#ifndef WOODPECKER_CCOMPRESSION_SHIM_H
#define WOODPECKER_CCOMPRESSION_SHIM_H
#include <zlib.h>
#include <lz4.h>
#include <lz4frame.h>
#include <zstd.h>

/* deflateInit2/inflateInit2 are macros: callable wrappers. */
static inline int wp_deflateInit2(z_streamp s, int level, int method, int windowBits, int memLevel, int strategy) {
    return deflateInit2(s, level, method, windowBits, memLevel, strategy);
}
static inline int wp_inflateInit2(z_streamp s, int windowBits) { return inflateInit2(s, windowBits); }
#endif
