/* Kernel-tier helper: join a cgroup, start T threads, thread i pinned to CPU
 * i % (online CPUs), all released at once by a barrier, each making exactly N
 * getppid syscalls: counter contention from several CPUs on one row.
 *
 *   threads <cgroup.procs> <T> <N>
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t start;
static long n;

static void *loop(void *arg)
{
	long cpu = (long)arg;
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
		exit(13);
	pthread_barrier_wait(&start);
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	return NULL;
}

int main(int argc, char **argv)
{
	char buf[32];
	long threads, cpus = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t tids[64];
	int fd, len;

	if (argc != 4) {
		fprintf(stderr, "usage: %s <cgroup.procs> <threads> <N>\n", argv[0]);
		return 2;
	}
	threads = atol(argv[2]);
	n = atol(argv[3]);
	if (threads < 1 || threads > 64)
		return 2;
	fd = open(argv[1], O_WRONLY);
	len = snprintf(buf, sizeof(buf), "%d", getpid());
	if (fd < 0 || write(fd, buf, len) != len)
		return 10;
	close(fd);
	pthread_barrier_init(&start, NULL, threads);
	for (long i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, loop, (void *)(i % cpus)))
			return 11;
	for (long i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	return 0;
}
