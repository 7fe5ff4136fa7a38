//! Lenient column readers for rows coming back from SQLite or PostgreSQL.
//!
//! SQLite types are per value, not per column: a file edited by hand or by an older build may
//! hold text in an INTEGER column, a blob in a TEXT column, or NULL anywhere. These helpers read
//! what is there, convert where the meaning is unambiguous and otherwise fall back to "absent"
//! with a warning. They never fail and never panic. They do not know what the columns mean.

use sqlx::any::AnyRow;
use sqlx::Row;

/// An integer column; text holding a number is accepted, reals are truncated.
pub(crate) fn opt_i64(row: &AnyRow, table: &str, col: &str) -> Option<i64> {
    if let Ok(v) = row.try_get::<Option<i64>, _>(col) {
        return v;
    }
    if let Ok(Some(s)) = row.try_get::<Option<String>, _>(col) {
        let s = s.trim();
        if let Ok(v) = s.parse::<i64>() {
            return Some(v);
        }
        if let Some(v) = s.parse::<f64>().ok().and_then(real_to_i64) {
            return Some(v);
        }
        tracing::warn!(
            table,
            col,
            value = s,
            "ignoring non-numeric value in integer column"
        );
        return None;
    }
    if let Ok(Some(v)) = row.try_get::<Option<f64>, _>(col) {
        if let Some(v) = real_to_i64(v) {
            return Some(v);
        }
    }
    tracing::warn!(table, col, "ignoring unreadable value in integer column");
    None
}

/// An integer column that must have a value: absent or unreadable reads as 0.
pub(crate) fn i64_or_zero(row: &AnyRow, table: &str, col: &str) -> i64 {
    opt_i64(row, table, col).unwrap_or(0)
}

/// A text column; numbers are rendered as text and blobs decoded as (lossy) UTF-8.
pub(crate) fn opt_string(row: &AnyRow, table: &str, col: &str) -> Option<String> {
    if let Ok(v) = row.try_get::<Option<String>, _>(col) {
        return v;
    }
    if let Ok(Some(v)) = row.try_get::<Option<i64>, _>(col) {
        return Some(v.to_string());
    }
    if let Ok(Some(v)) = row.try_get::<Option<f64>, _>(col) {
        return Some(v.to_string());
    }
    if let Ok(Some(v)) = row.try_get::<Option<Vec<u8>>, _>(col) {
        return Some(String::from_utf8_lossy(&v).into_owned());
    }
    tracing::warn!(table, col, "ignoring unreadable value in text column");
    None
}

/// A text column that must have a value: absent reads as the empty string.
pub(crate) fn string_or_empty(row: &AnyRow, table: &str, col: &str) -> String {
    opt_string(row, table, col).unwrap_or_default()
}

fn real_to_i64(v: f64) -> Option<i64> {
    // `as` saturates; only accept values that fit so garbage does not become i64::MAX.
    if v.is_finite() && v >= i64::MIN as f64 && v <= i64::MAX as f64 {
        Some(v.trunc() as i64)
    } else {
        None
    }
}

/// Text as it is bound into a statement: NUL characters, which PostgreSQL cannot store in TEXT,
/// become U+FFFD on every backend, so both store (and look up) the same value.
pub(crate) fn nf<T: NulFree>(value: T) -> T::Out {
    value.nul_free()
}

/// Values [`nf`] accepts.
pub(crate) trait NulFree {
    type Out;
    fn nul_free(self) -> Self::Out;
}

fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}

impl NulFree for &str {
    type Out = String;
    fn nul_free(self) -> String {
        clean(self)
    }
}

impl NulFree for &String {
    type Out = String;
    fn nul_free(self) -> String {
        clean(self)
    }
}

impl NulFree for String {
    type Out = String;
    fn nul_free(self) -> String {
        clean(&self)
    }
}

impl NulFree for &Option<String> {
    type Out = Option<String>;
    fn nul_free(self) -> Option<String> {
        self.as_deref().map(clean)
    }
}
