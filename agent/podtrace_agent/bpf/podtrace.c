/* podtrace's BPF program (BCC).
 *
 * One translation unit on purpose: BCC rewrites map calls and generates the
 * TRACEPOINT_PROBE argument structs only in the main file, so the hook groups
 * (cgroups, syscalls, processes) are sections of this file, not .c files of
 * their own. Wire structs and constants come from events.h, the container
 * rule from container.h.
 *
 * Levels and paths here are absolute in the cgroup2 hierarchy, as the helpers
 * and tracepoints see them, also when the agent's cgroup2 mount is a cgroup
 * namespace below the host's root (a node in a container): the loader turns
 * the mount-relative view of discovery into absolute knobs.
 *
 * Only tracepoint arguments and helpers are read, never kernel structs through
 * the installed headers (they need not match the running kernel). The
 * task_struct fields needed (real_parent->tgid, exit_code) and the syscall
 * argument registers in pt_regs are read at byte offsets taken from the
 * running kernel's BTF by the loader (btf.py).
 *
 * Knobs (cflags, set by loader.py):
 *   KUBEPODS_ID, KUBEPODS_LEVEL   the kubepods cgroup2 id and absolute depth
 *   KUBEPODS_PATH                 its absolute path in cgroup2, a string literal
 *                                 ("/kubepods"; a node in a container: "/<node>/kubepods")
 *   QOS_BESTEFFORT, QOS_BURSTABLE its QoS cgroup names + "/" (container.h)
 *   AUTO_TRACE_MASK               PROBE_* bits for container cgroups created later
 *   MAX_TRACED                    traced cgroups = counter rows
 *   MAX_REMOVED                   cgroup_rmdir records kept (`removed`, LRU)
 *   RINGBUF_PAGES                 ring buffer size in pages (power of two)
 *   PIN_DIR                       (optional) where the shared maps are pinned, a string literal
 *   REPORTED_SLOTS                (optional, pinned node agent) the reported_* maps
 *   NR_OPEN, NR_OPENAT, NR_CONNECT, NR_PRCTL, NR_EXIT, NR_EXIT_GROUP  syscall numbers
 *   TASK_REAL_PARENT_OFF, TASK_TGID_OFF, TASK_EXIT_CODE_OFF  (optional, from BTF)
 *   PT_REGS_DI_OFF, PT_REGS_SI_OFF, PT_REGS_DX_OFF  (optional, from BTF: raw tracepoint)
 *   EXIT_HAS_GROUP_DEAD           sched_process_exit has the group_dead field
 */
#include "events.h"
#include "container.h"

#define CGROUP2_HIERARCHY 0 /* cgroup_mkdir `root`: the default hierarchy's id */
#define PT_AF_INET 2
#define PT_AF_INET6 10

/* Maps shared with user space, pinned under PIN_DIR when the loader sets it
 * (pins.py): they outlive the agent, and the next agent of the same layout
 * reuses them (BCC: a pinned map is reused when the pin exists, else created
 * and pinned). Per-CPU scratch space is the program's own, never pinned. */
