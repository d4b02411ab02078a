//! `.tar.gz` bundles: deterministic packing and defensive unpacking.

use super::BundleFiles;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::io::Read;

/// Most bytes an unpacked bundle may hold (guards against gzip bombs).
pub(super) const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// Pack files into a `.tar.gz` whose bytes depend only on the files (sorted
/// names, zero timestamps, fixed modes), so the same bundle always has the
/// same digest and signature.
pub fn pack(files: &BundleFiles) -> std::io::Result<Vec<u8>> {
    let encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.mode(tar::HeaderMode::Deterministic);
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, bytes.as_slice())?;
    }
    builder.into_inner()?.finish()
}

/// Unpack a `.tar.gz` bundle. Only regular files are taken; absolute paths
/// and `..` are refused; a single top-level directory is stripped.
pub fn unpack(bytes: &[u8]) -> Result<BundleFiles, String> {
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    let mut files = BundleFiles::new();
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| format!("corrupt archive entry name: {e}"))?
            .to_string_lossy()
            .into_owned();
        let name = path.trim_start_matches("./").to_owned();
        if name.starts_with('/') || name.split('/').any(|part| part == "..") {
            return Err(format!("archive entry {path:?} escapes the bundle"));
        }
        if !kind.is_file() {
            return Err(format!("archive entry {path:?} is not a regular file"));
        }
        total += entry.size();
        if total > MAX_TOTAL_BYTES {
            return Err(format!(
                "archive unpacks to more than {MAX_TOTAL_BYTES} bytes"
            ));
        }
        let mut content = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut content)
            .map_err(|e| format!("corrupt archive entry {path:?}: {e}"))?;
        files.insert(name, content);
    }
    if files.is_empty() {
        return Err("archive holds no files".into());
    }
    if !files.contains_key("bundle.json") {
        files = strip_single_top_directory(files);
    }
    // Keep to the bundle layout, as a directory read does.
    files.retain(|name, _| {
        name == "bundle.json"
            || name == ".signatures.json"
            || ((name.starts_with("policies/") || name.starts_with("tests/"))
                && name.ends_with(".json")
                && name.matches('/').count() == 1)
    });
    Ok(files)
}

fn strip_single_top_directory(files: BundleFiles) -> BundleFiles {
    let tops: std::collections::BTreeSet<&str> = files
        .keys()
        .filter_map(|name| name.split_once('/').map(|(top, _)| top))
        .collect();
    if tops.len() != 1 || files.keys().any(|n| !n.contains('/')) {
        return files;
    }
    files
        .into_iter()
        .filter_map(|(name, content)| {
            name.split_once('/')
                .map(|(_, rest)| (rest.to_owned(), content))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_is_deterministic_and_round_trips() {
        let mut files = BundleFiles::new();
        files.insert("bundle.json".into(), b"{}".to_vec());
        files.insert("policies/a.json".into(), b"[1]".to_vec());
        let a = pack(&files).unwrap();
        let b = pack(&files).unwrap();
        assert_eq!(a, b);
        assert_eq!(unpack(&a).unwrap(), files);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(unpack(b"definitely not gzip").is_err());
    }
}
