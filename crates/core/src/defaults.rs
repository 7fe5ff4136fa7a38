//! The reference defaults of the innovaphone update server's `config.xml` (build 2033).

use crate::config::{Class, StdArg};

/// `<classes>` of the reference `config.xml`, in its order.
pub const CLASSES: &[(&str, &[&str])] = &[
    (
        "phone",
        &[
            "ip101", "ip102", "ip110", "ip110A", "ip111", "ip112", "ip150", "ip150A", "ip152",
            "ip153", "ip154", "ip200A", "ip200B", "ip222", "ip222A", "ip230", "ip230A", "ip232",
            "ip240", "ip240A", "ip241", "ip242", "ip72", "swphone", "mypbxi", "mypbxa",
        ],
    ),
    (
        "opus_phone",
        &["ip101", "ip102", "ip111", "ip112", "mypbxi", "mypbxa"],
    ),
    (
        "pre_opus_phone",
        &[
            "ip110", "ip110A", "ip150", "ip150A", "ip152", "ip153", "ip154", "ip200A", "ip200B",
            "ip230", "ip222", "ip222A", "ip232", "ip230A", "ip240", "ip240A", "ip241", "ip242",
            "ip72", "swphone",
        ],
    ),
    (
        "phone_oldui",
        &[
            "ip110", "ip110A", "ip150", "ip150A", "ip152", "ip153", "ip154", "ip200A", "ip200B",
            "ip230", "ip230A", "ip240", "ip240A", "ip241", "ip72",
        ],
    ),
    (
        "phone_newui",
        &[
            "ip101", "ip102", "ip111", "ip112", "ip222", "ip232", "ip242", "mypbxi", "mypbxa",
        ],
    ),
    ("mobile", &["mypbxi", "mypbxa"]),
    (
        "gw",
        &[
            "ipva", "ipvadect", "ip0010", "ip0011", "ip0013", "ip1060", "ip1130", "ip1200",
            "ip1201", "ip1202", "ip2000", "ip22", "ip24", "ip28", "ip29", "ip3000", "ip3010",
            "ip3011", "ip302", "ip305", "ip311", "ip38", "ip4001", "ip411", "ip6000", "ip6010",
            "ip6012", "ip6013", "ip800", "ip810", "ip811",
        ],
    ),
    ("fxogw", &["ip38", "ip311"]),
    (
        "fxsgw",
        &[
            "ip302", "ip22", "ip24", "ip28", "ip29", "ip29-2", "ip29-4", "ip311", "ip411",
        ],
    ),
    (
        "brigw",
        &[
            "ip302", "ip305", "ip400", "ip411", "ip800", "ip810", "ip811", "ip3010", "ip6010",
        ],
    ),
    (
        "prigw",
        &[
            "ip1060", "ip1130", "ip3010", "ip3011", "ip3000", "ip6000", "ip6010", "ip6012",
            "ip6013",
        ],
    ),
    (
        "pbx",
        &[
            "ipva", "ipvadect", "ip0010", "ip0011", "ip0013", "ip2000", "ip3000", "ip3010",
            "ip3011", "ip302", "ip305", "ip311", "ip411", "ip6000", "ip6010", "ip6012", "ip6013",
            "ip800", "ip810", "ip811",
        ],
    ),
];
pub const NOBOOTDEV: &[&str] = &[
    "ipva", "ipvadect", "swphone", "mypbxa", "mypbxi", "ipbs", "ipbs2", "pbl",
];
pub const NOFIRMDEV: &[&str] = &["swphone", "mypbxi", "ipbs", "ipbs2", "pbl"];
/// `<stdargs>`: key and placeholder (None = dropped).
pub const STDARGS: &[(&str, Option<&str>)] = &[
    ("sn", Some("#m")),
    ("type", Some("#t")),
    ("hwid", Some("#h")),
    ("ip", Some("#i")),
    ("PROT", None),
    ("PROTdate", None),
    ("BOOT", None),
    ("BOOTdate", None),
    ("BMC", None),
    ("BMCdate", None),
    ("CFG", None),
    ("CFGdate", None),
    ("SCFG", None),
    ("SCFGdate", None),
    ("CHECK", None),
    ("CHECKdate", None),
    ("CFG-BACKUP-NUM", None),
    ("CFG-BACKUP-NUMdate", None),
    ("ver", None),
];

pub fn default_classes() -> Vec<Class> {
    CLASSES
        .iter()
        .map(|(id, models)| Class {
            id: id.to_string(),
            models: models.iter().map(|m| m.to_string()).collect(),
        })
        .collect()
}

pub fn default_stdargs() -> Vec<StdArg> {
    STDARGS
        .iter()
        .map(|(k, v)| StdArg {
            key: k.to_string(),
            value: v.map(|s| s.to_string()),
        })
        .collect()
}
