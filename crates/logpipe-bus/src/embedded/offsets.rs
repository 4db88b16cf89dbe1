//! Consumer-group progress in `ROOT/_offsets/<group>.json` (lag reporting
//! only: the lake's commit records hold the positions).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::segment::sync_dir;
use crate::{BusError, Result};

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