#ifdef PIN_DIR
#define SHARED_TABLE(type, key, leaf, name, size) \
	BPF_TABLE_PINNED(type, key, leaf, name, size, PIN_DIR "/" #name)
#define SHARED_QUEUE(name, leaf, size) \
	BPF_QUEUESTACK_PINNED("queue", name, leaf, size, 0, PIN_DIR "/" #name)
#define RINGBUF_SECTION "maps/ringbuf:" PIN_DIR "/events"
#else
#define SHARED_TABLE(type, key, leaf, name, size) BPF_TABLE(type, key, leaf, name, size)
#define SHARED_QUEUE(name, leaf, size) BPF_QUEUE(name, leaf, size)
#define RINGBUF_SECTION "maps/ringbuf"
#endif

/* Bookkeeping shared with user space (rows.py says who writes what and why it
 * is race-free). The hooks never write a `traced` value through a pointer: an
 * element deleted or replaced by user space is reused at once (also with
 * BPF_F_NO_PREALLOC since 6.1), so such a write could land in another cgroup's
 * entry. */
SHARED_TABLE("hash", u64, struct traced_cgroup, traced, MAX_TRACED);
/* Free counter rows. User space fills it, zeroing a row (and its owner)
 * before it goes back. */
SHARED_QUEUE(free_slots, u32, MAX_TRACED);
/* The cgroup a row was handed to, set before the entry pointing at it is
 * inserted, 0 while the row is free. sys_enter counts only into a row its
 * cgroup owns, so an entry read from a reused element (or two entries on one
 * row) never mixes counts. A restarted agent finds the rows the last one left
 * quarantined by it: owned, but by no entry. */
SHARED_TABLE("array", int, u64, row_owner, MAX_TRACED);
/* Cgroups removed below kubepods (id -> bpf_ktime_get_ns() of the rmdir),
 * written only here. User space checks it after each write of `traced`, which
 * may re-create the entry of a cgroup removed meanwhile, and in its sweep;
 * unlike a flag in the entry, no user space write can erase it. */
SHARED_TABLE("lru_hash", u64, u64, removed, MAX_REMOVED);
/* Counters: one row of NR_SYSCALLS_MAX columns per traced cgroup, ONE copy
 * shared by all CPUs, bumped with an atomic add (lock xadd). A per-CPU array
 * would cost MAX_TRACED * NR_SYSCALLS_MAX * 8 bytes per possible CPU (2 MiB
 * each at the default: 256 MiB on a 128-CPU node); shared, it is 2 MiB on any
 * node, and user space reads one value per counter instead of one per CPU.
 * Two CPUs contend only when they count the same syscall of the same row. */
SHARED_TABLE("array", int, u64, counts, MAX_TRACED * NR_SYSCALLS_MAX);
/* STAT_* counters, shared likewise (cold paths only). */
SHARED_TABLE("array", int, u64, stats, NR_STATS);
/* HEADER_* of events.h: user space only. */
SHARED_TABLE("array", int, u64, header, NR_HEADER);
/* What the node agent's status writes counted of each row, and whose row it
 * was: the write in flight and the last one that went through (two slots,
 * HEADER_TAG_*). A restarted agent counts on from what the apiserver holds
 * (loader.py: snapshot, resume_from). User space only; 4 MiB at the default
 * MAX_TRACED, so only where they are used. */
#ifdef REPORTED_SLOTS /* the node agent's, pinned */
SHARED_TABLE("array", int, u64, reported_0, MAX_TRACED * NR_SYSCALLS_MAX);
SHARED_TABLE("array", int, u64, reported_1, MAX_TRACED * NR_SYSCALLS_MAX);
SHARED_TABLE("array", int, u64, reported_owner_0, MAX_TRACED);
SHARED_TABLE("array", int, u64, reported_owner_1, MAX_TRACED);
#endif
SHARED_TABLE("array", int, struct open_prefix, open_prefix, MAX_PREFIXES);
SHARED_TABLE("array", int, u32, connect_port, MAX_PORTS);
BPF_PERCPU_ARRAY(cgroup_scratch, struct cgroup_event, 1);
BPF_PERCPU_ARRAY(open_scratch, struct open_event, 1);
BPF_PERCPU_ARRAY(marker_scratch, struct marker_event, 1);
/* BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES), with the section of a pinned map
 * when pinned (BCC 0.26 has no pinned ring buffer macro; its frontend reads
 * "maps/ringbuf:<path>" as it reads the pinned tables' sections). Records
 * written while no agent reads stay in it until the next one does. */
struct events_table_t {
	int key;
	u32 leaf;
	int (*ringbuf_output)(void *, u64, u64);
	void *(*ringbuf_reserve)(u64);
	void (*ringbuf_discard)(void *, u64);
	void (*ringbuf_submit)(void *, u64);
	u32 max_entries;
};
__attribute__((section(RINGBUF_SECTION)))
struct events_table_t events = { .max_entries = RINGBUF_PAGES * PAGE_SIZE };

static __always_inline void count_stat(u32 index)
{
	u64 *value = stats.lookup(&index);
	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline void fill_header(struct event_header *hdr, u32 type, u64 cgroup_id)
{
	hdr->type = type;
	hdr->pid = bpf_get_current_pid_tgid() >> 32;
	hdr->cgroup_id = cgroup_id;
	hdr->timestamp_ns = bpf_ktime_get_ns();
}

/* The traced entry of the current task's cgroup, or NULL. The ancestor check
 * comes first: it is all every process outside kubepods pays. */
static __always_inline struct traced_cgroup *current_traced(u64 *cgroup_id)
{
	if (bpf_get_current_ancestor_cgroup_id(KUBEPODS_LEVEL) != KUBEPODS_ID)
		return NULL;
	*cgroup_id = bpf_get_current_cgroup_id();
	return traced.lookup(cgroup_id);
}

static __always_inline u32 current_ppid(void)
{
#ifdef TASK_REAL_PARENT_OFF
	u64 task = bpf_get_current_task();
	u64 parent = 0;
	u32 tgid = 0;

	bpf_probe_read_kernel(&parent, sizeof(parent), (void *)(task + TASK_REAL_PARENT_OFF));
	if (parent)
		bpf_probe_read_kernel(&tgid, sizeof(tgid), (void *)(parent + TASK_TGID_OFF));
	return tgid;
#else
	return 0;
#endif
}

/* ---- cgroups: cgroup:cgroup_mkdir / cgroup_rmdir ------------------------
 * Format (both): int root; int level; u64 id; __data_loc char[] path.
 * `root` is the hierarchy id (0: cgroup2), `id` the cgroup2 inode number,
 * `path` the full path in that hierarchy ("/kubepods/besteffort/pod…/…").
 * Every hook looks up the task's current cgroup, so a task moved into a
 * traced cgroup is seen from its next syscall (cgroup_attach_task is hooked
 * only to keep sys_enter's membership cache right, below).
 */

_Static_assert(KUBEPODS_PATH_LEN + sizeof("/") + sizeof(QOS_BESTEFFORT) < MAX_CGROUP_PATH,
	       "KUBEPODS_PATH too long for the cgroup path buffer");

/* The cgroup event for a cgroup2 cgroup below kubepods, in per-CPU scratch
 * (the path must be read before we know whether to send anything). */
static __always_inline struct cgroup_event *
cgroup_event(void *args, int root, int level, u64 id, u32 data_loc_path, u32 type)
{
	u32 zero = 0;
	struct cgroup_event *event;

	if (root != CGROUP2_HIERARCHY || level <= KUBEPODS_LEVEL)
		return NULL;
	event = cgroup_scratch.lookup(&zero);
	if (!event)
		return NULL;
	if (bpf_probe_read_kernel_str(event->path, sizeof(event->path),
				      args + (data_loc_path & 0xFFFF)) <= 0)
		return NULL;
	if (!below_kubepods(event->path))
		return NULL;
	fill_header(&event->hdr, type, id);
	event->level = level;
	event->slot = NO_SLOT;
	return event;
}

static __always_inline void send_cgroup_event(struct cgroup_event *event)
{
	if (events.ringbuf_output(event, sizeof(*event), 0))
		count_stat(STAT_RINGBUF_FULL);
}

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
	struct cgroup_event *event = cgroup_event(args, args->root, args->level, args->id,
						  args->data_loc_path, EVENT_CGROUP_MKDIR);
	u32 slot;

	if (!event)
		return 0;
	if (AUTO_TRACE_MASK && is_container_path(event->path, args->level)) {
		if (free_slots.pop(&slot) == 0) {
			struct traced_cgroup entry = {
				.mask = AUTO_TRACE_MASK, .slot = slot, .flags = TRACED_AUTO,
			};
			u64 *owner = row_owner.lookup(&slot);

			if (owner)
				*owner = event->hdr.cgroup_id;
			if (traced.insert(&event->hdr.cgroup_id, &entry) == 0) {
				event->slot = slot;
			} else {
				if (owner)
					*owner = 0;
				free_slots.push(&slot, 0);
				count_stat(STAT_TRACED_FULL);
			}
		} else {
			count_stat(STAT_NO_SLOT);
		}
	}
	send_cgroup_event(event);
	return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
{
	struct cgroup_event *event = cgroup_event(args, args->root, args->level, args->id,
						  args->data_loc_path, EVENT_CGROUP_RMDIR);
	struct traced_cgroup *entry;

	if (!event)
		return 0;
	/* Record, don't touch the entry: user space reads the final counts, zeroes
	 * the row and frees it, on this event or, when it is lost, on the record.
	 * The slot in the event is for the reader's information only. */
	if (removed.update(&event->hdr.cgroup_id, &event->hdr.timestamp_ns))
		count_stat(STAT_UNRECORDED);
	entry = traced.lookup(&event->hdr.cgroup_id);
	if (entry)
		event->slot = entry->slot;
	send_cgroup_event(event);
	return 0;
}

/* ---- syscalls: sys_enter --------------------------------------------------
 * One program for counting, opens and connects, so a traced task pays one
 * traced-map lookup per syscall. Attached as the raw tracepoint sys_enter
 * when the loader found pt_regs offsets in BTF, else as the classic
 * raw_syscalls:sys_enter (format: long id; unsigned long args[6]).
 */

static __always_inline int prefix_equal(const char *path, struct open_prefix *prefix)
{
	for (u32 i = 0; i < PREFIX_MAX; i++) {
		if (i >= prefix->len)
			return 1;
		if (path[i] != prefix->str[i])
			return 0;
	}
	return 1;
}

static __always_inline int prefix_match(const char *path, u32 bits)
{
	if (!bits)
		return 1;
#pragma unroll
	for (u32 i = 0; i < MAX_PREFIXES; i++) {
		u32 index = i;
		struct open_prefix *prefix;

		if (!(bits & (1u << i)))
			continue;
		prefix = open_prefix.lookup(&index);
		if (prefix && prefix_equal(path, prefix))
			return 1;
	}
	return 0;
}

static __always_inline void on_open(u64 cgroup_id, struct traced_cgroup *entry,
				    const char *user_path, int flags)
{
	u32 zero = 0;
	struct open_event *event = open_scratch.lookup(&zero);

	if (!event)
		return;
	/* Fails (-EFAULT) when the string's page is not yet faulted in: then
	 * there is no path to match and nothing is sent. */
	if (bpf_probe_read_user_str(event->path, sizeof(event->path), user_path) <= 0)
		return;
	if (!prefix_match(event->path, entry->open_prefixes))
		return;
	fill_header(&event->hdr, EVENT_OPEN, cgroup_id);
	event->flags = flags;
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	if (events.ringbuf_output(event, sizeof(*event), 0))
		count_stat(STAT_RINGBUF_FULL);
}

static __always_inline int port_match(u32 port, u32 bits)
{
	if (!bits)
		return 1;
#pragma unroll
	for (u32 i = 0; i < MAX_PORTS; i++) {
		u32 index = i;
		u32 *wanted;

		if (!(bits & (1u << i)))
			continue;
		wanted = connect_port.lookup(&index);
		if (wanted && *wanted == port)
			return 1;
	}
	return 0;
}

/* struct sockaddr_in: family@0 port@2 (big endian) addr@4[4];
 * struct sockaddr_in6: family@0 port@2 flowinfo@4 addr@8[16]. */
static __always_inline void on_connect(u64 cgroup_id, struct traced_cgroup *entry,
				       const void *user_addr, long addrlen)
{
	u8 sa[24] = {};
	u16 family, port;
	struct connect_event *event;

	if (addrlen < 8 || bpf_probe_read_user(sa, 8, user_addr))
		return;
	family = sa[0] | sa[1] << 8;
	if (family == PT_AF_INET6) {
		if (addrlen < 24 || bpf_probe_read_user(sa, sizeof(sa), user_addr))
			return;
	} else if (family != PT_AF_INET) {
		return;
	}
	port = sa[2] << 8 | sa[3];
	if (!port_match(port, entry->connect_ports))
		return;
	event = events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		count_stat(STAT_RINGBUF_FULL);
		return;
	}
	fill_header(&event->hdr, EVENT_CONNECT, cgroup_id);
	event->family = family;
	event->port = port;
	event->_pad = 0;
	__builtin_memset(event->addr, 0, sizeof(event->addr));
	if (family == PT_AF_INET6)
		__builtin_memcpy(event->addr, &sa[8], 16);
	else
		__builtin_memcpy(event->addr, &sa[4], 4);
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	events.ringbuf_submit(event, 0);
}

/* ---- the workload marker: runc init's prctl(PR_GET_PDEATHSIG) -------------
 * runc's init (comm RUNC_INIT_COMM) makes this call once, after mounts,
 * pivot_root and hostname and before its seccomp filter (backend.WorkloadMarker).
 * The row's counts at that moment go to user space in one record: what the
 * cgroup counts beyond them is the workload's. Costs nothing on the hot path:
 * only a traced cgroup's prctl with that option reads the comm. */

static __always_inline int is_runc_init(void)
{
	char comm[TASK_COMM_LEN] = {};

	bpf_get_current_comm(&comm, sizeof(comm));
	return PATH_HAS(comm, 0, RUNC_INIT_COMM) && comm[sizeof(RUNC_INIT_COMM) - 1] == 0;
}

static __always_inline void on_marker(u64 cgroup_id, u32 slot)
{
	u32 zero = 0;
	struct marker_event *event = marker_scratch.lookup(&zero);
	u64 *owner = row_owner.lookup(&slot);

	if (!event || !owner || *owner != cgroup_id || slot >= MAX_TRACED)
		return;
	for (u32 i = 0; i < NR_SYSCALLS_MAX; i++) {
		u32 index = slot * NR_SYSCALLS_MAX + i;
		u64 *count = counts.lookup(&index);

		event->counts[i] = count ? *count : 0;
	}
	fill_header(&event->hdr, EVENT_MARKER, cgroup_id);
	event->slot = slot;
	event->_pad = 0;
	if (events.ringbuf_output(event, sizeof(*event), 0))
		count_stat(STAT_RINGBUF_FULL);
}

/* Syscall argument i (0..2) of the hook's source: the saved registers for
 * the raw tracepoint (x86_64 passes arguments in di, si, dx), the record's
 * args[] for the classic one. */
#ifdef PT_REGS_DI_OFF
static __always_inline unsigned long syscall_arg(const void *regs, int i)
{
	unsigned long value = 0;
	u32 off = i == 0 ? PT_REGS_DI_OFF : i == 1 ? PT_REGS_SI_OFF : PT_REGS_DX_OFF;

	bpf_probe_read_kernel(&value, sizeof(value), regs + off);
	return value;
}
#else
#define syscall_arg(src, i) (((const unsigned long *)(src))[i])
#endif

static __always_inline void count_syscall(u64 cgroup_id, u32 slot, long nr)
{
	u32 column = (unsigned long)nr < NR_SYSCALLS_MAX - 1 ? nr : NR_SYSCALLS_MAX - 1;
	u32 index = slot * NR_SYSCALLS_MAX + column;
	u64 *owner = row_owner.lookup(&slot);
	u64 *count;

	if (!owner || *owner != cgroup_id) {
		count_stat(STAT_FOREIGN_ROW);
		return;
	}
	count = counts.lookup(&index);
	if (count)
		__sync_fetch_and_add(count, 1); /* result unused: a plain atomic add */
}

/* ---- sys_enter's membership cache ----------------------------------------
 * Asking the kernel for the task's cgroup costs a helper call per syscall
 * (bpf_get_current_ancestor_cgroup_id: ~40 ns here, more than the program's
 * own entry), paid by every process of the node. So each CPU remembers, for
 * the task whose syscall it saw last, whether that task is below kubepods and
 * in which cgroup, keyed by the task's saved registers (a pointer into its
 * kernel stack: free to read, unique among live tasks) and valid while
 * `membership_gen` has not moved. It moves whenever a task could have another
 * cgroup or another task could have that key:
 *   cgroup:cgroup_attach_task  a task moved (after the move; a task moved by
 *                              another process while it runs is seen from its
 *                              first syscall after the write to cgroup.procs
 *                              returns, not from the very instant of the move);
 *   sched:sched_process_fork   a new task, maybe on a freed task's stack (it
 *                              fires before the new task can run).
 * That the cgroup is NOT traced is cached too (a traced one's entry cannot be:
 * user space may rewrite or free it at any time), valid while `traced_gen` has
 * not moved: user space bumps it after each insert into `traced`, so a cgroup
 * traced from now is looked up again from its next syscall, as the write
 * returned; an untrace needs nothing (the entry's lookup finds it gone). The
 * inserts cgroup_mkdir makes need no bump: a new cgroup has no task until one
 * is attached, which moves `membership_gen`. Every kubepods syscall of an
 * untraced container so costs two array reads instead of a hash lookup. The
 * cache is read and written only by this program, which never runs twice at
 * once on a CPU (the kernel skips a recursive run), so an entry is never torn. */
struct task_membership {
	u64 task;      /* the task's pt_regs pointer (raw tracepoint) or task_struct */
	u64 gen;       /* membership_gen when it was filled */
	u64 cgroup_id; /* its cgroup2 id, 0 when not below kubepods */
	u64 untraced;  /* traced_gen + 1 when its cgroup was found not traced, else 0 */
};
BPF_PERCPU_ARRAY(membership_cache, struct task_membership, 1);
BPF_ARRAY(membership_gen, u64, 1);
SHARED_TABLE("array", u32, u64, traced_gen, 1); /* written by user space only */

static __always_inline void membership_moved(void)
{
	u32 zero = 0;
	u64 *gen = membership_gen.lookup(&zero);

	if (gen)
		__sync_fetch_and_add(gen, 1);
}

TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
	membership_moved();
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	membership_moved();
	return 0;
}

/* current_traced() for sys_enter, through the cache. */
static __always_inline struct traced_cgroup *syscall_traced(u64 task, u64 *cgroup_id)
{
	u32 zero = 0;
	struct task_membership *cached = membership_cache.lookup(&zero);
	u64 *gen = membership_gen.lookup(&zero);
	u64 *tgen = traced_gen.lookup(&zero);
	struct traced_cgroup *found;
	u64 now, inserts;

	if (!cached || !gen || !tgen)
		return current_traced(cgroup_id);
	now = *(volatile u64 *)gen;
	if (cached->task != task || cached->gen != now) {
		cached->task = task;
		cached->gen = now;
		cached->untraced = 0;
		cached->cgroup_id =
			bpf_get_current_ancestor_cgroup_id(KUBEPODS_LEVEL) == KUBEPODS_ID ?
				bpf_get_current_cgroup_id() : 0;
	}
	if (!cached->cgroup_id)
		return NULL;
	inserts = *(volatile u64 *)tgen; /* read before the lookup: see above */
	if (cached->untraced == inserts + 1)
		return NULL;
	*cgroup_id = cached->cgroup_id;
	found = traced.lookup(cgroup_id);
	if (!found)
		cached->untraced = inserts + 1;
	return found;
}

static __always_inline int on_sys_enter(long nr, const void *src, u64 task)
{
	u64 cgroup_id;
	struct traced_cgroup *found = syscall_traced(task, &cgroup_id);
	struct traced_cgroup entry;

	if (!found)
		return 0;
	/* One copy, at once: the element may be reused by user space's next write. */
	__builtin_memcpy(&entry, found, sizeof(entry));
	if ((entry.mask & PROBE_SYSCALLS) && nr == NR_PRCTL &&
	    syscall_arg(src, 0) == PR_GET_PDEATHSIG && is_runc_init())
		on_marker(cgroup_id, entry.slot); /* before counting it: the call is the workload's */
	if (entry.mask & PROBE_SYSCALLS)
		count_syscall(cgroup_id, entry.slot, nr);
	if ((entry.mask & PROBE_OPEN) && nr == NR_OPENAT)
		on_open(cgroup_id, &entry, (const char *)syscall_arg(src, 1), syscall_arg(src, 2));
	else if ((entry.mask & PROBE_OPEN) && nr == NR_OPEN)
		on_open(cgroup_id, &entry, (const char *)syscall_arg(src, 0), syscall_arg(src, 1));
	else if ((entry.mask & PROBE_CONNECT) && nr == NR_CONNECT)
		on_connect(cgroup_id, &entry, (const void *)syscall_arg(src, 1), syscall_arg(src, 2));
	return 0;
}

#ifdef PT_REGS_DI_OFF
/* The raw tracepoint: sys_enter(struct pt_regs *regs, long id). No trace
 * record is built before the program runs, so every task outside kubepods
 * pays less than with the classic tracepoint. */
RAW_TRACEPOINT_PROBE(sys_enter)
{
	return on_sys_enter(ctx->args[1], (const void *)ctx->args[0], ctx->args[0]);
}
#else
TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
	return on_sys_enter(args->id, args->args, bpf_get_current_task());
}
#endif

