/* Run one system call inside a ptrace-stopped thread ("parasite-free"
 * injection, the way gdb calls functions):
 *   save registers and signal mask; block every signal (so no handler can
 *   run in the middle); point rip at "syscall; int3" in the target; put the
 *   syscall number in rax and the arguments in rdi, rsi, rdx, r10, r8, r9;
 *   set orig_rax = -1 so that a syscall interrupted by our stop is not
 *   restarted over the injection; continue; the int3 stops the thread again
 *   with SIGTRAP; read rax; put registers and mask back.
 * Used in our own processes (restore stubs, the copy-on-write child), which
 * die with us; in the job's processes, snp_inject_safe below. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"

/* What an injection puts back: the thread's registers and signal mask. */
static int save_thread(int tid, struct user_regs_struct *saved, uint64_t *mask, int *new_thread)
{
    if (new_thread)
        *new_thread = 0;
    if (ptrace(PTRACE_GETREGS, tid, 0, saved) < 0)
        return -errno;
    return snp_getsigmask(tid, mask);
}

/* The thread's registers for running syscall nr at code_addr: orig_rax -1,
 * so that a syscall interrupted by our stop is not restarted over it. */
static struct user_regs_struct call_regs(const struct user_regs_struct *saved, uint64_t code_addr, long nr,
                                         const uint64_t args[6])
{
    struct user_regs_struct r = *saved;
    r.rip = code_addr;
    r.rax = (uint64_t)nr;
    r.orig_rax = (uint64_t)-1;
    r.rdi = args[0];
    r.rsi = args[1];
    r.rdx = args[2];
    r.r10 = args[3];
    r.r8 = args[4];
    r.r9 = args[5];
    return r;
}

int snp_inject(int tid, uint64_t code_addr, long nr, const uint64_t args[6],
               int flags, int64_t *result, int *new_thread)
{
    struct user_regs_struct saved, r;
    uint64_t savedmask;
    int st, ret;

    if ((ret = save_thread(tid, &saved, &savedmask, new_thread)) < 0)
        return ret;
    /* A fault while its signal is blocked makes the kernel reset the handler
     * to SIG_DFL (force_sig_info): leave SIGSEGV open when we expect one. */
    uint64_t block = ~0ULL;
    if (flags & SNP_INJ_EXPECT_SEGV)
        block &= ~(1ULL << (SIGSEGV - 1));
    if ((ret = snp_setsigmask(tid, block)) < 0)
        return ret;
    r = call_regs(&saved, code_addr, nr, args);
    if (ptrace(PTRACE_SETREGS, tid, 0, &r) < 0) {
        ret = -errno;
        goto out;
    }
    if (ptrace(PTRACE_CONT, tid, 0, 0) < 0) {
        ret = -errno;
        goto out;
    }
    for (;;) {
        if ((ret = snp_wait_stop(tid, &st)) < 0)
            return ret; /* the thread is gone: nothing to put back */
        int event = st >> 16;
        if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK ||
            event == PTRACE_EVENT_VFORK) {
            unsigned long child = 0;
            ptrace(PTRACE_GETEVENTMSG, tid, 0, &child);
            if (new_thread)
                *new_thread = (int)child;
        }
        if (event) { /* an event stop in the middle of the syscall */
            if (ptrace(PTRACE_CONT, tid, 0, 0) < 0) {
                ret = -errno;
                goto out;
            }
            continue;
        }
        int sig = WSTOPSIG(st);
        if (sig == SIGTRAP || (sig == SIGSEGV && (flags & SNP_INJ_EXPECT_SEGV)))
            break;
        /* Only an unblockable stop or a fault can get here. */
        ret = -EFAULT;
        goto out;
    }
    if (ptrace(PTRACE_GETREGS, tid, 0, &r) < 0) {
        ret = -errno;
        goto out;
    }
    if (result)
        *result = (int64_t)r.rax;
    ret = 0;
out:
    if (ptrace(PTRACE_SETREGS, tid, 0, &saved) < 0 && ret == 0)
        ret = -errno;
    snp_setsigmask(tid, savedmask);
    return ret;
}

