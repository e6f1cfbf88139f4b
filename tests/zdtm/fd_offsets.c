/*
 * fd_offsets: file offsets.
 *
 * A 1 MiB file of known bytes is opened four times: read-only at offset
 * 12345, read-write at 777777, write-only at EOF, and read-only moved past
 * EOF (size + 4096).
 * The loop reads nothing (offsets must stay put).  After go: lseek(fd, 0,
 * SEEK_CUR) of every fd is unchanged, the pos lines in /proc/self/fdinfo
 * agree, and reading from the first two fds continues with the right bytes.
 */
#include "zdtm.h"

#define SIZE (1 << 20)

static unsigned char byte_at(off_t o)
{
	return (unsigned char)(o * 31 + (o >> 9));
}

static long fdinfo_pos(int fd)
{
	char p[64], v[64];

	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	if (zdtm_status_field(p, "pos:", v, sizeof(v)))
		return -1;
	return atol(v);
}

int main(int argc, char **argv)
{
	char path[PATH_MAX];
	unsigned char *data = malloc(SIZE), buf[100];
	off_t want[4] = { 12345, 777777, SIZE, SIZE + 4096 };
	int fd[4], flags[4] = { O_RDONLY, O_RDWR, O_WRONLY, O_RDONLY };

	zdtm_init(argc, argv);
	zdtm_path("offsets.dat", path, sizeof(path));
	for (off_t o = 0; o < SIZE; o++)
		data[o] = byte_at(o);
	int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (w < 0 || write(w, data, SIZE) != SIZE)
		return perror(path), 1;
	close(w);
	for (int i = 0; i < 4; i++) {
		fd[i] = open(path, flags[i]);
		if (fd[i] < 0 || lseek(fd[i], want[i], SEEK_SET) != want[i])
			return perror("open/lseek"), 1;
	}

	zdtm_ready();
	zdtm_wait_go();

	for (int i = 0; i < 4; i++) {
		off_t cur = lseek(fd[i], 0, SEEK_CUR);
		CHECK(cur == want[i], "fd %d offset %ld, expected %ld", fd[i], (long)cur,
		      (long)want[i]);
		CHECK(fdinfo_pos(fd[i]) == want[i], "fdinfo pos of fd %d is %ld", fd[i],
		      fdinfo_pos(fd[i]));
	}
	for (int i = 0; i < 2; i++) {
		int ok = read(fd[i], buf, sizeof(buf)) == sizeof(buf);
		for (int k = 0; ok && k < (int)sizeof(buf); k++)
			ok = buf[k] == byte_at(want[i] + k);
		CHECK(ok, "fd %d: reading on does not give the bytes at %ld", fd[i], (long)want[i]);
	}
	CHECK(read(fd[3], buf, 1) == 0, "read past EOF returned data");
	return zdtm_finish();
}
