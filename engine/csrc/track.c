/* Dirty-page tracking of another process without soft-dirty:
 * userfaultfd write-protect in asynchronous mode (Linux 6.7+) plus the
 * PAGEMAP_SCAN ioctl on /proc/PID/pagemap.
 *
 * The userfaultfd is created inside the target (by injection) and copied into
 * snapshotd with pidfd_getfd(2); its ioctls then act on the TARGET's memory.
 * With UFFD_FEATURE_WP_ASYNC a write to a protected page is resolved by the
 * kernel itself (it clears the pte's uffd-wp bit, no message to us);
 * PAGEMAP_SCAN with PM_SCAN_WP_MATCHING reports the pages whose bit is clear
 * (PAGE_IS_WRITTEN) and sets it again in the same page-table walk, so no write
 * can fall between "report" and "re-protect".
 *
 * Constants from linux/userfaultfd.h and linux/fs.h of 6.7+ (the installed
 * headers may be older, so they are spelled out here). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <unistd.h>

#include "engine.h"

#ifndef PAGEMAP_SCAN
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct page_region {
    uint64_t start, end, categories;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

int snp_uffd_api(int fd, uint64_t features, uint64_t *got)
{
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    if (ioctl(fd, UFFDIO_API, &api) < 0)
        return -errno;
    if (got)
        *got = api.features;
    return 0;
}

int snp_uffd_register_wp(int fd, uint64_t start, uint64_t len)
{
    struct uffdio_register r = {.range = {start, len}, .mode = UFFDIO_REGISTER_MODE_WP};
    return ioctl(fd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

int snp_uffd_unregister(int fd, uint64_t start, uint64_t len)
{
    struct uffdio_range r = {start, len};
    return ioctl(fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

int snp_uffd_writeprotect(int fd, uint64_t start, uint64_t len, int protect)
{
    struct uffdio_writeprotect w = {.range = {start, len},
                                    .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
    return ioctl(fd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

/* One PAGEMAP_SCAN walk over [start, end), expanded into page addresses:
 * fills addrs with up to max_pages addresses of matching pages, sets *next to
 * where the walk stopped (== end when done).  flags are PM_SCAN_* (with
 * WP_MATCHING, exactly the pages returned are re-protected: max_pages bounds
 * the walk, so nothing is protected that was not reported).  Returns the
 * number of addresses, or -errno (EPERM with PM_SCAN_CHECK_WPASYNC: part of
 * the range is not registered for asynchronous write-protect). */
long snp_pm_scan_pages(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags,
                       uint64_t inverted, uint64_t mask, uint64_t anyof,
                       uint64_t *addrs, long max_pages, uint64_t *next)
{
    enum { NREG = 512 };
    struct page_region reg[NREG];
    long n = 0;
    uint64_t a = start;

    while (a < end && n < max_pages) {
        struct pm_scan_arg arg = {
            .size = sizeof(arg), .flags = flags, .start = a, .end = end,
            .vec = (uint64_t)(uintptr_t)reg, .vec_len = NREG,
            .max_pages = (uint64_t)(max_pages - n),
            .category_inverted = inverted, .category_mask = mask,
            .category_anyof_mask = anyof, .return_mask = mask | anyof,
        };
        int r = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
        if (r < 0)
            return -errno;
        for (int i = 0; i < r; i++)
            for (uint64_t p = reg[i].start; p < reg[i].end && n < max_pages; p += 4096)
                addrs[n++] = p;
        if (arg.walk_end <= a) /* no progress: cannot happen, but never spin */
            return -EIO;
        a = arg.walk_end;
    }
    *next = a;
    return n;
}

/* The same walk, returning regions: out[2i], out[2i+1] = start, end of
 * matching run i (up to max runs); *next as above.  Cheap for dense memory:
 * one region per run of matching pages. */
long snp_pm_scan_regions(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags,
                         uint64_t inverted, uint64_t mask, uint64_t anyof,
                         uint64_t *out, long max, uint64_t *next)
{
    enum { NREG = 512 };
    struct page_region reg[NREG];
    long n = 0;
    uint64_t a = start;

    while (a < end && n < max) {
        uint64_t room = (uint64_t)(max - n) < NREG ? (uint64_t)(max - n) : NREG;
        struct pm_scan_arg arg = {
            .size = sizeof(arg), .flags = flags, .start = a, .end = end,
            .vec = (uint64_t)(uintptr_t)reg, .vec_len = room,
            .category_inverted = inverted, .category_mask = mask,
            .category_anyof_mask = anyof, .return_mask = mask | anyof,
        };
        int r = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
        if (r < 0)
            return -errno;
        for (int i = 0; i < r; i++) {
            if (n > 0 && out[2 * n - 1] == reg[i].start) { /* runs split by the vec boundary */
                out[2 * n - 1] = reg[i].end;
                continue;
            }
            out[2 * n] = reg[i].start;
            out[2 * n + 1] = reg[i].end;
            n++;
        }
        if (arg.walk_end <= a)
            return -EIO;
        a = arg.walk_end;
    }
    *next = a;
    return n;
}

int snp_set_ptrace_options(int tid, long options)
{
    return ptrace(PTRACE_SETOPTIONS, tid, 0, options) < 0 ? -errno : 0;
}
