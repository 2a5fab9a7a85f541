/* Benchmark loop: join a cgroup (or "-"), then time N raw getppid syscalls
 * and print the nanoseconds per call: "<thread CPU ns> <wall ns>".
 *
 * The first clock is the thread's CPU time, so time spent preempted by other
 * work on a busy machine is not counted, while everything the kernel does on
 * the syscall path (tracers included) is. The wall clock is for tracers that
 * stop the thread and run elsewhere (strace: ptrace stops), whose cost CPU
 * time of the thread does not show.
 *
 * With a third argument T > 1, T threads each make N calls, thread i pinned
 * to CPU i % ncpus, all released at once (counter contention between CPUs);
 * printed: the mean of the threads' per-call CPU ns and the wall ns per call
 * of one thread (the slowest). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

struct worker {
	pthread_t thread;
	int cpu;
	double cpu_ns, wall_ns;
};

static long calls;
static pthread_barrier_t start_line;

static double elapsed(struct timespec *a, struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1e9 + (b->tv_nsec - a->tv_nsec);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct timespec c0, c1, w0, w1;
	cpu_set_t set;
	long i;

	if (w->cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		pthread_barrier_wait(&start_line);
	}
	clock_gettime(CLOCK_MONOTONIC, &w0);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	for (i = 0; i < calls; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	clock_gettime(CLOCK_MONOTONIC, &w1);
	w->cpu_ns = elapsed(&c0, &c1) / calls;
	w->wall_ns = elapsed(&w0, &w1) / calls;
	return NULL;
}

int main(int argc, char **argv)
{
	struct worker workers[MAX_THREADS];
	double cpu = 0, wall = 0;
	char buf[32];
	int fd, len, threads = 1, ncpus, i;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: %s <cgroup.procs|-> <N> [threads]\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "-") != 0) {
		fd = open(argv[1], O_WRONLY);
		len = snprintf(buf, sizeof(buf), "%d", getpid());
		if (fd < 0 || write(fd, buf, len) != len)
			return 10;
		close(fd);
	}
	calls = atol(argv[2]);
	if (argc == 4)
		threads = atoi(argv[3]);
	if (calls <= 0 || threads < 1 || threads > MAX_THREADS)
		return 2;
	if (threads == 1) {
		workers[0].cpu = -1;
		work(&workers[0]);
		printf("%.2f %.2f\n", workers[0].cpu_ns, workers[0].wall_ns);
		return 0;
	}
	ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_barrier_init(&start_line, NULL, threads);
	for (i = 0; i < threads; i++) {
		workers[i].cpu = i % ncpus;
		if (pthread_create(&workers[i].thread, NULL, work, &workers[i]))
			return 11;
	}
	for (i = 0; i < threads; i++) {
		pthread_join(workers[i].thread, NULL);
		cpu += workers[i].cpu_ns / threads;
		if (workers[i].wall_ns > wall)
			wall = workers[i].wall_ns;
	}
	printf("%.2f %.2f\n", cpu, wall);
	return 0;
}
