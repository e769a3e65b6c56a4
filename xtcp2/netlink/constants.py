"""Numbers from linux/netlink.h, linux/sock_diag.h and linux/inet_diag.h."""
import socket

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_NETNS_COOKIE = 71

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH

NLMSG_HDRLEN = 16
INET_DIAG_REQ_V2_LEN = 56
INET_DIAG_MSG_LEN = 72

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

# rtattr types in an inet_diag reply
INET_DIAG_MEMINFO = 1
INET_DIAG_INFO = 2
INET_DIAG_VEGASINFO = 3
INET_DIAG_CONG = 4
INET_DIAG_TOS = 5
INET_DIAG_TCLASS = 6
INET_DIAG_SKMEMINFO = 7
INET_DIAG_SHUTDOWN = 8
INET_DIAG_DCTCPINFO = 9
INET_DIAG_PROTOCOL = 10
INET_DIAG_SKV6ONLY = 11
INET_DIAG_MARK = 15
INET_DIAG_BBRINFO = 16
INET_DIAG_CLASS_ID = 17
INET_DIAG_CGROUP_ID = 21
INET_DIAG_SOCKOPT = 22
INET_DIAG_MAX_TYPE = 32

# idiag_ext request bits: bit (type - 1) asks for attribute `type` (types 1..8 only).
# VEGASINFO's bit also makes the kernel send BBRINFO / DCTCPINFO (tcp_cc_info union);
# TCLASS's bit also sends CLASS_ID; CGROUP_ID and SOCKOPT come unasked.
EXT_BIT = {t: 1 << (t - 1) for t in range(1, 9)}

# -deserializers key -> request bits it needs and attribute types it decodes
DESERIALIZER_ATTRS = {
    "meminfo": (EXT_BIT[INET_DIAG_MEMINFO], (INET_DIAG_MEMINFO,)),
    "info": (EXT_BIT[INET_DIAG_INFO], (INET_DIAG_INFO,)),
    "vegas": (EXT_BIT[INET_DIAG_VEGASINFO], (INET_DIAG_VEGASINFO,)),
    "cong": (EXT_BIT[INET_DIAG_CONG], (INET_DIAG_CONG,)),
    "tos": (EXT_BIT[INET_DIAG_TOS], (INET_DIAG_TOS,)),
    "tc": (EXT_BIT[INET_DIAG_TCLASS], (INET_DIAG_TCLASS,)),
    "skmem": (EXT_BIT[INET_DIAG_SKMEMINFO], (INET_DIAG_SKMEMINFO,)),
    "shut": (EXT_BIT[INET_DIAG_SHUTDOWN], (INET_DIAG_SHUTDOWN,)),
    "dctcp": (EXT_BIT[INET_DIAG_VEGASINFO], (INET_DIAG_DCTCPINFO,)),
    "bbr": (EXT_BIT[INET_DIAG_VEGASINFO], (INET_DIAG_BBRINFO,)),
    "classid": (EXT_BIT[INET_DIAG_TCLASS], (INET_DIAG_CLASS_ID,)),
    "cgroup": (0, (INET_DIAG_CGROUP_ID,)),
    "sockopt": (0, (INET_DIAG_SOCKOPT,)),
}

# TCP states (include/net/tcp_states.h)
TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
    11: "CLOSING", 12: "NEW_SYN_RECV", 13: "BOUND_INACTIVE",
}
ALL_STATES = 0xFFFFFFFF


def ext_mask(deserializers) -> int:
    mask = 0
    for d in deserializers:
        mask |= DESERIALIZER_ATTRS[d][0]
    return mask


def wanted_attrs(deserializers) -> frozenset[int]:
    return frozenset(t for d in deserializers for t in DESERIALIZER_ATTRS[d][1])
