//! The reports and their periods: which SQL file, which days, where the
//! output goes.

use chrono::{Datelike, Duration as Days, NaiveDate};
use logpipe_core::tables::{DAILY_REPORT, SERVICE_ANALYSIS, TableDef, WEEKLY_ANALYSIS};

use crate::error::{BatchError, Result};

/// Which report, for which period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Daily {
        date: NaiveDate,
    },
    /// The ISO week starting on `monday`.
    Weekly {
        monday: NaiveDate,
    },
    /// Whole UTC days `start..=end`.
    Service {
        start: NaiveDate,
        end: NaiveDate,
    },
}

impl Report {
    /// The ISO week (`2026-W02`) containing `date`.
    pub fn weekly_of(date: NaiveDate) -> Report {
        let monday = date - Days::days(i64::from(date.weekday().num_days_from_monday()));
        Report::Weekly { monday }
    }

    /// Parses `YYYY-Www` (ISO week).
    pub fn parse_week(text: &str) -> Result<Report> {
        let bad = || BatchError::BadWeek(text.to_string());
        let (year, week) = text.split_once("-W").ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let week: u32 = week.parse().map_err(|_| bad())?;
        let monday =
            NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).ok_or_else(bad)?;
        Ok(Report::Weekly { monday })
    }

    /// The report's lake table (its name is the job's).
    pub fn table(&self) -> &'static TableDef {
        match self {
            Report::Daily { .. } => &DAILY_REPORT,
            Report::Weekly { .. } => &WEEKLY_ANALYSIS,
            Report::Service { .. } => &SERVICE_ANALYSIS,
        }
    }

    /// The job name: the report's table.
    pub fn job(&self) -> &'static str {
        self.table().name
    }

    fn sql_template(&self) -> &'static str {
        match self {
            Report::Daily { .. } => include_str!("../sql/daily_report.sql"),
            Report::Weekly { .. } => include_str!("../sql/weekly_analysis.sql"),
            Report::Service { .. } => include_str!("../sql/service_analysis.sql"),
        }
    }

    /// First and last day covered.
    fn days(&self) -> (NaiveDate, NaiveDate) {
        match self {
            Report::Daily { date } => (*date, *date),
            Report::Weekly { monday } => (*monday, *monday + Days::days(6)),
            Report::Service { start, end } => (*start, *end),
        }
    }

    /// What the run is for, as written in `job_runs.target`.
    pub fn target(&self) -> String {
        match self {
            Report::Daily { date } => date.to_string(),
            Report::Weekly { monday } => {
                let week = monday.iso_week();
                format!("{}-W{:02}", week.year(), week.week())
            }
            Report::Service { start, end } => format!("{start}..{end}"),
        }
    }

    /// Output directory under the lake root (Hive-style partitions, named
    /// by the table's partition columns).
    pub fn output_dir(&self) -> String {
        let values = match self {
            Report::Daily { date } => vec![date.to_string()],
            Report::Weekly { .. } => vec![self.target()],
            Report::Service { start, end } => vec![start.to_string(), end.to_string()],
        };
        let table = self.table();
        let mut dir = table.dir.to_string();
        for (column, value) in table.partitioning.columns().iter().zip(values) {
            dir.push_str(&format!("/{column}={value}"));
        }
        dir
    }

    /// PostgreSQL: the period column and its value.
    pub(crate) fn period_column(&self) -> (&'static str, String) {
        match self {
            Report::Daily { date } => ("date", date.to_string()),
            Report::Weekly { .. } => ("week", self.target()),
            Report::Service { .. } => ("period", self.target()),
        }
    }

    /// The report's SQL with the period filled in.
    pub fn sql(&self) -> String {
        let (first, last) = self.days();
        let ymd = |d: NaiveDate| d.year() * 10000 + d.month() as i32 * 100 + d.day() as i32;
        self.sql_template()
            .replace("{year}", &first.year().to_string())
            .replace("{month}", &first.month().to_string())
            .replace("{day}", &first.day().to_string())
            .replace("{start_ymd}", &ymd(first).to_string())
            .replace("{end_ymd}", &ymd(last).to_string())
            .replace("{start}", &format!("{first}T00:00:00Z"))
            .replace("{end}", &format!("{}T00:00:00Z", last + Days::days(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_paths() {
        let date = NaiveDate::from_ymd_opt(2026, 1, 11).unwrap();
        let daily = Report::Daily { date };
        assert_eq!(daily.output_dir(), "reports/daily/date=2026-01-11");
        assert!(
            daily
                .sql()
                .contains("year = 2026 AND month = 1 AND day = 11")
        );
        // 2026-01-11 is a Sunday: ISO week 2 runs Monday 5th to Sunday 11th.
        let weekly = Report::weekly_of(date);
        assert_eq!(weekly.target(), "2026-W02");
        assert_eq!(weekly, Report::parse_week("2026-W02").unwrap());
        assert!(weekly.sql().contains("BETWEEN 20260105 AND 20260111"));
        assert!(
            weekly
                .sql()
                .contains("timestamp < TIMESTAMP '2026-01-12T00:00:00Z'")
        );
        assert!(Report::parse_week("2026-02").is_err());
        assert!(Report::parse_week("2026-W54").is_err());
    }
}