/* ---- injection that undoes itself if we die (dump side: the job's processes) ----
 *
 * snp_inject leaves the thread with rip in our code, all signals blocked and
 * an int3 ahead: if snapshotd dies there, the kernel detaches the thread and
 * it runs into the int3 (SIGTRAP kills it) or on with the wrong mask.  Here
 * the code written at code_addr for each call is a trampoline home:
 *     syscall                              the injected call
 *     rt_sigprocmask(SIG_SETMASK, &mask)   the thread's own mask again
 *     movabs $v, %reg  (x9)                rax rcx rdx rsi rdi r8 r9 r10 r11
 *     jmp *home                            the thread's own rip
 * (no instruction in it changes the flags, and rsp, rbx, rbp, r12-r15 and
 * the FPU are never touched), so at every instruction the thread's future
 * is "back exactly where it was" if we die, or our next stop.  A syscall the
 * freeze interrupted is restarted the way the kernel would (rip - 2, rax =
 * its number, or restart_syscall).  We never let the trampoline run:
 * PTRACE_SYSCALL stops the thread at the entry and the exit of the injected
 * call; at the exit we read the result, then PTRACE_INTERRUPT + PTRACE_CONT
 * bring it into a PTRACE_EVENT_STOP (the kind of stop it was frozen in),
 * where its mask and registers are put back: resuming from there restarts
 * an interrupted syscall exactly as after the freeze.  Orders: registers
 * before the mask when entering, the mask before the registers when
 * leaving, so no instant has "signals blocked" without the way home ahead.
 * SNP_SAFE_CLONE: the call is a clone(); a child (rax 0) that ever runs
 * untraced exits at once instead of running the job's code.
 * Needs PTRACE_O_TRACESYSGOOD (snp_seize sets it). */

#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516
#define NR_RESTART_SYSCALL 219

static uint8_t *put(uint8_t *p, const void *b, size_t n)
{
    memcpy(p, b, n);
    return p + n;
}

static uint8_t *movabs(uint8_t *p, int reg, uint64_t v)
{
    *p++ = reg < 8 ? 0x48 : 0x49; /* REX.W (+B) */
    *p++ = (uint8_t)(0xb8 + (reg & 7));
    return put(p, &v, 8);
}

/* The trampoline for a thread whose registers are r and mask m; returns its
 * length (at most SNP_SAFE_CODE_MAX). */
static int trampoline(uint8_t *code, const struct user_regs_struct *r, uint64_t m, int flags)
{
    int clone = flags & SNP_SAFE_CLONE;
    uint64_t rax = r->rax, rip = r->rip;
    if ((int64_t)r->orig_rax >= 0) { /* stopped inside a syscall */
        int64_t ax = (int64_t)r->rax;
        if (ax == -ERESTARTSYS || ax == -ERESTARTNOINTR || ax == -ERESTARTNOHAND) {
            rax = r->orig_rax;
            rip -= 2;
        } else if (ax == -ERESTART_RESTARTBLOCK) {
            rax = NR_RESTART_SYSCALL;
            rip -= 2;
        }
    }
    uint8_t *p = code, *jrcxz = NULL;
    p = put(p, "\x0f\x05", 2);                               /* syscall */
    if (clone) {
        p = put(p, "\x48\x89\xc1", 3);                       /* mov %rax, %rcx */
        jrcxz = p;
        p = put(p, "\xe3\x00", 2);                           /* jrcxz exit (patched) */
    }
    /* undo what the call made, on this path only (we died before using it) */
    if (flags & SNP_SAFE_CLOSE_RESULT)
        p = put(p, "\x48\x89\xc7\xb8\x03\x00\x00\x00\x0f\x05", 10); /* close(rax) */
    if (flags & SNP_SAFE_UNMAP_RESULT)  /* munmap(rax, rsi): rsi is still the mmap's length */
        p = put(p, "\x48\x89\xc7\xb8\x0b\x00\x00\x00\x0f\x05", 10);
    p = put(p, "\xb8\x0e\x00\x00\x00", 5);                   /* mov $14, %eax (rt_sigprocmask) */
    p = put(p, "\xbf\x02\x00\x00\x00", 5);                   /* mov $2, %edi (SIG_SETMASK) */
    uint8_t *lea = p;
    p = put(p, "\x48\x8d\x35\x00\x00\x00\x00", 7);           /* lea mask(%rip), %rsi (patched) */
    p = put(p, "\xba\x00\x00\x00\x00", 5);                   /* mov $0, %edx */
    p = put(p, "\x41\xba\x08\x00\x00\x00", 6);               /* mov $8, %r10d */
    p = put(p, "\x0f\x05", 2);                               /* syscall */
    p = movabs(p, 0, rax);
    p = movabs(p, 1, r->rcx);
    p = movabs(p, 2, r->rdx);
    p = movabs(p, 6, r->rsi);
    p = movabs(p, 7, r->rdi);
    p = movabs(p, 8, r->r8);
    p = movabs(p, 9, r->r9);
    p = movabs(p, 10, r->r10);
    p = movabs(p, 11, r->r11);
    p = put(p, "\xff\x25\x00\x00\x00\x00", 6);               /* jmp *0(%rip) */
    p = put(p, &rip, 8);
    int32_t rel = (int32_t)(p - (lea + 7));
    memcpy(lea + 3, &rel, 4);
    p = put(p, &m, 8);                                       /* mask */
    if (clone) {
        jrcxz[1] = (uint8_t)(p - (jrcxz + 2));
        p = put(p, "\xb8\x3c\x00\x00\x00\x0f\x05", 7);       /* exit: mov $60, %eax; syscall */
    }
    return (int)(p - code);
}

