/* Start writing a file's dirty pages back to disk without waiting
 * (sync_file_range(2), SYNC_FILE_RANGE_WRITE): the pack writer calls it
 * after each piece, so that the fsync at commit finds little left to write.
 * It gives no durability by itself (no metadata, no disk cache flush). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>

#include "engine.h"

int snp_start_writeback(int fd)
{
    if (sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0)
        return -errno;
    return 0;
}
