/* A copy loop run inside a held copy-on-write child (snapshotd/childcopy.py).
 *
 * Reading the child through /proc/PID/mem copies every page twice (into a
 * kernel bounce page, then to us) and looks each page up alone (mmap lock,
 * VMA, get_user_pages, LRU touch): about half of a full dump's CPU.
 * process_vm_readv pins pages, which unshares (copies) every page the child
 * shares with the process.  The child itself can read its pages for free:
 * it runs this loop, which copies runs of pages with `rep movsb` into a
 * shared memory file that we map too.  One copy, in user space, in the
 * child's own time (it runs on another CPU while we hash and store).
 *
 * The loop, at code_addr in the child (x86-64):
 *   top: test rbp,rbp; je done
 *        mov rsi,[rbx]; mov rdi,[rbx+8]; mov rcx,[rbx+16]; rep movsb
 *        add rbx,24; dec rbp; jmp top
 *   done: int3
 * rbx: a table of (source, destination, length) triples, rbp: their count.
 * The child is ours alone (it never runs the program's code): its registers
 * are not saved; every signal stays blocked (childcopy.py sets the mask). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"

static const unsigned char COPY_LOOP[] = {
    0x48, 0x85, 0xed,       /* test rbp, rbp */
    0x74, 0x16,             /* je done */
    0x48, 0x8b, 0x33,       /* mov rsi, [rbx] */
    0x48, 0x8b, 0x7b, 0x08, /* mov rdi, [rbx+8] */
    0x48, 0x8b, 0x4b, 0x10, /* mov rcx, [rbx+16] */
    0xf3, 0xa4,             /* rep movsb */
    0x48, 0x83, 0xc3, 0x18, /* add rbx, 24 */
    0x48, 0xff, 0xcd,       /* dec rbp */
    0xeb, 0xe5,             /* jmp top */
    0xcc,                   /* done: int3 */
};

int snp_copy_loop_code(uint8_t *out, int max)
{
    if (max < (int)sizeof(COPY_LOOP))
        return -ENOSPC;
    memcpy(out, COPY_LOOP, sizeof(COPY_LOOP));
    return (int)sizeof(COPY_LOOP);
}

int snp_copy_loop_start(int tid, uint64_t code_addr, uint64_t table, long count)
{
    struct user_regs_struct r;
    if (ptrace(PTRACE_GETREGS, tid, 0, &r) < 0)
        return -errno;
    r.rip = code_addr;
    r.rbx = table;
    r.rbp = (uint64_t)count;
    r.orig_rax = (uint64_t)-1; /* never restart an interrupted syscall over the loop */
    r.eflags &= ~(1ULL << 10); /* DF clear: rep movsb copies forward */
    r.cs = 0x33;               /* 64-bit user code and stack segments (a thread */
    r.ss = 0x2b;               /* caught in 32-bit code would decode it otherwise) */
    if (ptrace(PTRACE_SETREGS, tid, 0, &r) < 0)
        return -errno;
    if (ptrace(PTRACE_CONT, tid, 0, 0) < 0)
        return -errno;
    return 0;
}

/* 0 once the loop has copied every triple; -EFAULT if it stopped on a
 * fault (the signal is dropped: the next start resumes cleanly). */
int snp_copy_loop_wait(int tid)
{
    struct user_regs_struct r;
    int st, ret;
    if ((ret = snp_wait_stop(tid, &st)) < 0)
        return ret;
    if (!WIFSTOPPED(st) || (st >> 16) != 0 || WSTOPSIG(st) != SIGTRAP)
        return -EFAULT;
    if (ptrace(PTRACE_GETREGS, tid, 0, &r) < 0)
        return -errno;
    return r.rbp == 0 ? 0 : -EFAULT;
}
