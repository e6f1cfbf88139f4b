/* Page tables as runs (docs/FORMAT.md §5.1), in one pass: an incremental
 * snapshot of 4 GiB has a million pages in its table, and encoding them
 * with numpy took a dozen whole-table temporaries (each one fresh memory,
 * slow to fault in on a VM).  A table of pages is encoded by joining runs
 * of one page each (snp_runs_coalesce). */
#include "engine.h"

#define PAGE_SIZE 4096ULL

/* The runs of a parent's table (ra, rl, rr: sorted, disjoint) that lie
 * inside the keep intervals [ks, ke) (sorted, disjoint, page-aligned), minus the pages
 * at the sorted addresses w (the walk only moves forward): what an incremental snapshot takes unchanged
 * from its parent, computed per run instead of per page.  Writes at most
 * np + nk + nw runs; returns how many. */
long snp_runs_keep(const uint64_t *ra, const uint64_t *rl, const uint64_t *rr, long np,
                   const uint64_t *ks, const uint64_t *ke, long nk,
                   const uint64_t *w, long nw, uint64_t zero_ref,
                   uint64_t *oa, uint64_t *ol, uint64_t *orf)
{
    long i = 0, j = 0, x = 0, k = 0;
    while (i < np && j < nk) {
        uint64_t a0 = ra[i], a1 = ra[i] + rl[i] * PAGE_SIZE;
        uint64_t lo = a0 > ks[j] ? a0 : ks[j], hi = a1 < ke[j] ? a1 : ke[j];
        uint64_t cur = lo;
        while (cur < hi) {
            while (x < nw && w[x] < cur)
                x++;
            uint64_t stop = x < nw && w[x] < hi ? w[x] : hi;
            if (stop > cur) {
                oa[k] = cur;
                ol[k] = (stop - cur) / PAGE_SIZE;
                orf[k] = rr[i] == zero_ref ? zero_ref : rr[i] + (cur - a0) / PAGE_SIZE;
                k++;
            }
            cur = stop < hi ? stop + PAGE_SIZE : hi;
        }
        if (a1 <= ke[j])
            i++;
        else
            j++;
    }
    return k;
}

/* Join neighbouring runs (sorted, disjoint, lengths < 2^40) where the
 * second continues the first: next page, and next reference of the same
 * pack slot (a reference is (slot << 32) | page), or both zero_ref; so a
 * run never crosses into the next slot even where the two references are
 * consecutive integers.  In place; returns the new count. */
long snp_runs_coalesce(uint64_t *ra, uint64_t *rl, uint64_t *rr, long n, uint64_t zero_ref)
{
    long k = -1;
    for (long i = 0; i < n; i++) {
        if (k >= 0 && ra[i] > ra[k] && ra[i] - ra[k] == rl[k] * PAGE_SIZE) {
            int zero = rr[i] == zero_ref, pzero = rr[k] == zero_ref;
            if ((zero && pzero) ||
                (!zero && !pzero && rr[i] == rr[k] + rl[k] && (rr[i] >> 32) == (rr[k] >> 32))) {
                rl[k] += rl[i];
                continue;
            }
        }
        k++;
        ra[k] = ra[i];
        rl[k] = rl[i];
        rr[k] = rr[i];
    }
    return k + 1;
}
