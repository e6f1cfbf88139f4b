/* A table from 32-byte page digests to 64-bit page references: the store's
 * page index (snapshotd/storage/pageindex.py) and a writer's pages not yet
 * committed.  A dump looks up every non-zero page it reads (a million per
 * 4 GiB), which a Python dict does at ~1 us a page with the GIL held; here a
 * batch is one call.
 *
 * Open addressing with linear probing.  Digests are uniformly distributed
 * (cryptographic), so their first 8 bytes are the probe start.  The table
 * never shrinks; it doubles at 60 % load.  Not thread-safe: the Python side
 * holds a lock around calls. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define KEY 32
#define EMPTY SNP_HT_MISSING /* a slot's value when free; never a stored value */

struct snp_ht {
    uint64_t cap, used; /* cap is a power of two */
    uint8_t *keys;
    uint64_t *vals;
};

static int ht_alloc(struct snp_ht *t, uint64_t cap)
{
    t->keys = malloc(cap * KEY);
    t->vals = malloc(cap * sizeof(uint64_t));
    if (!t->keys || !t->vals) {
        free(t->keys);
        free(t->vals);
        return -1;
    }
    for (uint64_t i = 0; i < cap; i++)
        t->vals[i] = EMPTY;
    t->cap = cap;
    t->used = 0;
    return 0;
}

struct snp_ht *snp_ht_new(void)
{
    struct snp_ht *t = calloc(1, sizeof(*t));
    if (t && ht_alloc(t, 1024) < 0) {
        free(t);
        return NULL;
    }
    return t;
}

void snp_ht_free(struct snp_ht *t)
{
    if (t) {
        free(t->keys);
        free(t->vals);
        free(t);
    }
}

uint64_t snp_ht_len(const struct snp_ht *t) { return t->used; }

/* the slot holding key, or the free slot where it would go */
static uint64_t find(const struct snp_ht *t, const uint8_t *key)
{
    uint64_t h;
    memcpy(&h, key, 8);
    uint64_t mask = t->cap - 1, i = h & mask;
    while (t->vals[i] != EMPTY && memcmp(t->keys + i * KEY, key, KEY) != 0)
        i = (i + 1) & mask;
    return i;
}

static int grow(struct snp_ht *t)
{
    struct snp_ht n;
    if (ht_alloc(&n, t->cap * 2) < 0)
        return -1;
    for (uint64_t i = 0; i < t->cap; i++)
        if (t->vals[i] != EMPTY) {
            uint64_t j = find(&n, t->keys + i * KEY);
            memcpy(n.keys + j * KEY, t->keys + i * KEY, KEY);
            n.vals[j] = t->vals[i];
            n.used++;
        }
    free(t->keys);
    free(t->vals);
    *t = n;
    return 0;
}

static int room(struct snp_ht *t, uint64_t more)
{
    while ((t->used + more) * 5 > t->cap * 3)
        if (grow(t) < 0)
            return -1;
    return 0;
}

/* out[i] = the value of keys[i], or SNP_HT_MISSING */
void snp_ht_get(const struct snp_ht *t, const uint8_t *keys, long n, uint64_t *out)
{
    for (long i = 0; i < n; i++)
        out[i] = t->vals[find(t, keys + (uint64_t)i * KEY)];
}

/* keys[i] -> vals[i], replacing what was there; -1 without memory */
int snp_ht_put(struct snp_ht *t, const uint8_t *keys, const uint64_t *vals, long n)
{
    if (room(t, (uint64_t)n) < 0)
        return -1;
    for (long i = 0; i < n; i++) {
        uint64_t j = find(t, keys + (uint64_t)i * KEY);
        if (t->vals[j] == EMPTY) {
            memcpy(t->keys + j * KEY, keys + (uint64_t)i * KEY, KEY);
            t->used++;
        }
        t->vals[j] = vals[i];
    }
    return 0;
}

/* For each key: its value if present; else insert it with the value
 * first + (number inserted so far), recording i in fresh[].  So a content
 * seen twice in one batch is stored once.  Returns the number inserted,
 * or -1 without memory (nothing inserted then). */
long snp_ht_assign(struct snp_ht *t, const uint8_t *keys, long n, uint64_t first,
                   uint64_t *out, long *fresh)
{
    if (room(t, (uint64_t)n) < 0)
        return -1;
    long k = 0;
    for (long i = 0; i < n; i++) {
        const uint8_t *key = keys + (uint64_t)i * KEY;
        uint64_t j = find(t, key);
        if (t->vals[j] == EMPTY) {
            memcpy(t->keys + j * KEY, key, KEY);
            t->vals[j] = first + (uint64_t)k;
            t->used++;
            fresh[k++] = i;
        }
        out[i] = t->vals[j];
    }
    return k;
}

/* Every (key, value) into keys/vals (room for snp_ht_len entries) */
void snp_ht_items(const struct snp_ht *t, uint8_t *keys, uint64_t *vals)
{
    uint64_t k = 0;
    for (uint64_t i = 0; i < t->cap; i++)
        if (t->vals[i] != EMPTY) {
            memcpy(keys + k * KEY, t->keys + i * KEY, KEY);
            vals[k++] = t->vals[i];
        }
}
