//! Reading small files that users point us at (keys, tokens, configs), with a size bound so that a
//! wrong path (a log, a device) fails fast instead of filling memory.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

/// Key and token files: a few hundred bytes at most.
pub const SECRET_FILE_LIMIT: u64 = 4096;
/// Config files.
pub const CONFIG_FILE_LIMIT: u64 = 1024 * 1024;

/// Reads `path` as UTF-8, failing when it is larger than `limit` bytes. The buffer is zeroed on
/// drop, since these files hold secrets.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)?.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes; is this the right file?"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_files_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x".repeat(10)).unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap().as_str(), "x".repeat(10));
        assert!(read_bounded(&path, 9).unwrap_err().to_string().contains("larger than 9 bytes"));
        #[cfg(unix)]
        assert!(read_bounded(Path::new("/dev/zero"), 100).is_err());
    }
}
