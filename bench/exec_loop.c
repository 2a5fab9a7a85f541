/* Exec throughput: join a cgroup (or "-"), then run `/bin/true` N times,
 * one at a time (vfork + execve + wait: the cheapest way a process starts
 * another program), and print "<execs made> <seconds>". Several of these run
 * at once give one spawner per CPU. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char *const child_argv[] = {"/bin/true", NULL};
	char *const child_env[] = {NULL};
	struct timespec t0, t1;
	long n, i, made = 0;
	char buf[32];
	int fd, len, status;
	pid_t pid;

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
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++) {
		pid = vfork();
		if (pid == 0) {
			execve(child_argv[0], child_argv, child_env);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &status, 0) < 0)
			break;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			made++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%ld %.6f\n", made, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return made == n ? 0 : 1;
}
