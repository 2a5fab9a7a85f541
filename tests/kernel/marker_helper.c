/* Kernel-tier helper for the workload marker: join a cgroup, wait for go, make
 * N getppid calls (the "set-up"), take the name <comm> and call
 * prctl(PR_GET_PDEATHSIG) as runc's init does, make M gettid calls (the
 * "workload"), then exec a program (or exit 0).
 *
 *   marker_helper <cgroup.procs> <fifo|-> <comm> <N> <M> [program [args...]] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[32];
	long n, m, i;
	int fd, len, sig = 0;

	if (argc < 6) {
		fprintf(stderr, "usage: %s <cgroup.procs> <fifo|-> <comm> <N> <M> [program...]\n",
			argv[0]);
		return 2;
	}
	fd = open(argv[1], O_WRONLY);
	len = snprintf(buf, sizeof(buf), "%d", getpid());
	if (fd < 0 || write(fd, buf, len) != len)
		return 10;
	close(fd);
	if (strcmp(argv[2], "-") != 0) {
		fd = open(argv[2], O_RDONLY);
		if (fd < 0 || read(fd, buf, 1) != 1)
			return 11;
		close(fd);
	}
	n = atol(argv[4]);
	m = atol(argv[5]);
	for (i = 0; i < n; i++)
		syscall(SYS_getppid);
	if (prctl(PR_SET_NAME, argv[3], 0, 0, 0) || prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0))
		return 12;
	for (i = 0; i < m; i++)
		syscall(SYS_gettid);
	if (argc > 6) {
		execv(argv[6], argv + 6);
		return 13;
	}
	return 0;
}
