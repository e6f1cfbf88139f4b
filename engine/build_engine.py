"""cffi build script for the C engine (snapshotd._engine).

setup.py names it in cffi_modules, so `pip install .` compiles engine/csrc/*.c.
The declarations below mirror engine/csrc/engine.h (cffi cannot read #defines).
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define SNP_REGS_SIZE 216
    #define SNP_INJ_EXPECT_SEGV 1
    #define SNP_PAGES_ANON_ONLY 1
    #define SNP_PAGES_USE_MEMFILE 4
    #define SNP_STUB_PIDFD 3
    int snp_seize(int tid);
    int snp_wait_stop(int tid, int *status);
    int snp_detach(int tid, int sig);
    int snp_getregs(int tid, void *regs);
    int snp_setregs(int tid, const void *regs);
    int snp_getxstate(int tid, void *buf, int len);
    int snp_setxstate(int tid, const void *buf, int len);
    int snp_getsigmask(int tid, uint64_t *mask);
    int snp_setsigmask(int tid, uint64_t mask);
    int snp_get_rseq(int tid, uint64_t out[3]);
    int snp_get_robust_list(int tid, uint64_t out[2]);
    int snp_peek_siginfo(int tid, int shared, long offset, void *buf, int max);
    int snp_kcmp(int pid1, int pid2, int type, unsigned long idx1, unsigned long idx2);
    int snp_inject(int tid, uint64_t code_addr, long nr, const uint64_t args[6],
                   int flags, int64_t *result, int *new_thread);
    int snp_inject_at_rip(int tid, long nr, const uint64_t args[6], int64_t *result);
    long snp_mem_read(int pid, uint64_t addr, void *buf, uint64_t len);
    long snp_mem_write(int pid, uint64_t addr, const void *buf, uint64_t len);
    int snp_start_writeback(int fd);
    long snp_collect_pages(int pid, int memfd, int pagemap_fd, uint64_t start,
                           uint64_t end, int flags, uint64_t *addrs, uint8_t *data,
                           uint8_t *hashes, long max_pages, uint64_t *next);
    int snp_write_pages(int pid, int memfd, const uint64_t *addrs,
                        const uint8_t *data, long n);
    int snp_write_pages_from(int pid, int memfd, const uint64_t *addrs,
                             const uint64_t *srcs, long n);
    long snp_read_page_list(int pid, int memfd, const uint64_t *addrs, uint8_t *data,
                            long n, int use_memfile);
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
    #define SNP_HASH_SHA256 0
    #define SNP_HASH_BLAKE3 1
    void snp_hash_pages(const uint8_t *data, long n, uint8_t *hashes, int algo);
    void snp_b3_pages_idx(const uint8_t *base, const uint32_t *idx, long n, uint8_t *out,
                          int force_scalar);
    int snp_b3_vector(void);
    #define SNP_HT_MISSING 0xFFFFFFFFFFFFFFFE
    struct snp_ht;
    struct snp_ht *snp_ht_new(void);
    void snp_ht_free(struct snp_ht *t);
    uint64_t snp_ht_len(const struct snp_ht *t);
    void snp_ht_get(const struct snp_ht *t, const uint8_t *keys, long n, uint64_t *out);
    int snp_ht_put(struct snp_ht *t, const uint8_t *keys, const uint64_t *vals, long n);
    long snp_ht_assign(struct snp_ht *t, const uint8_t *keys, long n, uint64_t first,
                       uint64_t *out, long *fresh);
    void snp_ht_items(const struct snp_ht *t, uint8_t *keys, uint64_t *vals);
    long snp_count_nonzero_pages(const uint8_t *data, long n, uint8_t *nonzero);
    uint64_t snp_stub_base(void);
    int snp_spawn_stub(int want_pid, int new_pidns, int *out_pid, int *out_init);
    int snp_adopt_child(int pid);
    long snp_pipe_peek(int fd, void *buf, long max);
    int snp_grab_fd(int pid, int fd);
    """
)
SOURCES = ["ptrace_ctl.c", "inject.c", "memory.c", "blake3_pages.c", "hashtab.c", "spawn.c", "pipes.c", "track.c", "writeback.c"]
ffibuilder.set_source(
    "snapshotd._engine",
    '#include "engine.h"',
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(CSRC)],
    libraries=["crypto"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
