/* Reading and writing the memory of another process.
 *
 * Which pages exist comes from /proc/PID/pagemap (one u64 per page:
 * bit 63 present, bit 62 swapped, bit 61 "file page or shared anon").
 * Bulk reads use process_vm_readv (8-9 GB/s here); areas it refuses (PROT_NONE)
 * are read with pread on /proc/PID/mem, which uses FOLL_FORCE.
 * Writes on restore go through process_vm_writev and fall back to
 * /proc/PID/mem, which may also write read-only private pages. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "engine.h"

#define PAGE 4096UL
#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61)
#define IOV_BATCH 1024 /* UIO_MAXIOV */
#define COLLECT_SLICE 256 /* pages read, tested and hashed while in cache */

static int open_proc(int pid, const char *what, int flags)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", pid, what);
    return open(path, flags | O_CLOEXEC);
}

static long read_memfile(int memfd, uint64_t addr, void *buf, uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pread(memfd, (char *)buf + done, len - done, (off_t)(addr + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        done += (uint64_t)r;
    }
    return (long)done;
}

static long write_memfile(int memfd, uint64_t addr, const void *buf, uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pwrite(memfd, (const char *)buf + done, len - done, (off_t)(addr + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        done += (uint64_t)r;
    }
    return (long)done;
}

long snp_mem_read(int pid, uint64_t addr, void *buf, uint64_t len)
{
    struct iovec l = {buf, len}, r = {(void *)addr, len};
    ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (n == (ssize_t)len)
        return n;
    int fd = open_proc(pid, "mem", O_RDONLY);
    if (fd < 0)
        return -errno;
    long ret = read_memfile(fd, addr, buf, len);
    close(fd);
    return ret;
}

long snp_mem_write(int pid, uint64_t addr, const void *buf, uint64_t len)
{
    int fd = open_proc(pid, "mem", O_RDWR);
    if (fd < 0)
        return -errno;
    long ret = write_memfile(fd, addr, buf, len);
    close(fd);
    return ret;
}

static int page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    uint64_t acc = 0;
    for (unsigned i = 0; i < PAGE / 8; i += 8) {
        acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] |
               w[i + 6] | w[i + 7];
        if (acc)
            return 0;
    }
    return 1;
}

/* Hash the pages d[0..m) into h (32 bytes each): BLAKE3 (SNP_HASH_BLAKE3)
 * or SHA-256 (SNP_HASH_SHA256, packs of format 1/2); a page of zeros gets 32
 * zero bytes instead ("the zero page": never stored, so never verified). */
static void hash_slice(const uint8_t *d, long m, uint8_t *h, int algo, const uint8_t *copied)
{
    uint32_t idx[COLLECT_SLICE];
    EVP_MD_CTX *ctx = NULL;
    for (long i = 0; i < m; i += COLLECT_SLICE) {
        long k = m - i < COLLECT_SLICE ? m - i : COLLECT_SLICE, nz = 0;
        const uint8_t *s = d + (uint64_t)i * PAGE;
        for (long j = 0; j < k; j++) {
            if (copied ? !copied[i + j] : page_is_zero(s + (uint64_t)j * PAGE))
                memset(h + (i + j) * 32, 0, 32);
            else
                idx[nz++] = (uint32_t)j;
        }
        if (algo == SNP_HASH_BLAKE3) {
            snp_b3_pages_idx(s, idx, nz, h + i * 32, 0);
            continue;
        }
        if (!ctx)
            ctx = EVP_MD_CTX_new();
        for (long j = 0; j < nz; j++) {
            unsigned int len = 32;
            EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
            EVP_DigestUpdate(ctx, s + (uint64_t)idx[j] * PAGE, PAGE);
            EVP_DigestFinal_ex(ctx, h + (i + idx[j]) * 32, &len);
        }
    }
    if (ctx)
        EVP_MD_CTX_free(ctx);
}

struct hash_job {
    const uint8_t *data;
    long n;
    uint8_t *hashes;
    int algo;
    const uint8_t *copied;
};

static void *hash_run(void *arg)
{
    struct hash_job *j = arg;
    hash_slice(j->data, j->n, j->hashes, j->algo, j->copied);
    return NULL;
}

/* Hash of each page (hash_slice); large batches are split over two threads
 * (the machines this runs on have few cores, and the caller waits). */
