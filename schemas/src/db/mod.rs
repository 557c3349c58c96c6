//! Database entities and migrations (SeaORM), for SQLite and PostgreSQL alike.
//!
//! Declarations only: the engine connects and runs [`migration::Migrator`] at start-up.
//! Every table that belongs to a workspace carries `workspace_id`.
//!
//! - [`entities`] has one module per table (`Model`, `ActiveModel`, `Entity`, `Column`,
//!   `Relation`) and the status enums, stored as short strings.
//! - [`migration`] creates those tables, their unique keys and indexes, and the `default`
//!   workspace ([`DEFAULT_WORKSPACE_ID`]).

pub mod entities;
pub mod migration;

use std::fmt::Write as _;
use std::path::Path;

use uuid::Uuid;

/// Id of the `default` workspace that the initial migration creates.
///
/// A fixed, well-known value so every process and every database agree on it without a lookup.
pub const DEFAULT_WORKSPACE_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001);

/// A SQLite URL for a database file, created when missing.
///
/// The driver percent-decodes the path and ends it at the first `?`, so `%`, `?` and `#` in
/// the path are escaped. A path that is not UTF-8 is escaped byte for byte rather than
/// replaced lossily: connecting then fails with a clear error instead of opening another file.
///
/// ```
/// use std::path::Path;
///
/// assert_eq!(
///     schemas::db::sqlite_url(Path::new("/var/lib/switchyard/state.db")),
///     "sqlite:///var/lib/switchyard/state.db?mode=rwc",
/// );
/// assert_eq!(
///     schemas::db::sqlite_url(Path::new("/tmp/is this 100%?.db")),
///     "sqlite:///tmp/is this 100%25%3F.db?mode=rwc",
/// );
/// ```
pub fn sqlite_url(path: &Path) -> String {
    let utf8 = path.to_str().is_some();
    let mut url = String::from("sqlite://");
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if matches!(byte, b'%' | b'?' | b'#') || (!utf8 && !byte.is_ascii()) {
            url.push_str(&String::from_utf8_lossy(&bytes[start..i]));
            // Writing to a String cannot fail.
            let _ = write!(url, "%{byte:02X}");
            start = i + 1;
        }
    }
    url.push_str(&String::from_utf8_lossy(&bytes[start..]));
    url.push_str("?mode=rwc");
    url
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn default_workspace_id_is_a_v7_uuid() {
        assert_eq!(DEFAULT_WORKSPACE_ID.get_version_num(), 7);
        assert_eq!(
            DEFAULT_WORKSPACE_ID.to_string(),
            "00000000-0000-7000-8000-000000000001"
        );
    }

    #[test]
    fn sqlite_url_keeps_plain_and_unicode_paths_readable() {
        assert_eq!(
            sqlite_url(Path::new("relative/dir/sw.db")),
            "sqlite://relative/dir/sw.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url(Path::new("/home/zoë/sw.db")),
            "sqlite:///home/zoë/sw.db?mode=rwc"
        );
    }

    #[test]
    fn sqlite_url_escapes_what_the_driver_would_misread() {
        assert_eq!(
            sqlite_url(Path::new("/a#b/c?d%e.db")),
            "sqlite:///a%23b/c%3Fd%25e.db?mode=rwc"
        );
    }

    #[cfg(unix)]
    #[test]
    fn sqlite_url_escapes_a_non_utf8_path_byte_for_byte() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        let path = Path::new(OsStr::from_bytes(b"/tmp/\xFF.db"));
        assert_eq!(sqlite_url(path), "sqlite:///tmp/%FF.db?mode=rwc");
    }
}
