// The ServOS mesh classifier: a tc (clsact/tcx) ingress program on the WireGuard mesh
// interface. Packets arriving there were just decrypted from a peer; the program lets
// through only those the mesh policy allows and drops (and counts) everything else.
//
// Built by crates/servos-agent/build.rs with `clang -target bpf -O2` (feature `ebpf`);
// loaded and attached by crates/servos-agent/src/classifier.rs before the privilege drop.
// Self-contained on purpose: only <linux/*.h> UAPI headers, no libbpf.
//
// Policy: hash map `policy`, key = (src mesh IPv4, dst mesh IPv4 or 0 for "any",
// dst port, IP protocol), value = 1. A packet passes when
//   - a rule matches (src, dst, dport, proto) or (src, any, dport, proto); or
//   - it is the reply direction of an allowed flow: a rule matches
//     (dst, src, sport, proto) or (dst, any, sport, proto), and for TCP the packet is not
//     a bare SYN (a peer cannot open connections by claiming a source port).
// ICMP uses port 0. Everything else (non-IPv4 included) is dropped.
// Counters: per-CPU array `counters`, index 0 = dropped, 1 = passed.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/if_ether.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

struct policy_key {
    __u32 src;     // network byte order
    __u32 dst;     // network byte order, 0 = any mesh address
    __u16 port;    // host byte order
    __u8 proto;
    __u8 pad;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct policy_key);
    __type(value, __u8);
} policy SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

static __always_inline int allowed(__u32 src, __u32 dst, __u16 port, __u8 proto)
{
    struct policy_key key = { .src = src, .dst = dst, .port = port, .proto = proto, .pad = 0 };
    if (bpf_map_lookup_elem(&policy, &key))
        return 1;
    key.dst = 0;
    return bpf_map_lookup_elem(&policy, &key) != 0;
}

static __always_inline int verdict(int pass)
{
    __u32 index = pass ? 1 : 0;
    __u64 *count = bpf_map_lookup_elem(&counters, &index);
    if (count)
        *count += 1;
    return pass ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("classifier")
int mesh_ingress(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct iphdr *ip = data; // a TUN device carries bare IP packets, no Ethernet header

    if (skb->protocol != __constant_htons(ETH_P_IP))
        return verdict(0);
    if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
        return verdict(0);

    __u32 src = ip->saddr, dst = ip->daddr;
    __u8 proto = ip->protocol;
    void *l4 = data + ip->ihl * 4;

    if (proto == IPPROTO_ICMP)
        return verdict(allowed(src, dst, 0, proto) || allowed(dst, src, 0, proto));
    // Later fragments carry no ports: drop them (the mesh MTU avoids fragmentation).
    if (ip->frag_off & __constant_htons(0x1fff))
        return verdict(0);
    if (proto == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > data_end)
            return verdict(0);
        __u16 sport = __builtin_bswap16(tcp->source), dport = __builtin_bswap16(tcp->dest);
        if (allowed(src, dst, dport, proto))
            return verdict(1);
        int bare_syn = tcp->syn && !tcp->ack;
        return verdict(!bare_syn && allowed(dst, src, sport, proto));
    }
    if (proto == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > data_end)
            return verdict(0);
        __u16 sport = __builtin_bswap16(udp->source), dport = __builtin_bswap16(udp->dest);
        return verdict(allowed(src, dst, dport, proto) || allowed(dst, src, sport, proto));
    }
    return verdict(0);
}

char _license[] SEC("license") = "GPL";
