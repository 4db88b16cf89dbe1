//! Derived policy: the choices that follow from several settings at once,
//! made here and nowhere else, so the binary and the runtime crates only
//! read the answer.

use std::path::PathBuf;

use crate::{BusKind, Config, RecordEncoding};

/// Consumer group of the raw→lake job on the embedded bus (lag reporting
/// only: the lake's commit records hold the positions).
pub const EMBEDDED_RAW_GROUP: &str = "logpipe-lake";
/// Consumer group under which the window job reports its progress.
pub const WINDOWS_GROUP: &str = "logpipe-windows";

/// The configuration with every derived choice made.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    /// The embedded bus's directory: `bus.embedded.dir`, else `DATA_DIR/bus`.
    pub bus_dir: PathBuf,
    /// The lake root: `lake.root` (a directory or URL), else `DATA_DIR`.
    pub lake_root: String,
    /// Whether the collector gives each log record its window fields as a
    /// header. `windows.summary_header` when set; else on with the embedded
    /// bus and off with Kafka, where librdkafka allocates for every header
    /// on both sides and that cost more than the parse it saves
    /// (docs/benchmarks/log.md, session 5). Never without the window job, which alone
    /// reads it.
    pub summary_header: bool,
    /// Whether the collector writes records in binary form: on the
    /// embedded bus unless `bus.embedded.record_encoding = "json"`; never
    /// on Kafka, whose other clients read JSON.
    pub binary_records: bool,
    /// The raw→lake job's consumer group: `bus.kafka.group` on Kafka, whose
    /// members share the partitions; [`EMBEDDED_RAW_GROUP`] on the embedded
    /// bus.
    pub raw_group: String,
}

impl Config {
    /// Makes the derived choices (see [`Resolved`]).
    pub fn resolve(self) -> Resolved {
        let bus_dir = self
            .bus
            .embedded
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("bus"));
        let lake_root = self
            .lake
            .root
            .clone()
            .unwrap_or_else(|| self.data_dir.display().to_string());
        let summary_header = self.windows.enabled
            && self
                .windows
                .summary_header
                .unwrap_or(self.bus.kind == BusKind::Embedded);
        let binary_records = self.bus.kind == BusKind::Embedded
            && self.bus.embedded.record_encoding == RecordEncoding::Binary;
        let raw_group = match self.bus.kind {
            BusKind::Embedded => EMBEDDED_RAW_GROUP.to_string(),
            BusKind::Kafka => self.bus.kafka.group.clone(),
        };
        Resolved {
            config: self,
            bus_dir,
            lake_root,
            summary_header,
            binary_records,
            raw_group,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_follow_data_dir_unless_set() {
        let mut config = Config {
            data_dir: PathBuf::from("/srv/lp"),
            ..Config::default()
        };
        let resolved = config.clone().resolve();
        assert_eq!(resolved.bus_dir, PathBuf::from("/srv/lp/bus"));
        assert_eq!(resolved.lake_root, "/srv/lp");
        assert_eq!(resolved.raw_group, EMBEDDED_RAW_GROUP);
        assert!(resolved.summary_header);
        assert!(resolved.binary_records, "binary on the embedded bus");
        let mut json = config.clone();
        json.bus.embedded.record_encoding = RecordEncoding::Json;
        assert!(!json.resolve().binary_records);
        config.bus.embedded.dir = Some(PathBuf::from("/fast/bus"));
        config.lake.root = Some("memory://".into());
        config.bus.kind = BusKind::Kafka;
        let resolved = config.resolve();
        assert_eq!(resolved.bus_dir, PathBuf::from("/fast/bus"));
        assert_eq!(resolved.lake_root, "memory://");
        assert_eq!(resolved.raw_group, "logpipe-stream");
        assert!(!resolved.summary_header, "off on Kafka unless asked for");
        assert!(!resolved.binary_records, "Kafka's topics stay JSON");
    }
}
