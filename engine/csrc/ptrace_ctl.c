/* Stopping, inspecting and resuming threads of another process with ptrace.
 * We use PTRACE_SEIZE (not ATTACH): it sends no SIGSTOP, so the target sees
 * nothing, and PTRACE_INTERRUPT gives a PTRACE_EVENT_STOP we can leave again
 * without side effects. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif

int snp_wait_stop(int tid, int *status)
{
    for (;;) {
        int st, r = waitpid(tid, &st, __WALL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (status)
            *status = st;
        if (WIFEXITED(st) || WIFSIGNALED(st))
            return -ESRCH;
        return 0;
    }
}

int snp_seize(int tid)
{
    int st;
    /* TRACESYSGOOD: syscall stops say so (snp_inject_safe reads them) */
    if (ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACECLONE | PTRACE_O_TRACESYSGOOD) < 0)
        return -errno;
    if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0)
        return -errno;
    for (;;) {
        int r = snp_wait_stop(tid, &st);
        if (r < 0)
            return r;
        if (!WIFSTOPPED(st))
            return -ECHILD;
        /* PTRACE_EVENT_STOP is the interrupt; anything else is a signal that
         * arrived first: it must be re-injected, not lost. */
        if ((st >> 16) == PTRACE_EVENT_STOP)
            return 0;
        int sig = WSTOPSIG(st);
        if ((st >> 16) != 0)
            sig = 0;
        if (ptrace(PTRACE_CONT, tid, 0, sig) < 0)
            return -errno;
        if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0)
            return -errno;
    }
}

int snp_detach(int tid, int sig)
{
    return ptrace(PTRACE_DETACH, tid, 0, sig) < 0 ? -errno : 0;
}

int snp_getregs(int tid, void *regs)
{
    return ptrace(PTRACE_GETREGS, tid, 0, regs) < 0 ? -errno : 0;
}

int snp_setregs(int tid, const void *regs)
{
    return ptrace(PTRACE_SETREGS, tid, 0, regs) < 0 ? -errno : 0;
}

int snp_getxstate(int tid, void *buf, int len)
{
    struct iovec iov = {buf, (size_t)len};
    if (ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &iov) < 0)
        return -errno;
    return (int)iov.iov_len;
}

int snp_setxstate(int tid, const void *buf, int len)
{
    struct iovec iov = {(void *)buf, (size_t)len};
    return ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &iov) < 0 ? -errno : 0;
}

int snp_getsigmask(int tid, uint64_t *mask)
{
    return ptrace(PTRACE_GETSIGMASK, tid, sizeof(*mask), mask) < 0 ? -errno : 0;
}

int snp_setsigmask(int tid, uint64_t mask)
{
    return ptrace(PTRACE_SETSIGMASK, tid, sizeof(mask), &mask) < 0 ? -errno : 0;
}

/* struct ptrace_rseq_configuration: u64 rseq_abi_pointer, u32 rseq_abi_size,
 * u32 signature, u32 flags, u32 pad. */
int snp_get_rseq(int tid, uint64_t out[3])
{
    struct {
        uint64_t ptr;
        uint32_t size, sig, flags, pad;
    } c;
    memset(&c, 0, sizeof(c));
    if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, sizeof(c), &c) < 0)
        return -errno;
    out[0] = c.ptr;
    out[1] = c.size | ((uint64_t)c.flags << 32);
    out[2] = c.sig;
    return 0;
}

/* get_robust_list(2) works on any thread we may ptrace, from outside. */
int snp_get_robust_list(int tid, uint64_t out[2])
{
    void *head = 0;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, tid, &head, &len) < 0)
        return -errno;
    out[0] = (uint64_t)head;
    out[1] = len;
    return 0;
}

/* PTRACE_PEEKSIGINFO: the queued (pending) signals of a thread, or of the
 * whole process with shared != 0, without dequeuing them. */
int snp_peek_siginfo(int tid, int shared, long offset, void *buf, int max)
{
    struct {
        uint64_t off;
        uint32_t flags;
        int32_t nr;
    } a = {(uint64_t)offset, shared ? 1u : 0u, max};
    long r = ptrace(PTRACE_PEEKSIGINFO, tid, &a, buf);
    return r < 0 ? -errno : (int)r;
}

/* kcmp(2): 0 when the two resources are the same kernel object (e.g. two fds
 * sharing one open file description), 1 or 2 for an ordering, -errno. */
int snp_kcmp(int pid1, int pid2, int type, unsigned long idx1, unsigned long idx2)
{
    long r = syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2);
    return r < 0 ? -errno : (int)r;
}
