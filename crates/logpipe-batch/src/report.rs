//! One run of a job: the job and the period it covers.

use std::sync::Arc;

use chrono::NaiveDate;
use logpipe_core::tables::TableDef;

use crate::job::{JobDef, Period};

/// A job for one period.
#[derive(Debug, Clone)]
pub struct Report {
    pub job: Arc<JobDef>,
    pub period: Period,
}

impl PartialEq for Report {
    fn eq(&self, other: &Self) -> bool {
        self.job.name == other.job.name && self.period == other.period
    }
}

impl Report {
    pub fn new(job: Arc<JobDef>, period: Period) -> Report {
        Report { job, period }
    }

    /// The job's output table.
    pub fn table(&self) -> &'static TableDef {
        self.job.table
    }

    /// The job's name (its table's).
    pub fn job(&self) -> &'static str {
        self.job.name
    }

    /// What the run is for, as written in `job_runs.target`.
    pub fn target(&self) -> String {
        self.period.target()
    }

    /// The first day covered.
    pub fn first_day(&self) -> NaiveDate {
        self.period.days().0
    }

    /// Output directory under the lake root (Hive-style partitions).
    pub fn output_dir(&self) -> String {
        self.job.output_dir(&self.period)
    }

    /// PostgreSQL: the period column and its value.
    pub(crate) fn period_column(&self) -> (&'static str, String) {
        self.job.period_column(&self.period)
    }

    /// The job's SQL with the period filled in.
    pub fn sql(&self) -> String {
        self.job.sql(&self.period)
    }
}
