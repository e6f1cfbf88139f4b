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
#include <sys/mman.h>
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

/* In S, between clone3 and exec: only raw syscalls. */
static void stub_child(int go_rd, int memfd)
{
    char b;
    if (read(go_rd, &b, 1) != 1)
        _exit(1); /* R gave up before seizing us */
    setsid();
    /* keep only the memfd: close_range(2) around it */
    if (memfd > 0)
        syscall(SYS_close_range, 0, memfd - 1, 0);
    syscall(SYS_close_range, memfd + 1, ~0U, 0);
    char *argv[] = {"snapshotd-stub", NULL};
    char *envp[] = {NULL};
    syscall(SYS_execveat, memfd, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
}

int snp_spawn_stub(int want_pid, int *out_pid)
{
    unsigned char elf[512];
    size_t len = build_stub(elf, sizeof(elf));
    int go[2] = {-1, -1}, status[2] = {-1, -1}, ret, st;
    int memfd = memfd_create("snapshotd-stub", MFD_CLOEXEC);
    pid_t s = -1;

    if (memfd < 0)
        return -errno;
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
        pid_t want = want_pid;
        struct clone_args ca;
        memset(&ca, 0, sizeof(ca));
        ca.exit_signal = SIGCHLD;
        ca.set_tid = (uint64_t)(uintptr_t)&want;
        ca.set_tid_size = want_pid > 0 ? 1 : 0;
        long c = syscall(SYS_clone3, &ca, sizeof(ca));
        if (c == 0)
            stub_child(go[0], memfd);
        int res = c < 0 ? -errno : (int)c;
        if (write(status[1], &res, sizeof(res)) != sizeof(res))
            _exit(2);
        _exit(0);
    }
    close(go[0]);
    go[0] = -1;
    close(status[1]);
    status[1] = -1;
    int res = 0;
    ssize_t n = read(status[0], &res, sizeof(res));
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    if (n != sizeof(res)) {
        ret = -ECHILD;
        goto out;
    }
    if (res < 0) {
        ret = res; /* EEXIST: the PID is taken */
        goto out;
    }
    s = res;
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
