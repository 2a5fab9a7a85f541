/* podtrace wire format: the records the BPF program writes to the ring buffer
 * and the maps user space programs. Included by the BPF sources and compiled
 * by the layout test with the host's cc; the Python side reads the #defines of
 * this file (wire.py) and mirrors the structs field by field, and
 * tests/kernel/test_bpf_layout.py checks sizes and offsets so the two never
 * drift. Keep one `#define NAME <number>` per line: wire.py parses them.
 */
#ifndef PODTRACE_EVENTS_H
#define PODTRACE_EVENTS_H

#include <linux/types.h>

/* Probe bits: mirror podtrace_api.nodeconfig.Probe. */
#define PROBE_SYSCALLS 0x1
#define PROBE_EXEC 0x2
#define PROBE_EXIT 0x4
#define PROBE_OPEN 0x8
#define PROBE_CONNECT 0x10

/* event_header.type */
#define EVENT_EXEC 1
#define EVENT_EXIT 2
#define EVENT_OPEN 3
#define EVENT_CONNECT 4
#define EVENT_CGROUP_MKDIR 5
#define EVENT_CGROUP_RMDIR 6
#define EVENT_MARKER 7 /* the container runtime's last set-up step (backend.WorkloadMarker) */

/* The workload marker: prctl(PR_GET_PDEATHSIG) by runc's init process. */
#define PR_GET_PDEATHSIG 2
#define RUNC_INIT_COMM "runc:[2:INIT]"

#define TASK_COMM_LEN 16
#define MAX_FILENAME 256
#define MAX_OPEN_PATH 256
#define MAX_CGROUP_PATH 1024 /* the kernel's TRACE_CGROUP_PATH_LEN */
#define MAX_PREFIXES 8
#define PREFIX_MAX 64
#define MAX_PORTS 16
/* Counter columns per traced cgroup: x86_64 syscall numbers end below 470;
 * anything at or above the last column is counted in it (x32, unknown). */
#define NR_SYSCALLS_MAX 512
#define NO_SLOT 0xffffffff
#define NO_EXIT_CODE -1

/* traced_cgroup.flags */
#define TRACED_AUTO 0x1 /* inserted by the cgroup_mkdir hook */

/* Indexes of the `stats` array (shared by all CPUs, atomic adds). */
#define STAT_RINGBUF_FULL 0 /* an event was lost: ring buffer reservation failed */
#define STAT_NO_SLOT 1      /* a new container cgroup found no free counter row */
#define STAT_TRACED_FULL 2  /* a new container cgroup found the traced map full */
#define STAT_FOREIGN_ROW 3  /* a syscall not counted: its entry's row belongs to another cgroup */
#define STAT_UNRECORDED 4   /* a cgroup_rmdir not recorded in `removed` (map update failed) */
#define NR_STATS 8

/* Indexes of the `header` array: what a restarted agent reads of pinned maps
 * before anything else (u64 values, the same in every layout). */
#define HEADER_READY 0  /* 1 once user space filled free_slots */
#define HEADER_STARTS 1 /* agents that started on these maps */
#define HEADER_TAG_0 2  /* reported_0 holds what the status of this tag (its
                         * lastHeartbeatTime, in microseconds) counted */
#define HEADER_TAG_1 3
#define HEADER_POS_0 4  /* the ring buffer's consumer position when that status was built */
#define HEADER_POS_1 5
#define NR_HEADER 8

/* Value of the `traced` map (key: cgroup2 id). */
struct traced_cgroup {
	__u32 mask;          /* PROBE_* */
	__u32 slot;          /* row of the `counts` array */
	__u32 open_prefixes; /* bit i: `open_prefix[i]` applies; 0: every path */
	__u32 connect_ports; /* bit i: `connect_port[i]` applies; 0: every port */
	__u32 flags;         /* TRACED_* */
	__u32 _pad;
};

/* Value of the `open_prefix` array. */
struct open_prefix {
	__u32 len;
	char str[PREFIX_MAX];
};

struct event_header {
	__u32 type;         /* EVENT_* */
	__u32 pid;          /* tgid of the current task */
	__u64 cgroup_id;    /* the task's cgroup2 id; cgroup events: that cgroup */
	__u64 timestamp_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};

struct exec_event {
	struct event_header hdr;
	__u32 ppid; /* real_parent->tgid; 0 if unknown */
	__u32 uid;
	char comm[TASK_COMM_LEN];
	char filename[MAX_FILENAME];
};

struct exit_event {
	struct event_header hdr;
	__u32 ppid;
	__u32 uid;
	__s32 exit_code; /* wait(2) status, or NO_EXIT_CODE */
	__u32 _pad;
	char comm[TASK_COMM_LEN];
};

struct open_event {
	struct event_header hdr;
	__s32 flags;
	__u32 _pad;
	char comm[TASK_COMM_LEN];
	char path[MAX_OPEN_PATH];
};

struct connect_event {
	struct event_header hdr;
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 port;   /* host byte order */
	__u32 _pad;
	__u8 addr[16]; /* 4 bytes for AF_INET */
	char comm[TASK_COMM_LEN];
};

/* A traced cgroup's counter row when the marker ran (before counting it). */
struct marker_event {
	struct event_header hdr;
	__u32 slot;
	__u32 _pad;
	__u64 counts[NR_SYSCALLS_MAX];
};

struct cgroup_event {
	struct event_header hdr;
	__s32 level;
	__u32 slot; /* counter row when auto-traced, else NO_SLOT */
	char path[MAX_CGROUP_PATH];
};

#endif /* PODTRACE_EVENTS_H */
