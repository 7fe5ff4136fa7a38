//! Per-device state: everything the reference keeps in its `status/<sn>.xml`.
//!
//! Plain data; persistence lives in `autoprov-store`, decisions in [`crate::innovaphone`].
//! Times are Unix epoch seconds.

use serde::{Deserialize, Serialize};

/// The most messages kept per device (see [`DeviceState::prune_msgs`]).
pub const MAX_MESSAGES: usize = 200;
/// How far back [`DeviceState::add_msg`] looks for a text to share.
const INTERN_WINDOW: usize = 64;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceState {
    /// Serial as the device sent it (`00-90-33-30-00-af`); the primary key.
    pub sn: String,
    /// Last contact.
    pub seen: i64,
    /// Phase written into the device's URL by the last rewrite (`state@phase`).
    pub phase: Option<String>,
    pub nextphase: Option<String>,
    /// Set when the next poll must only run queries (`state@skipnext`).
    pub skipnext: Option<i64>,
    /// The reference's quirk: the boot code request (`<build>bootcode`) lands here.
    pub requested: Option<String>,
    pub device: DeviceInfo,
    pub firmware: FirmwareState,
    pub bootcode: BootState,
    pub msgs: Vec<Message>,
    /// Scripts delivered, by file name.
    pub scripts: Vec<DeliveredScript>,
    /// Query results stored by `mode=query`.
    pub queries: Vec<QueryResult>,
    /// Vendor id of a non-innovaphone device (`yealink`, `snom`, ...); such devices are keyed
    /// by their normalised MAC (`001565aabbcc`) as `sn`.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Model as the vendor module names it (`T46S`, `D785`).
    #[serde(default)]
    pub model: Option<String>,
    /// First contact (Unix seconds), when recorded.
    #[serde(default)]
    pub first_seen: Option<i64>,
    /// The newest message another process appended while this state was held elsewhere
    /// (the store's `device_notes`) that `msgs` already contains; bookkeeping of the store,
    /// not part of the device's state.
    #[serde(skip)]
    pub notes_upto: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceInfo {
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    /// Classes joined by `, ` as the reference stores them.
    pub classes: Option<String>,
    /// Address the request came from (first `X-Forwarded-For` entry when proxied).
    pub ip: Option<String>,
    /// Whether the request came through a reverse proxy.
    pub rp: bool,
    pub proxy: Option<String>,
    /// The device's own address (`ip` argument, `#i`).
    pub realip: Option<String>,
    pub hwid: Option<String>,
    pub phase: Option<String>,
    /// Environments joined by `, `.
    pub environments: Option<String>,
    /// Time of the last stored backup.
    pub backup: Option<i64>,
    pub certstat: Option<String>,
    pub request_downloaded: Option<String>,
    /// `var-<name>` upload stamps from `mode=vardump`.
    pub vars: Vec<(String, i64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FirmwareState {
    /// Build the device reported (`PROT`).
    pub build: Option<String>,
    pub requested: Option<String>,
    pub requested_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BootState {
    /// Boot code the device reported (`BOOT`).
    pub build: Option<String>,
    pub requested_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub time: i64,
    /// Empty = a ruler that starts a new request. Shared text: a state (and its log of up to
    /// [`MAX_MESSAGES`] lines) is copied on every poll, the lines themselves never are.
    pub msg: std::sync::Arc<str>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveredScript {
    pub filename: String,
    pub delivered: i64,
    /// Modification time of the delivered file.
    pub version: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueryResult {
    pub id: String,
    pub seen: i64,
    /// The XML text the device sent.
    pub body: String,
}

impl DeviceState {
    pub fn new(sn: &str, now: i64) -> DeviceState {
        DeviceState {
            sn: sn.to_string(),
            seen: now,
            ..Default::default()
        }
    }

    pub fn query(&self, id: &str) -> Option<&QueryResult> {
        self.queries.iter().find(|q| q.id == id)
    }

    /// Store a query result, replacing an older one with the same id.
    pub fn set_query(&mut self, id: &str, body: &str, now: i64) {
        self.queries.retain(|q| q.id != id);
        self.queries.push(QueryResult {
            id: id.to_string(),
            seen: now,
            body: body.to_string(),
        });
    }

    pub fn add_msg(&mut self, msg: &str, now: i64) {
        // A poll logs the texts of the poll before: share the text with its last use, so a
        // log holds a handful of distinct texts however long it is (and writing it out
        // compares pointers, not strings).
        let msg = self
            .msgs
            .iter()
            .rev()
            .take(INTERN_WINDOW)
            .find(|m| &*m.msg == msg)
            .map_or_else(|| msg.into(), |m| m.msg.clone());
        self.msgs.push(Message { time: now, msg });
    }

    pub fn set_var_stamp(&mut self, name: &str, now: i64) {
        self.device.vars.retain(|(n, _)| n != name);
        self.device.vars.push((name.to_string(), now));
    }

    /// Record a delivered script (`<config filename delivered version>`).
    pub fn delivered(&mut self, filename: &str, now: i64, version: i64) {
        if let Some(s) = self.scripts.iter_mut().find(|s| s.filename == filename) {
            s.delivered = now;
            s.version = version;
        } else {
            self.scripts.push(DeliveredScript {
                filename: filename.to_string(),
                delivered: now,
                version,
            });
        }
    }

    /// Drop old messages as the reference does: everything up to the last message older than
    /// `logkeep`, but never the last ruler (the start of the newest request). Beyond the
    /// reference, at most [`MAX_MESSAGES`] are kept (the oldest go first): a device polling
    /// fast would otherwise grow its log, and the cost of every state write, without bound.
    pub fn prune_msgs(&mut self, now: i64, logkeep: i64) {
        self.prune_by_age(now, logkeep);
        if self.msgs.len() > MAX_MESSAGES {
            let extra = self.msgs.len() - MAX_MESSAGES;
            self.msgs.drain(..extra);
        }
    }

    fn prune_by_age(&mut self, now: i64, logkeep: i64) {
        let veryold = now - logkeep;
        let mut lastruler = 0usize;
        let mut lastold = 0usize;
        for (i, m) in self.msgs.iter().enumerate() {
            if m.msg.is_empty() {
                lastruler = i;
            } else if m.time < veryold {
                lastold = i;
            }
        }
        let mut remove = 0usize;
        while remove < self.msgs.len() && remove <= lastold && remove < lastruler {
            remove += 1;
        }
        self.msgs.drain(..remove);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_pruned_by_age_and_capped() {
        let mut st = DeviceState::new("x", 0);
        for t in 0..10 {
            st.add_msg("", t * 100);
            st.add_msg("note", t * 100);
        }
        // logkeep 250 at t=1000: everything before the last old message goes, the newest
        // request (the last ruler) stays.
        st.prune_msgs(1000, 250);
        assert_eq!(st.msgs.first().map(|m| m.time), Some(800));
        for t in 0..(MAX_MESSAGES as i64 * 2) {
            st.add_msg("note", 1000 + t);
        }
        st.prune_msgs(1000, 1_000_000);
        assert_eq!(st.msgs.len(), MAX_MESSAGES);
        assert_eq!(
            st.msgs.last().map(|m| m.time),
            Some(1000 + MAX_MESSAGES as i64 * 2 - 1)
        );
    }

    #[test]
    fn repeated_texts_share_one_allocation() {
        let mut st = DeviceState::new("x", 0);
        for t in 0..5 {
            st.add_msg("", t);
            st.add_msg("CHECK good", t);
            st.add_msg(&format!("poll {t}"), t);
        }
        let texts: Vec<&str> = st.msgs.iter().map(|m| &*m.msg).collect();
        assert_eq!(&texts[..4], ["", "CHECK good", "poll 0", ""]);
        let checks: Vec<_> = st.msgs.iter().filter(|m| &*m.msg == "CHECK good").collect();
        assert_eq!(checks.len(), 5);
        assert!(checks
            .iter()
            .all(|m| std::sync::Arc::ptr_eq(&m.msg, &checks[0].msg)));
        // Distinct texts stay distinct.
        assert_eq!(&*st.msgs[14].msg, "poll 4");
    }
}