/* Fault injection for tests: SNAPSHOTD_INJECT_DIE="K:S" kills this process
 * (SIGKILL, as an OOM kill would) at step S of its K-th self-restoring call:
 * 1 trampoline written, 2 registers set, 3 signals blocked, 4 entry stop,
 * 5 exit stop, 6 back in an interrupt stop, 7 mask put back, 8 done. */
static int safe_calls;

static void die_point(int step)
{
    static int call = -1, at;
    if (call < 0) {
        const char *e = getenv("SNAPSHOTD_INJECT_DIE");
        call = 0;
        if (e && sscanf(e, "%d:%d", &call, &at) != 2)
            call = 0;
    }
    if (call && safe_calls == call && step == at)
        raise(SIGKILL);
}

int snp_inject_safe(int tid, uint64_t code_addr, long nr, const uint64_t args[6], int flags,
                    int64_t *result, int *new_thread)
{
    __atomic_add_fetch(&safe_calls, 1, __ATOMIC_RELAXED);
    struct user_regs_struct saved, r;
    uint64_t savedmask;
    uint8_t code[SNP_SAFE_CODE_MAX];
    int st, ret;

    if ((ret = save_thread(tid, &saved, &savedmask, new_thread)) < 0)
        return ret;
    int len = trampoline(code, &saved, savedmask, flags);
    long w = snp_mem_write(tid, code_addr, code, (uint64_t)len);
    if (w < 0)
        return (int)w;
    die_point(1);
    r = call_regs(&saved, code_addr, nr, args);
    if (ptrace(PTRACE_SETREGS, tid, 0, &r) < 0)
        return -errno;
    die_point(2);
    if ((ret = snp_setsigmask(tid, ~0ULL)) < 0)
        goto out;
    die_point(3);
    for (int exited = 0; !exited;) {
        if (ptrace(PTRACE_SYSCALL, tid, 0, 0) < 0) {
            ret = -errno;
            goto out;
        }
        if ((ret = snp_wait_stop(tid, &st)) < 0)
            return ret; /* the thread is gone: nothing to put back */
        int event = st >> 16;
        if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK) {
            unsigned long child = 0;
            ptrace(PTRACE_GETEVENTMSG, tid, 0, &child);
            if (new_thread)
                *new_thread = (int)child;
            continue;
        }
        if (event)
            continue;
        if (WSTOPSIG(st) != (SIGTRAP | 0x80)) {
            ret = -EFAULT; /* only an unblockable stop or a fault can get here */
            goto out;
        }
        struct __ptrace_syscall_info info;
        memset(&info, 0, sizeof(info));
        if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof(info), &info) < 0) {
            ret = -errno;
            goto out;
        }
        if (info.op == PTRACE_SYSCALL_INFO_EXIT) {
            if (result)
                *result = info.exit.rval;
            exited = 1;
            die_point(5);
        } else {
            die_point(4);
        }
    }
    /* into the kind of stop the freeze left it in (see above) */
    if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0 || ptrace(PTRACE_CONT, tid, 0, 0) < 0) {
        ret = -errno;
        goto out;
    }
    for (;;) {
        if ((ret = snp_wait_stop(tid, &st)) < 0)
            return ret;
        if ((st >> 16) == PTRACE_EVENT_STOP)
            break;
        /* a signal that cannot be blocked, or an event, first: pass it on */
        int sig = (st >> 16) ? 0 : WSTOPSIG(st);
        if (ptrace(PTRACE_CONT, tid, 0, sig) < 0) {
            ret = -errno;
            goto out;
        }
    }
    die_point(6);
    ret = 0;
out:
    snp_setsigmask(tid, savedmask);
    die_point(7);
    if (ptrace(PTRACE_SETREGS, tid, 0, &saved) < 0 && ret == 0)
        ret = -errno;
    die_point(8);
    return ret;
}
