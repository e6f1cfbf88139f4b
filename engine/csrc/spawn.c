/* A fresh, nearly empty process with a chosen PID, stopped under our ptrace,
 * for restore to rebuild syscall by syscall.
 *
 * Why a ptrace-driven restorer (and not CRIU's self-contained restorer blob):
 * every step is an ordinary syscall we can check and report, the restorer
 * needs no position-independent code of its own, and the cost (~10-50 us per
 * injected syscall) is small next to copying memory.
 *
 *   R (us) --fork--> I --clone3(set_tid=[PID])--> S ; I exits, so S is
 *   reparented (init or a subreaper) and is never our child.
 *   With a new PID namespace (the PIDs are taken here):
 *   R --fork--> I --clone3(CLONE_NEWPID)--> N (PID 1 inside, an init that
 *   only reaps) --clone3(set_tid=[PID])--> S ; S has PID in the namespace
 *   and another one outside, which is the one we trace it by.
 *   S waits on a pipe until R has PTRACE_SEIZEd it, then execs a tiny static
 *   ELF built below (from a memfd), so its address space holds just the stub,
 *   a stack and the vDSO.  R lets the exec stop pass and catches the stub's
 *   first int3: a signal-delivery stop, from which injection is safe (a stop
 *   inside a syscall would overwrite rax on the way out).
 *
 * Children of a restored process are created by its own stub: restore injects
 * clone3(set_tid=[PID], exit_signal=SIGCHLD) into the parent stub (a fork of
 * a stub is a stub, already in the right place in the tree), and
 * PTRACE_O_TRACEFORK, inherited by every forked stub, attaches the child to
 * us; snp_adopt_child takes it to the same int3 stop. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"

/* An address no ordinary process uses; the stub is unmapped before any of
 * the image's mappings are created, so it only has to avoid our scratch page. */
#define STUB_BASE 0x3ff000000000ULL

uint64_t snp_stub_base(void) { return STUB_BASE; }

/* int3 (first stop) ; syscall ; int3 (injection point at STUB_CODE + 1) ;
 * jmp . (never reached) */
static const unsigned char STUB_CODE[] = {0xcc, 0x0f, 0x05, 0xcc, 0xeb, 0xfe};

static size_t build_stub(unsigned char *buf, size_t cap)
{
    Elf64_Ehdr eh;
    Elf64_Phdr ph[2];
    size_t code_off = sizeof(eh) + sizeof(ph);
    size_t total = code_off + sizeof(STUB_CODE);
    if (total > cap)
        return 0;
    memset(&eh, 0, sizeof(eh));
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_entry = STUB_BASE + code_off;
    eh.e_phoff = sizeof(eh);
    eh.e_ehsize = sizeof(eh);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = 2;
    memset(ph, 0, sizeof(ph));
    ph[0].p_type = PT_LOAD;
    ph[0].p_flags = PF_R | PF_X;
    ph[0].p_vaddr = ph[0].p_paddr = STUB_BASE;
    ph[0].p_filesz = ph[0].p_memsz = total;
    ph[0].p_align = 0x1000;
    /* PT_GNU_STACK without PF_X: no READ_IMPLIES_EXEC personality */
    ph[1].p_type = PT_GNU_STACK;
    ph[1].p_flags = PF_R | PF_W;
    memcpy(buf, &eh, sizeof(eh));
    memcpy(buf + sizeof(eh), ph, sizeof(ph));
    memcpy(buf + code_off, STUB_CODE, sizeof(STUB_CODE));
    return total;
}

/* In S, between clone3 and exec: only raw syscalls.  The stub keeps one
 * fd: a pidfd of R at SNP_STUB_PIDFD, through which restore hands it files
 * (pidfd_getfd); S could not open one itself when it lives in a new PID
 * namespace, where R is invisible.  Stubs forked from it inherit it. */
