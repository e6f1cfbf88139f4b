/* Read the bytes queued in a pipe without consuming them.
 *
 * tee(2) duplicates the buffers of one pipe into another without taking them
 * out of the first; we tee from (our copy of) the dumped pipe's read end into
 * a private pipe of the same capacity, and read the private one.  The dumped
 * program finds its bytes still queued when it runs on after the dump. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine.h"

long snp_pipe_peek(int fd, void *buf, long max)
{
    int p[2];
    long total = 0;
    int cap = fcntl(fd, F_GETPIPE_SZ);
    if (cap < 0)
        return -errno;
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    /* as many slots as the source: tee copies buffer by buffer */
    if (fcntl(p[1], F_SETPIPE_SZ, cap) < 0) {
        total = -errno;
        goto out;
    }
    ssize_t n = tee(fd, p[1], (size_t)cap, SPLICE_F_NONBLOCK);
    if (n < 0) {
        total = errno == EAGAIN ? 0 : -errno; /* EAGAIN: empty, writers remain */
        goto out;
    }
    while (total < n) {
        if (total >= max) {
            total = -ENOBUFS;
            goto out;
        }
        ssize_t r = read(p[0], (char *)buf + total, (size_t)(max - total));
        if (r <= 0) {
            total = r < 0 ? -errno : -EIO;
            goto out;
        }
        total += r;
    }
out:
    close(p[0]);
    close(p[1]);
    return total;
}

/* A copy, in our fd table, of fd `fd` of process pid: the same open file
 * description (pidfd_open + pidfd_getfd), with FD_CLOEXEC. */
int snp_grab_fd(int pid, int fd)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        return -errno;
    int r = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    int e = errno;
    close(pidfd);
    return r < 0 ? -e : r;
}
