"""x86-64 syscall numbers and the kernel constants snapshotd's modules share:
the one place they are written, so dump, restore, the fd kinds and the probes
speak the same words.  Grouped by the header they come from.  Constants of a
protocol that a single module speaks (TCP repair options, netlink route and
unix diag attributes, userfaultfd/PAGEMAP_SCAN bits) stay beside that module."""

# -- syscall numbers (asm/unistd_64.h) --
READ, WRITE, OPEN, CLOSE = 0, 1, 2, 3
LSEEK = 8
MMAP, MPROTECT, MUNMAP, BRK = 9, 10, 11, 12
RT_SIGACTION, RT_SIGPROCMASK = 13, 14
MREMAP = 25
MADVISE = 28
SHMGET, SHMAT, SHMCTL = 29, 30, 31
DUP2 = 33
GETITIMER, SETITIMER = 36, 38
RECVMSG = 47
SOCKETPAIR = 53
CLONE = 56
WAIT4 = 61
SHMDT = 67
FCNTL = 72
CHDIR, FCHDIR = 80, 81
UMASK = 95
SETPGID, SETSID = 109, 112
SETGROUPS, SETRESUID, SETRESGID = 116, 117, 119
SETFSUID, SETFSGID = 122, 123
CAPSET = 126
RT_SIGTIMEDWAIT, RT_SIGQUEUEINFO = 128, 129
SIGALTSTACK = 131
PERSONALITY = 135
PRCTL = 157
ARCH_PRCTL = 158
SET_TID_ADDRESS = 218
EXIT_GROUP = 231
EPOLL_CTL = 233
INOTIFY_ADD_WATCH, INOTIFY_RM_WATCH = 254, 255
SET_ROBUST_LIST = 273
TIMERFD_CREATE, TIMERFD_SETTIME = 283, 286
SIGNALFD4 = 289
EPOLL_CREATE1 = 291
DUP3 = 292
INOTIFY_INIT1 = 294
RT_TGSIGQUEUEINFO = 297
PRLIMIT64 = 302
OPEN_BY_HANDLE_AT = 304
PROCESS_VM_READV = 310
KCMP = 312
USERFAULTFD = 323
RSEQ = 334
PIDFD_OPEN = 434
CLONE3 = 435
CLOSE_RANGE = 436
PIDFD_GETFD = 438

# -- page size (asm/page.h PAGE_SIZE; x86-64 base pages) --
PAGE = 4096

# -- prctl options (linux/prctl.h) --
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2
PR_SET_NAME = 15
PR_SET_MM = 35
PR_SET_MM_MAP = 14
PR_GET_TID_ADDRESS = 40
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2

# -- capset(2) header (linux/capability.h) --
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# -- mmap, mremap (asm-generic/mman-common.h, asm/mman.h, linux/mman.h) --
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_NORESERVE = 0x0100, 0x4000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2

# -- madvise advice (asm-generic/mman-common.h): DONTNEED, and what
#    /proc/PID/smaps VmFlags reveals and restore re-applies --
MADV_DONTNEED = 4
MADV_DONTFORK, MADV_DOFORK = 10, 11
MADV_DONTDUMP = 16
MADV_WIPEONFORK = 18
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15

# -- clone flags (linux/sched.h) --
CLONE_NEWTIME = 0x80
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_PARENT = 0x8000
CLONE_THREAD, CLONE_SYSVSEM = 0x10000, 0x40000
CLONE_NEWNET = 0x40000000
THREAD_FLAGS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM

# -- wait4/waitpid options (linux/wait.h) --
WNOHANG = 1
WALL = 0x40000000  # __WALL

# -- ptrace requests and options (linux/ptrace.h); regset note type (linux/elf.h) --
PTRACE_GETREGSET, PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4204, 0x4206, 0x4207
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_EXITKILL, PTRACE_O_SUSPEND_SECCOMP = 0x100000, 0x200000
NT_X86_XSTATE = 0x202

# -- kcmp types (linux/kcmp.h) --
KCMP_FILE, KCMP_FILES = 0, 2

# -- open and fcntl flags (asm-generic/fcntl.h) --
O_NONBLOCK = 0o4000
O_CLOEXEC = 0o2000000
F_SETFD = 2
FD_CLOEXEC = 1

# -- errno (asm-generic/errno-base.h; the ERESTART* are kernel-internal, linux/errno.h) --
EAGAIN = 11
EEXIST = 17
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516

# -- interval timers (linux/time.h) --
ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2

# -- signals (asm/signal.h) --
SIGKILL, SIGCHLD, SIGSTOP = 9, 17, 19
NSIG = 64

# -- timerfd (linux/timerfd.h) --
TFD_TIMER_ABSTIME = 1
TFD_IOC_SET_TICKS = 0x40085400  # _IOW('T', 0, u64), CONFIG_CHECKPOINT_RESTORE

# -- SysV IPC and shared memory (linux/ipc.h, linux/shm.h) --
IPC_RMID = 0
IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
SHM_DEST = 0o1000  # in shm_perm.mode (/proc/sysvipc/shm): removed, alive until the last detach
SHM_RDONLY = 0o10000
SHM_EXEC = 0o100000

# -- ioctls on sockets and other fds (asm-generic/ioctls.h, linux/sockios.h) --
FIONREAD = 0x541B
SIOCINQ = FIONREAD
SIOCOUTQ = 0x5411  # TIOCOUTQ
SIOCOUTQNSD = 0x894B

# -- socket options (asm-generic/socket.h) --
SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
SO_PEEK_OFF = 42

# -- TCP (linux/tcp.h; socket states as sock_diag reports them, net/tcp_states.h) --
TCP_REPAIR = 19
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10

# -- netlink and sock_diag (linux/netlink.h, linux/sock_diag.h) --
NETLINK_SOCK_DIAG = 4
NLMSG_ERROR, NLMSG_DONE = 2, 3
SOCK_DIAG_BY_FAMILY, SOCK_DESTROY = 20, 21


# file locks (asm-generic/fcntl.h, linux/fs.h): fcntl commands, lock types, flock(2)
FLOCK = 73
F_SETLK, F_OFD_SETLK = 6, 37
F_RDLCK, F_WRLCK = 0, 1
LOCK_SH, LOCK_EX, LOCK_NB = 1, 2, 4
