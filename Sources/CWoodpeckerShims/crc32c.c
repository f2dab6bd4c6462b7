#include "CWoodpeckerShims.h"
#include <pthread.h>
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

/* CRC joining without the bytes. In the CRC register's bit order (bit 31 holds x^0, bit 0 holds x^31), a raw CRC is
   a polynomial modulo P; appending n zero bytes multiplies it by x^(8n) mod P. For CRCs whose initial value and final
   xor are both all ones, crc(A || B) = crc(A) * x^(8 len(B)) mod P, xor crc(B): the all-ones terms cancel. */
#define CRC32C_POLY 0x82F63B78u

/* a * b mod P. */
static uint32_t poly_multiply(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t term = 1u << 31; term; term >>= 1) {
        if (a & term) product ^= b;
        b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1; /* b * x */
    }
    return product;
}

/* x^(2^k) mod P for k = 0...66 (enough for any 64-bit byte count times 8). */
static uint32_t x_to_2k[67];
static pthread_once_t powers_once = PTHREAD_ONCE_INIT;

static void build_powers(void) {
    x_to_2k[0] = 1u << 30; /* x^1 */
    for (int k = 1; k < 67; k++) x_to_2k[k] = poly_multiply(x_to_2k[k - 1], x_to_2k[k - 1]);
}

uint32_t wp_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t length2) {
    pthread_once(&powers_once, build_powers);
    uint32_t factor = 1u << 31; /* x^0 */
    for (int k = 3; length2; length2 >>= 1, k++) /* x^(8 length2): bit j of length2 contributes x^(2^(j+3)) */
        if (length2 & 1) factor = poly_multiply(x_to_2k[k], factor);
    return poly_multiply(factor, crc1) ^ crc2;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

/* The hardware loop runs three independent CRCs over three adjacent stretches of the input (the crc32 instruction
   has a latency of three cycles and a throughput of one per cycle, so one chain uses a third of it) and then joins
   them: the CRC of A followed by B is the CRC of A shifted over len(B) zero bytes, xored with the CRC of B started
   from zero. Shifting over a fixed length is a linear map on the 32 bits of the CRC, kept as four byte-indexed
   tables per length (built once from the polynomial by repeated squaring of the one-zero-bit operator). */
#define CRC_LONG 8192
#define CRC_SHORT 256
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

/* Applies the 32x32 bit matrix `mat` (column n is the image of bit n) to `vec`. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1) sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends `bytes` zero bytes (a power of two) to a raw (not final-xored) CRC. */
static void zeros_operator(uint32_t *op, size_t bytes) {
    uint32_t a[32], b[32];
    a[0] = 0x82F63B78u; /* one zero bit: shift right, xor the reflected polynomial when the low bit falls off */
    for (int n = 1; n < 32; n++) a[n] = 1u << (n - 1);
    size_t bits = 1;
    uint32_t *cur = a, *next = b;
    while (bits < bytes * 8) {
        gf2_square(next, cur);
        uint32_t *t = cur; cur = next; next = t;
        bits <<= 1;
    }
    memcpy(op, cur, sizeof a);
}

static void build_shift(uint32_t table[4][256], size_t bytes) {
    uint32_t op[32];
    zeros_operator(op, bytes);
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 0; k < 4; k++) table[k][n] = gf2_times(op, n << (8 * k));
}

static void build_shift_tables(void) {
    build_shift(shift_long, CRC_LONG);
    build_shift(shift_short, CRC_SHORT);
}

static inline uint32_t shift(uint32_t table[4][256], uint32_t crc) {
    return table[0][crc & 0xff] ^ table[1][(crc >> 8) & 0xff] ^ table[2][(crc >> 16) & 0xff] ^ table[3][crc >> 24];
}

__attribute__((target("sse4.2")))
static inline const uint8_t *three_way(uint64_t *crc, const uint8_t *p, size_t stretch, uint32_t table[4][256]) {
    uint64_t c0 = *crc, c1 = 0, c2 = 0;
    const uint8_t *end = p + stretch;
    do {
        uint64_t w0, w1, w2;
        memcpy(&w0, p, 8);
        memcpy(&w1, p + stretch, 8);
        memcpy(&w2, p + 2 * stretch, 8);
        c0 = _mm_crc32_u64(c0, w0);
        c1 = _mm_crc32_u64(c1, w1);
        c2 = _mm_crc32_u64(c2, w2);
        p += 8;
    } while (p < end);
    c0 = shift(table, (uint32_t)c0) ^ (uint32_t)c1;
    c0 = shift(table, (uint32_t)c0) ^ (uint32_t)c2;
    *crc = c0;
    return p + 2 * stretch;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t c = ~crc;
    while (length && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); length--; }
    if (length >= 3 * CRC_SHORT) {
        pthread_once(&shift_once, build_shift_tables);
        while (length >= 3 * CRC_LONG) { p = three_way(&c, p, CRC_LONG, shift_long); length -= 3 * CRC_LONG; }
        while (length >= 3 * CRC_SHORT) { p = three_way(&c, p, CRC_SHORT, shift_short); length -= 3 * CRC_SHORT; }
    }
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
