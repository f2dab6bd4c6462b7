#include "CWoodpeckerShims.h"
#include <string.h>

static uint32_t table8[8][256];
static int table_ready = 0;

static void build_tables(void) {
    const uint32_t poly = 0x82F63B78u;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
        table8[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = table8[0][i];
        for (int t = 1; t < 8; t++) {
            c = table8[0][c & 0xff] ^ (c >> 8);
            table8[t][i] = c;
        }
    }
    __atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t wp_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE)) build_tables();
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint32_t lo = (uint32_t)w ^ c, hi = (uint32_t)(w >> 32);
        c = table8[7][lo & 0xff] ^ table8[6][(lo >> 8) & 0xff] ^ table8[5][(lo >> 16) & 0xff] ^ table8[4][lo >> 24] ^
            table8[3][hi & 0xff] ^ table8[2][(hi >> 8) & 0xff] ^ table8[1][(hi >> 16) & 0xff] ^ table8[0][hi >> 24];
        p += 8;
        length -= 8;
    }
    while (length--) c = table8[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t c = ~crc;
    while (length && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); length--; }
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        length -= 8;
    }
    while (length--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
static int hw_state = -1;
int wp_crc32c_hardware_available(void) {
    if (hw_state < 0) {
        __builtin_cpu_init();
        hw_state = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    }
    return hw_state;
}
uint32_t wp_crc32c(uint32_t crc, const void *data, size_t length) {
    if (wp_crc32c_hardware_available()) return crc32c_sse42(crc, data, length);
    return wp_crc32c_portable(crc, data, length);
}
#else
int wp_crc32c_hardware_available(void) { return 0; }
uint32_t wp_crc32c(uint32_t crc, const void *data, size_t length) { return wp_crc32c_portable(crc, data, length); }
#endif
