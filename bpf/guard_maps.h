/* bpf/guard_maps.h — the packet guard's maps; their keys, values and contracts live in include/openclaw/guard.h. */
#ifndef OPENCLAW_BPF_GUARD_MAPS_H
#define OPENCLAW_BPF_GUARD_MAPS_H

/* Live configuration. Agent writes (any time), XDP reads per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
} guard_cfg SEC(".maps");

/* Protected (protocol, port) bitmap, 64 ports a word. Agent writes, XDP reads. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_PORT_KEYS);
	__type(key, __u32);
	__type(value, __u64);
} guard_ports SEC(".maps");

/* IPv4 allowlist prefixes with expiry. Agent writes, XDP reads; beats the blocklist. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GUARD_LIST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm4_key);
	__type(value, struct guard_list_val);
} guard_allow4 SEC(".maps");

/* IPv6 allowlist prefixes with expiry. Agent writes, XDP reads. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GUARD_LIST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm6_key);
	__type(value, struct guard_list_val);
} guard_allow6 SEC(".maps");

/* IPv4 blocklist prefixes with expiry. Agent writes (config, clawctl, auto-ban), XDP reads. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GUARD_LIST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm4_key);
	__type(value, struct guard_list_val);
} guard_block4 SEC(".maps");

/* IPv6 blocklist prefixes with expiry. Agent writes, XDP reads. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GUARD_LIST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct guard_lpm6_key);
	__type(value, struct guard_list_val);
} guard_block6 SEC(".maps");

/* Per-source SYN (new TCP connection) buckets. XDP writes; agent may read or delete. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GUARD_SRC_MAX_ENTRIES);
	__type(key, struct guard_src_key);
	__type(value, struct guard_bucket);
} guard_syn_tb SEC(".maps");

/* Per-source packet buckets. XDP writes; agent may read or delete. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GUARD_SRC_MAX_ENTRIES);
	__type(key, struct guard_src_key);
	__type(value, struct guard_bucket);
} guard_pkt_tb SEC(".maps");

/* Packets and bytes per verdict reason, per CPU. XDP writes, agent sums and reads. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GUARD_R_MAX);
	__type(key, __u32);
	__type(value, struct guard_stat);
} guard_stats SEC(".maps");

/* Global drop-sample budget and tallies. XDP writes, agent reads. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_sampler);
} guard_evt_tb SEC(".maps");

/* Sampled drops (struct guard_event). XDP produces, agent consumes. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GUARD_EVENTS_BYTES);
} guard_events SEC(".maps");

#endif
