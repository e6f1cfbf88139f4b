/* A copy loop run inside a held copy-on-write child (snapshotd/childcopy.py).
 *
 * Reading the child through /proc/PID/mem copies every page twice (into a
 * kernel bounce page, then to us) and looks each page up alone (mmap lock,
 * VMA, get_user_pages, LRU touch): about half of a full dump's CPU.
 * process_vm_readv pins pages, which unshares (copies) every page the child
 * shares with the process.  The child itself can read its pages for free:
 * it runs this loop, which copies its pages into a shared memory file that
 * we map too.  One copy, in user space, in the child's own time (it runs on
 * another CPU while we hash and store).  A page of zeros is not copied: its
 * flag byte says so, and we neither read nor hash it.
 *
 * The loop, at code_addr in the child (x86-64, SSE2), over rbp triples at
 * rbx of (source address, destination address, pages), one flag byte per
 * page at r12 (1: copied, 0: all zeros, not copied), in table order:
 *   top:  if !rbp goto done; rsi, rdi, r8 = the next triple
 *   page: if the page's first 16 bytes or its OR of all 16-byte words is
 *         non-zero: flag 1, rep movsb 4096 bytes; else flag 0, skip it
 *         next page while --r8; then next triple, --rbp
 *   done: int3
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
    0x48, 0x85, 0xed,                               /* top:  test rbp,rbp */
    0x0f, 0x84, 0x84, 0x00, 0x00, 0x00,             /*       je done */
    0x48, 0x8b, 0x33,                               /*       mov rsi,[rbx] */
    0x48, 0x8b, 0x7b, 0x08,                         /*       mov rdi,[rbx+0x8] */
    0x4c, 0x8b, 0x43, 0x10,                         /*       mov r8,[rbx+0x10] */
    0x48, 0x8b, 0x06,                               /* page: mov rax,[rsi] */
    0x48, 0x0b, 0x46, 0x08,                         /*       or rax,[rsi+0x8] */
    0x75, 0x50,                                     /*       jne copy */
    0x66, 0x0f, 0xef, 0xc0,                         /*       pxor xmm0,xmm0 */
    0x31, 0xc9,                                     /*       xor ecx,ecx */
    0x66, 0x0f, 0xeb, 0x04, 0x0e,                   /* scan: por xmm0,[rsi+rcx*1] */
    0x66, 0x0f, 0xeb, 0x44, 0x0e, 0x10,             /*       por xmm0,[rsi+rcx*1+0x10] */
    0x66, 0x0f, 0xeb, 0x44, 0x0e, 0x20,             /*       por xmm0,[rsi+rcx*1+0x20] */
    0x66, 0x0f, 0xeb, 0x44, 0x0e, 0x30,             /*       por xmm0,[rsi+rcx*1+0x30] */
    0x83, 0xc1, 0x40,                               /*       add ecx,0x40 */
    0x81, 0xf9, 0x00, 0x10, 0x00, 0x00,             /*       cmp ecx,0x1000 */
    0x72, 0xde,                                     /*       jb scan */
    0x66, 0x0f, 0xef, 0xc9,                         /*       pxor xmm1,xmm1 */
    0x66, 0x0f, 0x74, 0xc1,                         /*       pcmpeqb xmm0,xmm1 */
    0x66, 0x0f, 0xd7, 0xc0,                         /*       pmovmskb eax,xmm0 */
    0x3d, 0xff, 0xff, 0x00, 0x00,                   /*       cmp eax,0xffff */
    0x75, 0x15,                                     /*       jne copy */
    0x41, 0xc6, 0x04, 0x24, 0x00,                   /*       mov byte [r12],0x0 */
    0x48, 0x81, 0xc6, 0x00, 0x10, 0x00, 0x00,       /*       add rsi,0x1000 */
    0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00,       /*       add rdi,0x1000 */
    0xeb, 0x0c,                                     /*       jmp next */
    0x41, 0xc6, 0x04, 0x24, 0x01,                   /* copy: mov byte [r12],0x1 */
    0xb9, 0x00, 0x10, 0x00, 0x00,                   /*       mov ecx,0x1000 */
    0xf3, 0xa4,                                     /*       rep movsb */
    0x49, 0xff, 0xc4,                               /* next: inc r12 */
    0x49, 0xff, 0xc8,                               /*       dec r8 */
    0x75, 0x93,                                     /*       jne page */
    0x48, 0x83, 0xc3, 0x18,                         /*       add rbx,0x18 */
    0x48, 0xff, 0xcd,                               /*       dec rbp */
    0xe9, 0x73, 0xff, 0xff, 0xff,                   /*       jmp top */
    0xcc,                                           /* done: int3 */
};

int snp_copy_loop_code(uint8_t *out, int max)
{
    if (max < (int)sizeof(COPY_LOOP))
        return -ENOSPC;
    memcpy(out, COPY_LOOP, sizeof(COPY_LOOP));
    return (int)sizeof(COPY_LOOP);
}

int snp_copy_loop_start(int tid, uint64_t code_addr, uint64_t table, long count, uint64_t flags)
{
    struct user_regs_struct r;
    if (ptrace(PTRACE_GETREGS, tid, 0, &r) < 0)
        return -errno;
    r.rip = code_addr;
    r.rbx = table;
    r.rbp = (uint64_t)count;
    r.r12 = flags;
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
