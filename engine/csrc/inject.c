/* Run one system call inside a ptrace-stopped thread ("parasite-free"
 * injection, the way gdb calls functions):
 *   save registers and signal mask; block every signal (so no handler can
 *   run in the middle); point rip at "syscall; int3" in the target; put the
 *   syscall number in rax and the arguments in rdi, rsi, rdx, r10, r8, r9;
 *   set orig_rax = -1 so that a syscall interrupted by our stop is not
 *   restarted over the injection; continue; the int3 stops the thread again
 *   with SIGTRAP; read rax; put registers and mask back.
 * Used by dump (query state only the process itself can read), by restore
 * (build the process syscall by syscall) and, later, by the dirty trackers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"

static const unsigned char SYSCALL_INT3[3] = {0x0f, 0x05, 0xcc};

int snp_inject(int tid, uint64_t code_addr, long nr, const uint64_t args[6],
               int flags, int64_t *result, int *new_thread)
{
    struct user_regs_struct saved, r;
    uint64_t savedmask;
    int st, ret;

    if (new_thread)
        *new_thread = 0;
    if (ptrace(PTRACE_GETREGS, tid, 0, &saved) < 0)
        return -errno;
    if ((ret = snp_getsigmask(tid, &savedmask)) < 0)
        return ret;
    /* A fault while its signal is blocked makes the kernel reset the handler
     * to SIG_DFL (force_sig_info): leave SIGSEGV open when we expect one. */
    uint64_t block = ~0ULL;
    if (flags & SNP_INJ_EXPECT_SEGV)
        block &= ~(1ULL << (SIGSEGV - 1));
    if ((ret = snp_setsigmask(tid, block)) < 0)
        return ret;
    r = saved;
    r.rip = code_addr;
    r.rax = (uint64_t)nr;
    r.orig_rax = (uint64_t)-1;
    r.rdi = args[0];
    r.rsi = args[1];
    r.rdx = args[2];
    r.r10 = args[3];
    r.r8 = args[4];
    r.r9 = args[5];
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

int snp_inject_at_rip(int tid, long nr, const uint64_t args[6], int64_t *result)
{
    struct user_regs_struct regs;
    unsigned char orig[sizeof(SYSCALL_INT3)];
    char path[64];
    int fd, ret;

    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0)
        return -errno;
    snprintf(path, sizeof(path), "/proc/%d/mem", tid);
    if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
        return -errno;
    /* /proc/PID/mem writes with FOLL_FORCE: text pages are copied on write. */
    if (pread(fd, orig, sizeof(orig), (off_t)regs.rip) != sizeof(orig) ||
        pwrite(fd, SYSCALL_INT3, sizeof(orig), (off_t)regs.rip) != sizeof(orig)) {
        ret = -EIO;
        close(fd);
        return ret;
    }
    ret = snp_inject(tid, regs.rip, nr, args, 0, result, NULL);
    if (pwrite(fd, orig, sizeof(orig), (off_t)regs.rip) != sizeof(orig) && ret == 0)
        ret = -EIO;
    close(fd);
    return ret;
}
