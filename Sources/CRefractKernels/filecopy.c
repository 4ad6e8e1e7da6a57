/* In-kernel file copy for `refract merge --copy`: copy_file_range(2) on Linux (no pass through
 * user space), -1 with errno ENOSYS elsewhere so that the caller falls back to read/write. */
#define _GNU_SOURCE
#include "refract_kernels.h"
#include <errno.h>
#include <unistd.h>

long rf_copy_file_range(int in_fd, int out_fd, unsigned long length) {
#if defined(__linux__)
    return (long)copy_file_range(in_fd, NULL, out_fd, NULL, (size_t)length, 0);
#else
    (void)in_fd; (void)out_fd; (void)length;
    errno = ENOSYS;
    return -1;
#endif
}