void snp_hash_pages(const uint8_t *data, long n, uint8_t *hashes, int algo, const uint8_t *copied)
{
    struct hash_job a = {data, n, hashes, algo, copied};
    pthread_t th;
    if (n >= 128 && sysconf(_SC_NPROCESSORS_ONLN) > 1) {
        long half = n / 2;
        struct hash_job b = {data + (uint64_t)half * PAGE, n - half, hashes + half * 32, algo,
                             copied ? copied + half : NULL};
        a.n = half;
        if (pthread_create(&th, NULL, hash_run, &b) == 0) {
            hash_run(&a);
            pthread_join(th, NULL);
            return;
        }
        a.n = n;
    }
    hash_run(&a);
}

long snp_count_nonzero_pages(const uint8_t *data, long n, uint8_t *nonzero)
{
    long c = 0;
    for (long i = 0; i < n; i++) {
        int nz = !page_is_zero(data + (uint64_t)i * PAGE);
        if (nonzero)
            nonzero[i] = (uint8_t)nz;
        c += nz;
    }
    return c;
}

/* Fill up to IOV_BATCH remote iovecs from page addresses starting at *i,
 * one iovec per run of consecutive pages; advance *i past them. */
static int coalesce(const uint64_t *addrs, long n, long *i, struct iovec *remote)
{
    int nr = 0;
    while (*i < n && nr < IOV_BATCH) {
        long j = *i + 1;
        while (j < n && addrs[j] == addrs[j - 1] + PAGE)
            j++;
        remote[nr].iov_base = (void *)addrs[*i];
        remote[nr].iov_len = (size_t)(j - *i) * PAGE;
        nr++;
        *i = j;
    }
    return nr;
}

/* Read the pages listed in addrs[0..n) into data (page i at data + i*PAGE). */
static long read_pages(int pid, int memfd, const uint64_t *addrs, uint8_t *data,
                       long n, int use_memfile)
{
    long i = 0;
    while (i < n) {
        struct iovec remote[IOV_BATCH];
        long first = i;
        int nr = coalesce(addrs, n, &i, remote);
        uint64_t total = (uint64_t)(i - first) * PAGE;
        uint8_t *dst = data + (uint64_t)first * PAGE;
        ssize_t got = -1;
        if (!use_memfile) {
            struct iovec local = {dst, total};
            got = process_vm_readv(pid, &local, 1, remote, (unsigned long)nr, 0);
        }
        if (got != (ssize_t)total) {
            /* partial or refused: read each run through /proc/PID/mem */
            uint8_t *p = dst;
            for (int k = 0; k < nr; k++) {
                long r = read_memfile(memfd, (uint64_t)remote[k].iov_base, p,
                                      remote[k].iov_len);
                if (r < 0)
                    return r;
                p += remote[k].iov_len;
            }
        }
    }
    return n;
}

struct collect_job {
    int pid, memfd, use_memfile;
    const uint64_t *addrs;
    uint8_t *data, *hashes;
    long n;
    long err;
};

/* Read, zero-test and hash pages in slices of COLLECT_SLICE pages, so that
 * each slice is still in the CPU cache when it is tested and hashed (three
 * passes over 64 MiB from DRAM cost more than the copy out of the target). */
static void *collect_run(void *arg)
{
    struct collect_job *j = arg;
    for (long i = 0; i < j->n; i += COLLECT_SLICE) {
        long m = j->n - i < COLLECT_SLICE ? j->n - i : COLLECT_SLICE;
        uint8_t *d = j->data + (uint64_t)i * PAGE;
        long r = read_pages(j->pid, j->memfd, j->addrs + i, d, m, j->use_memfile);
        if (r < 0) {
            j->err = r;
            break;
        }
        if (j->hashes)
            hash_slice(d, m, j->hashes + i * 32, SNP_HASH_BLAKE3, NULL);
    }
    return NULL;
}

/* Present (or swapped) pages of [start, end), at most max_pages of them:
 * their addresses, contents and (if hashes) SHA-256, all-zero for a zero
* page (BLAKE3).  Two threads split the pages: reading and hashing are both CPU work
 * on these machines. *next is where to continue. */
