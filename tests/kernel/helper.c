/* Kernel-tier helper: join a cgroup, optionally wait for a go signal, make
 * exactly N getppid syscalls, then exec a program (or exit 0).
 *
 *   helper <cgroup.procs|-> <fifo|-> <N> [program [args...]]
 *
 * Nothing here calls getppid but the loop: glibc's getppid() is not cached,
 * but the raw syscall() makes that independent of the libc. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[32];
	long n, i;
	int fd, len;

	if (argc < 4) {
		fprintf(stderr, "usage: %s <cgroup.procs|-> <fifo|-> <N> [program...]\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "-") != 0) {
		fd = open(argv[1], O_WRONLY);
		len = snprintf(buf, sizeof(buf), "%d", getpid());
		if (fd < 0 || write(fd, buf, len) != len)
			return 10;
		close(fd);
	}
	if (strcmp(argv[2], "-") != 0) {
		fd = open(argv[2], O_RDONLY);
		if (fd < 0 || read(fd, buf, 1) != 1)
			return 11;
		close(fd);
	}
	n = atol(argv[3]);
	for (i = 0; i < n; i++)
		syscall(SYS_getppid);
	if (argc > 4) {
		execv(argv[4], argv + 4);
		return 12;
	}
	return 0;
}