/* ---- processes: sched:sched_process_exec / sched_process_exit ------------
 * exec format: __data_loc char[] filename; pid_t pid; pid_t old_pid.
 * exit format: char comm[16]; pid_t pid; int prio; (6.x:) bool group_dead.
 */

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	u64 cgroup_id;
	struct traced_cgroup *entry = current_traced(&cgroup_id);
	struct exec_event *event;

	if (!entry || !(entry->mask & PROBE_EXEC))
		return 0;
	event = events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		count_stat(STAT_RINGBUF_FULL);
		return 0;
	}
	fill_header(&event->hdr, EVENT_EXEC, cgroup_id);
	event->ppid = current_ppid();
	event->uid = bpf_get_current_uid_gid();
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	bpf_probe_read_kernel_str(event->filename, sizeof(event->filename),
				  (void *)args + (args->data_loc_filename & 0xFFFF));
	events.ringbuf_submit(event, 0);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 cgroup_id;
	struct traced_cgroup *entry;
	struct exit_event *event;

	/* One event per process: when its last thread exits. Without group_dead
	 * (older kernels) the thread-group leader's exit stands for it. */
#ifdef EXIT_HAS_GROUP_DEAD
	if (!args->group_dead)
		return 0;
#else
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((u32)pid_tgid != pid_tgid >> 32)
		return 0;
#endif
	entry = current_traced(&cgroup_id);
	if (!entry || !(entry->mask & PROBE_EXIT))
		return 0;
	event = events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		count_stat(STAT_RINGBUF_FULL);
		return 0;
	}
	fill_header(&event->hdr, EVENT_EXIT, cgroup_id);
	event->ppid = current_ppid();
	event->uid = bpf_get_current_uid_gid();
	event->exit_code = NO_EXIT_CODE;
#ifdef TASK_EXIT_CODE_OFF
	/* do_exit() sets tsk->exit_code before trace_sched_process_exit(). */
	bpf_probe_read_kernel(&event->exit_code, sizeof(event->exit_code),
			      (void *)(bpf_get_current_task() + TASK_EXIT_CODE_OFF));
#endif
	event->_pad = 0;
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	events.ringbuf_submit(event, 0);
	return 0;
}
