/* The container rule in kernel: twin of podtrace_agent.kubepods.is_container_cgroup,
 * for the cgroup_mkdir hook (a new cgroup's id, absolute level and path is all
 * the kernel gives; the creating task is not in it, so no ancestor helper applies).
 * Included by podtrace.c, and by tests/unit/test_container_rule.py with the
 * host's cc, which runs the Python rule's table through it.
 *
 * Knobs (string literals and numbers from the loader, derived in Python by
 * kubepods.qos_names and backend.kubepods_absolute):
 *   KUBEPODS_PATH    kubepods' absolute path in cgroup2 ("/node/kubepods")
 *   KUBEPODS_LEVEL   its absolute level
 *   QOS_BESTEFFORT, QOS_BURSTABLE  the QoS cgroup names followed by "/"
 */
#ifndef PODTRACE_CONTAINER_H
#define PODTRACE_CONTAINER_H

#define KUBEPODS_PATH_LEN (sizeof(KUBEPODS_PATH) - 1)

/* Whether `buf` holds the string literal `lit` at constant offset `off`.
 * Indexing the literal in a fully unrolled loop lets clang fold each byte
 * into an immediate (BCC cannot load .rodata). */
#define PATH_HAS(buf, off, lit)                                                   \
	({                                                                        \
		int __ok = 1;                                                     \
		_Pragma("unroll") for (unsigned int __i = 0; __i < sizeof(lit) - 1; __i++) \
			if ((buf)[(off) + __i] != (lit)[__i]) {                   \
				__ok = 0;                                         \
				break;                                            \
			}                                                         \
		__ok;                                                             \
	})

/* Under kubepods: the absolute path starts with KUBEPODS_PATH "/". */
static __always_inline int below_kubepods(const char *path)
{
	return PATH_HAS(path, 0, KUBEPODS_PATH) && path[KUBEPODS_PATH_LEN] == '/';
}

/* A container cgroup (or nested in one): <qos>/<pod>/<ctr> or <pod>/<ctr>
 * below kubepods; `level` is the cgroup's absolute level. */
static __always_inline int is_container_path(const char *path, int level)
{
	int rel = level - KUBEPODS_LEVEL;
	int qos;

	if (rel <= 0 || !below_kubepods(path))
		return 0;
	qos = PATH_HAS(path, KUBEPODS_PATH_LEN + 1, QOS_BESTEFFORT) ||
	      PATH_HAS(path, KUBEPODS_PATH_LEN + 1, QOS_BURSTABLE);
	return rel >= (qos ? 3 : 2);
}

#endif /* PODTRACE_CONTAINER_H */