long snp_collect_pages(int pid, int memfd, int pagemap_fd, uint64_t start,
                       uint64_t end, int flags, uint64_t *addrs, uint8_t *data,
                       uint8_t *hashes, long max_pages, uint64_t *next)
{
    enum { CHUNK = 4096 };
    uint64_t pm[CHUNK];
    long n = 0;
    uint64_t a = start;

    while (a < end && n < max_pages) {
        uint64_t want = (end - a) / PAGE;
        if (want > CHUNK)
            want = CHUNK;
        if (want > (uint64_t)(max_pages - n))
            want = (uint64_t)(max_pages - n);
        ssize_t r = pread(pagemap_fd, pm, want * 8, (off_t)(a / PAGE * 8));
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        uint64_t got = (uint64_t)r / 8;
        for (uint64_t k = 0; k < got; k++) {
            uint64_t e = pm[k];
            if (!(e & (PM_PRESENT | PM_SWAPPED)))
                continue;
            if ((flags & SNP_PAGES_ANON_ONLY) && (e & PM_PRESENT) && (e & PM_FILE))
                continue;
            addrs[n++] = a + k * PAGE;
        }
        a += got * PAGE;
    }
    *next = a;
    if (n == 0 || (flags & SNP_PAGES_ADDRS_ONLY))
        return n;
    int use_memfile = (flags & SNP_PAGES_USE_MEMFILE) != 0;
    struct collect_job j1 = {pid, memfd, use_memfile, addrs, data, hashes, n, 0};
    pthread_t th;
    if (n >= 2 * COLLECT_SLICE && sysconf(_SC_NPROCESSORS_ONLN) > 1) {
        long half = n / 2 / COLLECT_SLICE * COLLECT_SLICE;
        struct collect_job j2 = {pid, memfd, use_memfile, addrs + half,
                                 data + (uint64_t)half * PAGE,
                                 hashes ? hashes + half * 32 : NULL, n - half, 0};
        j1.n = half;
        if (pthread_create(&th, NULL, collect_run, &j2) == 0) {
            collect_run(&j1);
            pthread_join(th, NULL);
            if (j2.err)
                return j2.err;
            return j1.err ? j1.err : n;
        }
        j1.n = n;
    }
    collect_run(&j1);
    return j1.err ? j1.err : n;
}

int snp_write_pages(int pid, int memfd, const uint64_t *addrs,
                    const uint8_t *data, long n)
{
    long i = 0;
    while (i < n) {
        struct iovec remote[IOV_BATCH];
        long first = i;
        int nr = coalesce(addrs, n, &i, remote);
        uint64_t total = (uint64_t)(i - first) * PAGE;
        const uint8_t *src = data + (uint64_t)first * PAGE;
        struct iovec local = {(void *)src, total};
        ssize_t put = process_vm_writev(pid, &local, 1, remote, (unsigned long)nr, 0);
        if (put != (ssize_t)total) {
            const uint8_t *p = src;
            for (int k = 0; k < nr; k++) {
                long r = write_memfile(memfd, (uint64_t)remote[k].iov_base, p,
                                       remote[k].iov_len);
                if (r < 0)
                    return (int)r;
                p += remote[k].iov_len;
            }
        }
    }
    return 0;
}

/* Write n pages into process pid: page i goes to addrs[i] (sorted) from
 * the local address srcs[i], so pages can come straight out of decompressed
 * blocks (and one stored page can fill many addresses) without being
 * gathered into one buffer first.  process_vm_writev takes separate local
 * and remote iovec lists; runs are merged on each side.  A refused or short
 * write falls back to /proc/PID/mem page by page (e.g. read-only pages). */
int snp_write_pages_from(int pid, int memfd, const uint64_t *addrs,
                         const uint64_t *srcs, long n)
{
    long i = 0;
    while (i < n) {
        struct iovec local[IOV_BATCH], remote[IOV_BATCH];
        int nl = 0, nr = 0;
        long first = i;
        while (i < n) {
            int join_r = nr && addrs[i] == (uint64_t)remote[nr - 1].iov_base + remote[nr - 1].iov_len;
            int join_l = nl && srcs[i] == (uint64_t)local[nl - 1].iov_base + local[nl - 1].iov_len;
            if ((!join_r && nr == IOV_BATCH) || (!join_l && nl == IOV_BATCH))
                break;
            if (join_r)
                remote[nr - 1].iov_len += PAGE;
            else
                remote[nr++] = (struct iovec){(void *)addrs[i], PAGE};
            if (join_l)
                local[nl - 1].iov_len += PAGE;
            else
                local[nl++] = (struct iovec){(void *)srcs[i], PAGE};
            i++;
        }
        ssize_t want = (ssize_t)(i - first) * (ssize_t)PAGE;
        if (process_vm_writev(pid, local, (unsigned long)nl, remote, (unsigned long)nr, 0) == want)
            continue;
        for (long k = first; k < i; k++) {
            long r = write_memfile(memfd, addrs[k], (const void *)srcs[k], PAGE);
            if (r < 0)
                return (int)r;
        }
    }
    return 0;
}

/* Read the pages at addrs[0..n) (sorted) into data, for callers that already
 * know which pages they want (a dirty-page tracker's list). */
long snp_read_page_list(int pid, int memfd, const uint64_t *addrs, uint8_t *data,
                        long n, int use_memfile)
{
    return read_pages(pid, memfd, addrs, data, n, use_memfile);
}
