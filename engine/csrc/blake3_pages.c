/* BLAKE3 (default hash, 32-byte output) of 4 KiB pages, written from the
 * BLAKE3 specification (https://github.com/BLAKE3-team/BLAKE3-specs).
 *
 * Why BLAKE3 and why here: every non-zero page is named by a
 * collision-resistant hash (dedup across a store, verification on read).
 * SHA-256 with SHA-NI runs at ~1.7 GB/s on one vCPU of this machine, more
 * than the copy out of the target process.  BLAKE3's chunks are independent,
 * so a 16-lane AVX-512 compression hashes 16 chunks at once.
 *
 * A 4 KiB page is 4 chunks of 1 KiB (chunk counters 0..3), each 16 blocks
 * of 64 bytes; the tree over them is two parents and a root parent.  The
 * vector path hashes 16 pages per call: 4 rounds of 16 chunk lanes (4
 * pages x 4 chunks), then 32 parents (two calls) and 16 roots (one call).
 * The scalar path computes the same and is what machines without AVX-512
 * use; tests compare both with an independent BLAKE3 implementation. */
#include <stdint.h>
#include <string.h>

#include "engine.h"

#define PAGE 4096
enum { CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8 };

static const uint32_t IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                               0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

/* message word order of each of the 7 rounds: round 0 is the identity, each
 * next round applies the spec's permutation to the previous one */
