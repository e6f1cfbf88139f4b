/* snapshotd engine: the only code that touches ptrace, /proc/PID/mem,
 * process_vm_readv/writev and clone3 of other processes.
 *
 * Conventions: every function returns >= 0 on success and -errno on failure.
 * Nothing here allocates memory that the caller must free (but the digest
 * table of snp_ht_new, freed by snp_ht_free), nothing calls back into Python.
 * build_engine.py hands this header to cffi: keep #defines plain integers.  The Python side (snapshotd/engine.py) orchestrates.
 */
#ifndef SNAPSHOTD_ENGINE_H
#define SNAPSHOTD_ENGINE_H
#include <stdint.h>
#include <sys/types.h>

#define SNP_REGS_SIZE 216 /* sizeof(struct user_regs_struct) on x86-64 */

/* ---- ptrace_ctl.c: stop, inspect and resume threads ---- */
int snp_seize(int tid);              /* PTRACE_SEIZE + PTRACE_INTERRUPT + wait */
int snp_wait_stop(int tid, int *status);
int snp_detach(int tid, int sig);
int snp_getregs(int tid, void *regs);           /* SNP_REGS_SIZE bytes */
int snp_setregs(int tid, const void *regs);
int snp_getxstate(int tid, void *buf, int len); /* returns the size read */
int snp_setxstate(int tid, const void *buf, int len);
int snp_getsigmask(int tid, uint64_t *mask);
int snp_setsigmask(int tid, uint64_t mask);
int snp_get_rseq(int tid, uint64_t out[3]);     /* ptr, len|flags<<32, sig */
int snp_get_robust_list(int tid, uint64_t out[2]);
int snp_peek_siginfo(int tid, int shared, long offset, void *buf, int max); /* 128 B each */
int snp_kcmp(int pid1, int pid2, int type, unsigned long idx1, unsigned long idx2);

/* ---- inject.c: run one syscall inside a stopped thread ---- */
/* code_addr must hold the bytes 0f 05 cc (syscall; int3) in the target.
 * flags: SNP_INJ_EXPECT_SEGV: the syscall removes the code page itself. */
#define SNP_INJ_EXPECT_SEGV 1
int snp_inject(int tid, uint64_t code_addr, long nr, const uint64_t args[6],
               int flags, int64_t *result, int *new_thread);
/* An injection that puts the thread back by itself if we die (inject.c):
 * a trampoline of at most SNP_SAFE_CODE_MAX bytes is written at code_addr
 * (executable in the target) for each call.  flags: SNP_SAFE_CLONE. */
#define SNP_SAFE_CODE_MAX 208
#define SNP_SAFE_CLONE 1        /* a child that runs untraced exits at once */
#define SNP_SAFE_CLOSE_RESULT 2 /* if we died, the trampoline closes the fd the call made */
#define SNP_SAFE_UNMAP_RESULT 4 /* ... or unmaps the mapping it made (an mmap) */
int snp_inject_safe(int tid, uint64_t code_addr, long nr, const uint64_t args[6], int flags,
                    int64_t *result, int *new_thread);

/* ---- childcopy.c: a copy loop run inside a held copy-on-write child ---- */
int snp_copy_loop_code(uint8_t *out, int max);  /* the loop's bytes; returns their size */
int snp_copy_loop_start(int tid, uint64_t code_addr, uint64_t table, long count, uint64_t flags);
int snp_copy_loop_wait(int tid);

/* ---- pagetable.c: a sorted page table as runs (FORMAT.md §5.1) ---- */
long snp_runs_keep(const uint64_t *ra, const uint64_t *rl, const uint64_t *rr, long np,
                   const uint64_t *ks, const uint64_t *ke, long nk,
                   const uint64_t *w, long nw, uint64_t zero_ref,
                   uint64_t *oa, uint64_t *ol, uint64_t *orf);
long snp_runs_coalesce(uint64_t *ra, uint64_t *rl, uint64_t *rr, long n, uint64_t zero_ref);

/* ---- writeback.c: start writeback of a file's dirty pages (no wait) ---- */
int snp_start_writeback(int fd);

