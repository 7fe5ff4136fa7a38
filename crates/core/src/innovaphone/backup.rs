//! Backups uploaded by devices: normalisation and retention, as the reference does them.
//! File access is the caller's; this module decides.

/// Remove the lines that change on every backup and would force a new file: call list
/// entries, `UPDATE/` variables, the `UP1` line, TLS tickets and empty lines. The rest is
/// joined with CRLF.
pub fn normalize(body: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in split_lines(body) {
        if line.is_empty() || volatile(line) {
            continue;
        }
        out.push(line);
    }
    out.join("\r\n")
}

fn split_lines(s: &str) -> Vec<&str> {
    // preg_split("/(\r\n|\n|\r)/")
    let mut v = Vec::new();
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                v.push(&s[start..i]);
                if i + 1 < bytes.len() && bytes[i + 1] == b'\n' {
                    i += 1;
                }
                start = i + 1;
            }
            b'\n' => {
                v.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    v.push(&s[start..]);
    v
}

fn volatile(line: &str) -> bool {
    if let Some(rest) = line.strip_prefix("mod cmd FLASHDIR0 add-item ") {
        // .*\)\(type=.*\(info=.*
        if let Some(p) = rest.find(")(type=") {
            return rest[p..].contains("(info=");
        }
        return false;
    }
    line.starts_with("vars create UPDATE/")
        || line.starts_with("config change UP1 /")
        || line.starts_with("vars create TLS0/TICKET/")
}

/// An existing backup file of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    /// Index `n` of `<hwid>.<n>.txt`.
    pub index: u64,
    /// Creation/change time used for ordering.
    pub ctime: i64,
}

/// Which backup files to delete after storing a new one: the oldest ones while the count
/// before saving is at least `nbackups`, sparing files younger than `minage_days`.
pub fn to_delete(
    existing_oldest_first: &[Stored],
    nbackups: u32,
    minage_days: u32,
    now: i64,
) -> Vec<String> {
    let t0 = now - minage_days as i64 * 86400;
    let mut out = Vec::new();
    let mut n = existing_oldest_first.len() as i64;
    let mut it = existing_oldest_first.iter();
    while n >= nbackups as i64 {
        n -= 1;
        match it.next() {
            Some(f) if f.ctime < t0 || minage_days == 0 => out.push(f.name.clone()),
            Some(_) => {}
            None => break,
        }
    }
    out
}

/// The file name index of `<hwid>.<n>.txt`.
pub fn index_of(name: &str, hwid: &str) -> Option<u64> {
    name.strip_prefix(hwid)?
        .strip_prefix('.')?
        .strip_suffix(".txt")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_volatile_lines() {
        let body = "config change CMD0 /name x\r\nvars create UPDATE/CHECK p 1\n\nconfig change UP1 /url x\rmod cmd FLASHDIR0 add-item 1 (a)(type=x)(info=y)\nvars create TLS0/TICKET/1 x\nconfig change PHONE SIG /coder G711\n";
        assert_eq!(
            normalize(body),
            "config change CMD0 /name x\r\nconfig change PHONE SIG /coder G711"
        );
    }

    #[test]
    fn retention_keeps_newest() {
        let files: Vec<Stored> = (0..10)
            .map(|i| Stored {
                name: format!("h.{i}.txt"),
                index: i,
                ctime: 100 + i as i64,
            })
            .collect();
        assert_eq!(to_delete(&files, 10, 0, 1000), vec!["h.0.txt".to_string()]);
        assert!(to_delete(&files[..5], 10, 0, 1000).is_empty());
        assert!(to_delete(&files, 10, 1, 200).is_empty());
        assert_eq!(index_of("h-1.12.txt", "h-1"), Some(12));
    }
}