static void stub_child(int go_rd, int memfd, int rpidfd)
{
    char b;
    if (read(go_rd, &b, 1) != 1)
        _exit(1); /* R gave up before seizing us */
    setsid();
    /* out of the way first (F_DUPFD: lowest free >= 100), then in place */
    int m = fcntl(memfd, F_DUPFD_CLOEXEC, 100), p = fcntl(rpidfd, F_DUPFD, 100);
    if (m < 0 || p < 0 || dup3(p, SNP_STUB_PIDFD, 0) < 0 || dup3(m, SNP_STUB_PIDFD + 1, O_CLOEXEC) < 0)
        _exit(126);
    syscall(SYS_close_range, 0, SNP_STUB_PIDFD - 1, 0);
    syscall(SYS_close_range, SNP_STUB_PIDFD + 2, ~0U, 0);
    char *argv[] = {"snapshotd-stub", NULL};
    char *envp[] = {NULL};
    syscall(SYS_execveat, SNP_STUB_PIDFD + 1, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
}

/* The init of a new PID namespace (PID 1 there), as a fork of the
 * intermediate: it forks the stub with PID want_pid inside the namespace,
 * reports the result on report_fd, then reaps children until none is left
 * (its exit would kill every process of the namespace). */
static void ns_init(int want_pid, int go_rd, int memfd, int rpidfd, int report_fd)
{
    pid_t want = want_pid;
    struct clone_args ca;
    memset(&ca, 0, sizeof(ca));
    ca.exit_signal = SIGCHLD;
    ca.set_tid = (uint64_t)(uintptr_t)&want;
    ca.set_tid_size = 1; /* the PID in the innermost namespace: this one */
    long c = syscall(SYS_clone3, &ca, sizeof(ca));
    if (c == 0)
        stub_child(go_rd, memfd, rpidfd);
    int res = c < 0 ? -errno : (int)c;
    if (write(report_fd, &res, sizeof(res)) != sizeof(res) || res < 0)
        _exit(1);
    syscall(SYS_close_range, 0, ~0U, 0);
    prctl(PR_SET_NAME, "snapshotd-init");
    for (;;)
        if (wait4(-1, NULL, __WALL, NULL) < 0 && errno == ECHILD)
            _exit(0);
}

/* In the intermediate: a new PID namespace whose init forks the stub; the
 * stub's PID as we see it (the first child of the init), or -errno. */
static int spawn_in_new_pidns(int want_pid, int go_rd, int memfd, int rpidfd, int *init_pid)
{
    int nst[2];
    if (pipe2(nst, O_CLOEXEC) < 0)
        return -errno;
    struct clone_args ca;
    memset(&ca, 0, sizeof(ca));
    ca.flags = CLONE_NEWPID;
    ca.exit_signal = SIGCHLD;
    long n = syscall(SYS_clone3, &ca, sizeof(ca));
    if (n == 0) {
        close(nst[0]);
        ns_init(want_pid, go_rd, memfd, rpidfd, nst[1]);
    }
    close(nst[1]);
    if (n < 0) {
        close(nst[0]);
        return -errno;
    }
    *init_pid = (int)n;
    int res = -ECHILD;
    if (read(nst[0], &res, sizeof(res)) != sizeof(res))
        res = -ECHILD;
    close(nst[0]);
    if (res < 0)
        return res;
    char path[64], buf[64] = {0};
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)n, (int)n);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t got = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    int s = got > 0 ? atoi(buf) : 0;
    return s > 0 ? s : -ECHILD;
}