static const uint8_t SCHED[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

/* ---- scalar ---- */

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

#define G(a, b, c, d, x, y)              \
    do {                                 \
        a = a + b + (x);                 \
        d = rotr(d ^ a, 16);             \
        c = c + d;                       \
        b = rotr(b ^ c, 12);             \
        a = a + b + (y);                 \
        d = rotr(d ^ a, 8);              \
        c = c + d;                       \
        b = rotr(b ^ c, 7);              \
    } while (0)

/* cv = first half of the compression output of block m */
static void compress1(uint32_t cv[8], const uint32_t m[16], uint64_t counter,
                      uint32_t flags)
{
    uint32_t v[16] = {cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
                      IV[0], IV[1], IV[2], IV[3], (uint32_t)counter,
                      (uint32_t)(counter >> 32), 64, flags};
    for (int r = 0; r < 7; r++) {
        const uint8_t *s = SCHED[r];
        G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        cv[i] = v[i] ^ v[i + 8];
}

static void parent1(const uint32_t l[8], const uint32_t r[8], uint32_t flags,
                    uint32_t out[8])
{
    uint32_t m[16];
    memcpy(m, l, 32);
    memcpy(m + 8, r, 32);
    memcpy(out, IV, 32);
    compress1(out, m, 0, PARENT | flags);
}

static void page_scalar(const uint8_t *p, uint8_t *out)
{
    uint32_t cv[4][8], m[16], a[8], b[8], root[8];
    for (int c = 0; c < 4; c++) {
        memcpy(cv[c], IV, 32);
        for (int k = 0; k < 16; k++) {
            memcpy(m, p + c * 1024 + k * 64, 64); /* little-endian words (x86) */
            uint32_t f = (k == 0 ? CHUNK_START : 0) | (k == 15 ? CHUNK_END : 0);
            compress1(cv[c], m, (uint64_t)c, f);
        }
    }
    parent1(cv[0], cv[1], 0, a);
    parent1(cv[2], cv[3], 0, b);
    parent1(a, b, ROOT, root);
    memcpy(out, root, 32);
}

/* ---- AVX-512: 16 lanes ---- */
#if defined(__x86_64__)
#include <immintrin.h>
#define T __attribute__((target("avx512f")))
typedef __m512i V;

#define GV(a, b, c, d, x, y)                          \
    do {                                              \
        a = _mm512_add_epi32(_mm512_add_epi32(a, b), x); \
        d = _mm512_ror_epi32(_mm512_xor_si512(d, a), 16); \
        c = _mm512_add_epi32(c, d);                   \
        b = _mm512_ror_epi32(_mm512_xor_si512(b, c), 12); \
        a = _mm512_add_epi32(_mm512_add_epi32(a, b), y); \
        d = _mm512_ror_epi32(_mm512_xor_si512(d, a), 8); \
        c = _mm512_add_epi32(c, d);                   \
        b = _mm512_ror_epi32(_mm512_xor_si512(b, c), 7); \
    } while (0)

/* cv[i] (lane j: word i of lane j's chaining value) = compression of the
 * blocks m (m[w], lane j: word w of lane j's block); counter high word 0 */
T static void compress16(V cv[8], const V m[16], V counter, uint32_t flags)
{
    V v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3], v4 = cv[4], v5 = cv[5],
      v6 = cv[6], v7 = cv[7];
    V v8 = _mm512_set1_epi32((int)IV[0]), v9 = _mm512_set1_epi32((int)IV[1]);
    V v10 = _mm512_set1_epi32((int)IV[2]), v11 = _mm512_set1_epi32((int)IV[3]);
    V v12 = counter, v13 = _mm512_setzero_si512();
    V v14 = _mm512_set1_epi32(64), v15 = _mm512_set1_epi32((int)flags);
#pragma GCC unroll 7 /* constant message indices: the words stay in registers */
    for (int r = 0; r < 7; r++) {
        const uint8_t *s = SCHED[r];
        GV(v0, v4, v8, v12, m[s[0]], m[s[1]]);
        GV(v1, v5, v9, v13, m[s[2]], m[s[3]]);
        GV(v2, v6, v10, v14, m[s[4]], m[s[5]]);
        GV(v3, v7, v11, v15, m[s[6]], m[s[7]]);
        GV(v0, v5, v10, v15, m[s[8]], m[s[9]]);
        GV(v1, v6, v11, v12, m[s[10]], m[s[11]]);
        GV(v2, v7, v8, v13, m[s[12]], m[s[13]]);
        GV(v3, v4, v9, v14, m[s[14]], m[s[15]]);
    }
    cv[0] = _mm512_xor_si512(v0, v8);
    cv[1] = _mm512_xor_si512(v1, v9);
    cv[2] = _mm512_xor_si512(v2, v10);
    cv[3] = _mm512_xor_si512(v3, v11);
    cv[4] = _mm512_xor_si512(v4, v12);
    cv[5] = _mm512_xor_si512(v5, v13);
    cv[6] = _mm512_xor_si512(v6, v14);
    cv[7] = _mm512_xor_si512(v7, v15);
}

/* parents of (2j, 2j+1) for j < 16, from 32 chaining values in columns
 * in[w][0..32): result out[w][j] */
T static void parents16(uint32_t in[8][32], uint32_t flags, V out[8])
{
    const V even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const V odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    V m[16];
    for (int w = 0; w < 8; w++) {
        V a = _mm512_loadu_si512(in[w]), b = _mm512_loadu_si512(in[w] + 16);
        m[w] = _mm512_permutex2var_epi32(a, even, b);
        m[w + 8] = _mm512_permutex2var_epi32(a, odd, b);
        out[w] = _mm512_set1_epi32((int)IV[w]);
    }
    compress16(out, m, _mm512_setzero_si512(), PARENT | flags);
}

/* m[w] (lane i: word w of row i) from 16 rows of 64 bytes at base + row[i]
 * + k*64: loads and a 16x16 transpose of 32-bit words (32-bit unpacks,
 * 64-bit unpacks, then two rounds of 128-bit lane shuffles), cheaper here
 * than 16 gathers */
T static void load_transposed(const uint8_t *base, const uint32_t row[16], int k, V m[16])
{
    V r[16], v[4][4];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_si512(base + row[i] + k * 64);
    for (int g = 0; g < 4; g++) { /* rows 4g..4g+3: v[g][p], 128-bit lane q = their word 4q+p */
        V ab_lo = _mm512_unpacklo_epi32(r[4 * g], r[4 * g + 1]);
        V ab_hi = _mm512_unpackhi_epi32(r[4 * g], r[4 * g + 1]);
        V cd_lo = _mm512_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
        V cd_hi = _mm512_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
        v[g][0] = _mm512_unpacklo_epi64(ab_lo, cd_lo);
        v[g][1] = _mm512_unpackhi_epi64(ab_lo, cd_lo);
        v[g][2] = _mm512_unpacklo_epi64(ab_hi, cd_hi);
        v[g][3] = _mm512_unpackhi_epi64(ab_hi, cd_hi);
    }
    for (int p = 0; p < 4; p++) { /* 4x4 transpose of 128-bit lanes */
        V x0 = _mm512_shuffle_i32x4(v[0][p], v[1][p], 0x44);
        V x1 = _mm512_shuffle_i32x4(v[0][p], v[1][p], 0xEE);
        V x2 = _mm512_shuffle_i32x4(v[2][p], v[3][p], 0x44);
        V x3 = _mm512_shuffle_i32x4(v[2][p], v[3][p], 0xEE);
        m[p] = _mm512_shuffle_i32x4(x0, x2, 0x88);
        m[4 + p] = _mm512_shuffle_i32x4(x0, x2, 0xDD);
        m[8 + p] = _mm512_shuffle_i32x4(x1, x3, 0x88);
        m[12 + p] = _mm512_shuffle_i32x4(x1, x3, 0xDD);
    }
}

/* hash 16 pages: base + off[j] (byte offsets < 2 GiB), digests to out[j] */
T static void pages16(const uint8_t *base, const uint32_t off[16], uint8_t *out[16])
{
    uint32_t chunk_cv[8][64]; /* [word][page*4 + chunk] */
    uint32_t par[8][32];      /* [word][page*2 + half] */
    V cv[8], m[16];
    /* lane l of a group: page 4g + l/4, chunk l%4 */
    const V counter = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    for (int g = 0; g < 4; g++) {
        uint32_t row[16]; /* byte offset of each lane's chunk */
        for (int l = 0; l < 16; l++)
            row[l] = off[4 * g + l / 4] + (uint32_t)(l % 4) * 1024;
        for (int w = 0; w < 8; w++)
            cv[w] = _mm512_set1_epi32((int)IV[w]);
        for (int k = 0; k < 16; k++) {
            load_transposed(base, row, k, m);
            uint32_t f = (k == 0 ? CHUNK_START : 0) | (k == 15 ? CHUNK_END : 0);
            compress16(cv, m, counter, f);
        }
        for (int w = 0; w < 8; w++)
            _mm512_storeu_si512(chunk_cv[w] + 16 * g, cv[w]);
    }
    for (int h = 0; h < 2; h++) { /* parents of chunks (0,1) and (2,3) */
        uint32_t in[8][32];
        for (int w = 0; w < 8; w++)
            memcpy(in[w], chunk_cv[w] + 32 * h, sizeof in[w]);
        parents16(in, 0, cv);
        for (int w = 0; w < 8; w++)
            _mm512_storeu_si512(par[w] + 16 * h, cv[w]);
    }
    parents16(par, ROOT, cv);
    uint32_t res[8][16];
    for (int w = 0; w < 8; w++)
        _mm512_storeu_si512(res[w], cv[w]);
    for (int j = 0; j < 16; j++)
        if (out[j])
            for (int w = 0; w < 8; w++)
                memcpy(out[j] + 4 * w, &res[w][j], 4);
}
#endif

static int have_avx512(void)
{
#if defined(__x86_64__)
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return cached;
#else
    return 0;
#endif
}

/* BLAKE3 of the pages base + idx[i]*PAGE (i < n) into out + idx[i]*32.
 * base..the last page must span less than 2 GiB. */
void snp_b3_pages_idx(const uint8_t *base, const uint32_t *idx, long n, uint8_t *out,
                      int force_scalar)
{
    long i = 0;
#if defined(__x86_64__)
    if (!force_scalar && have_avx512()) {
        for (; i + 16 <= n || (i < n && n - i >= 4); i += 16) {
            uint32_t off[16];
            uint8_t *dst[16];
            for (int j = 0; j < 16; j++) {
                int ok = i + j < n;
                uint32_t p = idx[ok ? i + j : i];
                off[j] = p * PAGE;
                dst[j] = ok ? out + (uint64_t)p * 32 : NULL;
            }
            pages16(base, off, dst);
        }
    }
#endif
    for (; i < n; i++)
        page_scalar(base + (uint64_t)idx[i] * PAGE, out + (uint64_t)idx[i] * 32);
}

int snp_b3_vector(void) { return have_avx512(); }
