//! `logpipe check` for the embedded bus: every batch of every segment read
//! and its checksum verified, without changing anything. A bad batch at the
//! end of a partition's last segment with nothing intact after it is a
//! crash's torn tail (never acknowledged; the next start cuts it); any
//! other bad batch is damage, reported with the file and the byte.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, BatchHeader, HEADER_BYTES};
use super::segment::intact_batch_after;

/// What a check of a bus directory found.
#[derive(Debug, Default)]
pub struct BusCheck {
    pub segments: u64,
    pub batches: u64,
    pub records: u64,
    /// Torn tails a crash left (harmless), one line each.
    pub torn_tails: Vec<String>,
    /// Damage, one line each with the file, the byte and what to do.
    pub damage: Vec<String>,
}

/// Checks every segment under `dir` (the bus directory: topic/partition/
/// NNNN.log).
pub fn check_bus_dir(dir: &Path) -> std::io::Result<BusCheck> {
    let mut report = BusCheck::default();
    if !dir.exists() {
        return Ok(report);
    }
    for topic in sorted_dirs(dir)? {
        for partition in sorted_dirs(&topic)? {
            let mut segments: Vec<PathBuf> = std::fs::read_dir(&partition)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            segments.sort();
            let last = segments.len().saturating_sub(1);
            for (n, segment) in segments.iter().enumerate() {
                check_segment(segment, n == last, &mut report)?;
            }
        }
    }
    Ok(report)
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('_'))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn check_segment(path: &Path, is_last: bool, report: &mut BusCheck) -> std::io::Result<()> {
    report.segments += 1;
    let file = File::open(path)?;
    let length = file.metadata()?.len();
    let base: u64 = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut pos = 0u64;
    let mut expected = base;
    while pos < length {
        let mut head = [0u8; HEADER_BYTES];
        let header = match file.read_exact_at(&mut head, pos) {
            Ok(()) => BatchHeader::decode(&head),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(e),
        };
        let valid = header.filter(|h| h.base_offset == expected && pos + h.total_bytes() <= length);
        let intact = match valid {
            Some(h) => {
                let mut batch = vec![0u8; h.total_bytes() as usize];
                file.read_exact_at(&mut batch, pos)?;
                format::verify_batch(&h, &batch).then_some(h)
            }
            None => None,
        };
        let Some(header) = intact else {
            let after = intact_batch_after(&file, pos, length, expected)?;
            match after {
                None if is_last => report.torn_tails.push(format!(
                    "{}: a torn tail of {} bytes from byte {pos} (a crash's, never acknowledged; the next start cuts it)",
                    path.display(),
                    length - pos
                )),
                _ => report.damage.push(format!(
                    "{}: damaged at byte {pos}{} — restore the file from a backup (logpipe will not start on it)",
                    path.display(),
                    after
                        .map(|at| format!(", intact records follow at byte {at}"))
                        .unwrap_or_default()
                )),
            }
            return Ok(());
        };
        report.batches += 1;
        report.records += u64::from(header.count);
        expected = header.next_offset();
        pos += header.total_bytes();
    }
    Ok(())
}