int snp_spawn_stub(int want_pid, int new_pidns, int *out_pid, int *out_init)
{
    unsigned char elf[512];
    size_t len = build_stub(elf, sizeof(elf));
    int go[2] = {-1, -1}, status[2] = {-1, -1}, ret, st;
    int memfd = memfd_create("snapshotd-stub", MFD_CLOEXEC);
    pid_t s = -1;

    if (memfd < 0)
        return -errno;
    int rpidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (rpidfd < 0) {
        close(memfd);
        return -errno;
    }
    if (write(memfd, elf, len) != (ssize_t)len || pipe2(go, O_CLOEXEC) < 0 ||
        pipe2(status, O_CLOEXEC) < 0) {
        ret = -errno;
        goto out;
    }
    pid_t mid = fork();
    if (mid < 0) {
        ret = -errno;
        goto out;
    }
    if (mid == 0) {
        close(go[1]);
        close(status[0]);
        if (new_pidns) {
            int res[2] = {0, 0};
            res[0] = spawn_in_new_pidns(want_pid, go[0], memfd, rpidfd, &res[1]);
            _exit(write(status[1], res, sizeof(res)) == sizeof(res) ? 0 : 2);
        }
        pid_t want = want_pid;
        struct clone_args ca;
        memset(&ca, 0, sizeof(ca));
        ca.exit_signal = SIGCHLD;
        ca.set_tid = (uint64_t)(uintptr_t)&want;
        ca.set_tid_size = want_pid > 0 ? 1 : 0;
        long c = syscall(SYS_clone3, &ca, sizeof(ca));
        if (c == 0)
            stub_child(go[0], memfd, rpidfd);
        int res[2] = {c < 0 ? -errno : (int)c, 0};
        if (write(status[1], res, sizeof(res)) != sizeof(res))
            _exit(2);
        _exit(0);
    }
    close(go[0]);
    go[0] = -1;
    close(status[1]);
    status[1] = -1;
    int res[2] = {0, 0};
    ssize_t n = read(status[0], res, sizeof(res));
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    if (n != sizeof(res)) {
        ret = -ECHILD;
        goto out;
    }
    *out_init = res[1];
    if (res[0] < 0) {
        ret = res[0]; /* EEXIST: the PID is taken */
        goto out;
    }
    s = res[0];
    if (ptrace(PTRACE_SEIZE, s, 0,
               PTRACE_O_TRACEEXEC | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK |
                   PTRACE_O_EXITKILL) < 0) {
        ret = -errno;
        kill(s, SIGKILL);
        goto out;
    }
    if (write(go[1], "g", 1) != 1) {
        ret = -errno;
        goto fail;
    }
    /* the exec event, then the stub's first int3 */
    int seen_exec = 0;
    for (;;) {
        if ((ret = snp_wait_stop(s, &st)) < 0)
            goto fail;
        int event = st >> 16;
        int sig = WSTOPSIG(st);
        if (event == PTRACE_EVENT_EXEC)
            seen_exec = 1;
        else if (seen_exec && !event && sig == SIGTRAP)
            break;
        if (ptrace(PTRACE_CONT, s, 0, (event || sig == SIGTRAP) ? 0 : sig) < 0) {
            ret = -errno;
            goto fail;
        }
    }
    *out_pid = s;
    ret = 0;
    goto out;
fail:
    kill(s, SIGKILL);
    snp_wait_stop(s, &st);
out:
    if (go[0] >= 0)
        close(go[0]);
    if (go[1] >= 0)
        close(go[1]);
    if (status[0] >= 0)
        close(status[0]);
    if (status[1] >= 0)
        close(status[1]);
    close(memfd);
    close(rpidfd);
    return ret;
}

/* A child that a stub forked by injection (auto-attached through
 * PTRACE_O_TRACEFORK): let its initial PTRACE_EVENT_STOP pass; it returns from
 * the clone into the int3 after the injected `syscall` and stops there with
 * SIGTRAP, a signal-delivery stop from which injection is safe. */
int snp_adopt_child(int pid)
{
    int st, r;
    for (;;) {
        if ((r = snp_wait_stop(pid, &st)) < 0)
            return r;
        int event = st >> 16, sig = WSTOPSIG(st);
        if (!event && sig == SIGTRAP)
            return 0;
        if (ptrace(PTRACE_CONT, pid, 0, (event || sig == SIGSTOP) ? 0 : sig) < 0)
            return -errno;
    }
}