/* ---- memory.c: read and write another process's memory ---- */
long snp_mem_read(int pid, uint64_t addr, void *buf, uint64_t len);
long snp_mem_write(int pid, uint64_t addr, const void *buf, uint64_t len);
#define SNP_PAGES_ANON_ONLY 1   /* skip pages still backed by the file */
#define SNP_PAGES_USE_MEMFILE 4 /* read with /proc/PID/mem (PROT_NONE areas) */
#define SNP_PAGES_ADDRS_ONLY 8  /* only find the present pages: no read, no hash */
long snp_collect_pages(int pid, int memfd, int pagemap_fd, uint64_t start,
                       uint64_t end, int flags, uint64_t *addrs, uint8_t *data,
                       uint8_t *hashes, long max_pages, uint64_t *next);
int snp_write_pages(int pid, int memfd, const uint64_t *addrs,
                    const uint8_t *data, long n);
int snp_write_pages_from(int pid, int memfd, const uint64_t *addrs,
                         const uint64_t *srcs, long n);
long snp_read_page_list(int pid, int memfd, const uint64_t *addrs, uint8_t *data,
                        long n, int use_memfile);
#define SNP_HASH_SHA256 0 /* packs of format 1 */
#define SNP_HASH_BLAKE3 1 /* packs of format 2 */
/* copied: NULL, or a flag byte per page, 0 for a page known to be all zeros
 * (the copy loop's flags, childcopy.c): those are neither read nor hashed */
void snp_hash_pages(const uint8_t *data, long n, uint8_t *hashes, int algo, const uint8_t *copied);

/* ---- hashtab.c: page digest -> page reference ---- */
#define SNP_HT_MISSING 0xFFFFFFFFFFFFFFFEULL
struct snp_ht;
struct snp_ht *snp_ht_new(void);
void snp_ht_free(struct snp_ht *t);
uint64_t snp_ht_len(const struct snp_ht *t);
void snp_ht_get(const struct snp_ht *t, const uint8_t *keys, long n, uint64_t *out);
int snp_ht_put(struct snp_ht *t, const uint8_t *keys, const uint64_t *vals, long n);
long snp_ht_assign(struct snp_ht *t, const uint8_t *keys, long n, uint64_t first,
                   uint64_t *out, long *fresh);
void snp_ht_items(const struct snp_ht *t, uint8_t *keys, uint64_t *vals);

/* ---- blake3_pages.c: BLAKE3 of 4 KiB pages (16 at a time with AVX-512) ---- */
void snp_b3_pages_idx(const uint8_t *base, const uint32_t *idx, long n, uint8_t *out,
                      int force_scalar);
int snp_b3_vector(void);
long snp_count_nonzero_pages(const uint8_t *data, long n, uint8_t *nonzero);

/* ---- track.c: dirty-page tracking (userfaultfd WP_ASYNC + PAGEMAP_SCAN) ---- */
int snp_uffd_api(int fd, uint64_t features, uint64_t *got);
int snp_uffd_register_wp(int fd, uint64_t start, uint64_t len);
int snp_uffd_unregister(int fd, uint64_t start, uint64_t len);
int snp_uffd_writeprotect(int fd, uint64_t start, uint64_t len, int protect);
long snp_pm_scan_pages(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags,
                       uint64_t inverted, uint64_t mask, uint64_t anyof,
                       uint64_t *addrs, long max_pages, uint64_t *next);
long snp_pm_scan_regions(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags,
                         uint64_t inverted, uint64_t mask, uint64_t anyof,
                         uint64_t *out, long max, uint64_t *next);
int snp_set_ptrace_options(int tid, long options);

/* ---- spawn.c: a fresh stub process with a chosen PID, traced ---- */
uint64_t snp_stub_base(void);
#define SNP_STUB_PIDFD 3 /* in every stub: a pidfd of the restorer */
/* new_pidns: in a fresh PID namespace (*out_init: its init, outside PID) */
int snp_spawn_stub(int want_pid, int new_pidns, int *out_pid, int *out_init);
int snp_adopt_child(int pid);

/* ---- pipes.c ---- */
/* The bytes queued in the pipe whose read end is fd, left in place (tee). */
long snp_pipe_peek(int fd, void *buf, long max);
/* Our own copy of fd `fd` of process pid (pidfd_getfd: same description). */
int snp_grab_fd(int pid, int fd);
#endif
