//! Consumer-group progress in `ROOT/_offsets/<group>.json` (lag reporting
//! only: the lake's commit records hold the positions).

//! The embedded bus: a partitioned append-only log on local disk.
//!
//! Layout: `ROOT/<topic>/topic.json` (partition count) and
//! `ROOT/<topic>/<partition>/<base_offset:020>.log` segment files in the
//! [`crate::format`] batch format; consumer-group progress in
//! `ROOT/_offsets/<group>.json`; `ROOT/.lock` keeps a second process out.
//!
//! One writer thread owns every file handle that is written. Appends reach it
//! through a bounded queue (full → [`BusError::Busy`], which the collector
//! turns into 503 + `Retry-After`). It takes whatever requests are waiting,
//! writes one batch per partition, fsyncs each touched file once for the
//! whole group (group commit), and only then makes the records visible to
//! readers and acknowledges the requests. Readers therefore never see a
//! record that a crash could take back, so nothing downstream gets ahead of
//! the disk. With `FsyncMode::Interval` requests are acknowledged once
//! written and become visible at the next periodic fsync.
//!
//! Recovery at open scans the active segment, checks each batch's CRC and
//! truncates at the first torn or corrupt batch: such a batch was never
//! acknowledged, so truncating it loses nothing that was promised.

use crate::embedded::segment::sync_dir;
use crate::{BusError, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| BusError::io(dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).map_err(|e| BusError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| BusError::io(&tmp, e))?;
    file.sync_all().map_err(|e| BusError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| BusError::io(path, e))?;
    sync_dir(dir)
}
