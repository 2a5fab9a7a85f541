/* Benchmark loop: join a cgroup (or "-"), then time N raw getppid syscalls
 * and print the nanoseconds per call. The clock is the thread's CPU time, so
 * time spent preempted by other work on a busy machine is not counted, while
 * everything the kernel does on the syscall path (tracers included) is. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec start, end;
	char buf[32];
	long n, i;
	int fd, len;

	if (argc != 3) {
		fprintf(stderr, "usage: %s <cgroup.procs|-> <N>\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "-") != 0) {
		fd = open(argv[1], O_WRONLY);
		len = snprintf(buf, sizeof(buf), "%d", getpid());
		if (fd < 0 || write(fd, buf, len) != len)
			return 10;
		close(fd);
	}
	n = atol(argv[2]);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
	for (i = 0; i < n; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
	printf("%.2f\n", ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / n);
	return 0;
}
