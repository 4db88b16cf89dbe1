//! A streaming SQL job, as data: what `logpipe_query::stream_sql` makes of
//! a statement like
//!
//! ```sql
//! SELECT window_start, event_type,
//!        count(*) AS events,
//!        count(DISTINCT user_id) AS users,
//!        count(*) FILTER (WHERE event_type = 'PURCHASE') AS purchases
//! FROM events
//! GROUP BY tumble(timestamp, INTERVAL '1 minute'), event_type
//! ```
//!
//! and what the stream job (`logpipe_stream::sql_job`) runs: the source
//! table, the window, the keys, the aggregates and the filters, with a small
//! evaluator of the filters over a record's columns (named as in the lake:
//! `response_time_ms`, not `metadata.response_time_ms`).

use serde::{Deserialize, Serialize};

pub mod eval;

use crate::record::Record;
use crate::record::sample::Sample;

/// One value of a column or literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(v) => Some(*v as f64),
            Scalar::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a group key or distinct value: its text; `None` for
    /// NULL. Consumes the value: text moves instead of being copied (this
    /// runs per record and key).
    pub fn into_key_text(self) -> Option<String> {
        match self {
            Scalar::Null => None,
            Scalar::Bool(v) => Some(v.to_string()),
            Scalar::Int(v) => Some(v.to_string()),
            Scalar::Float(v) => Some(v.to_string()),
            Scalar::Text(v) => Some(v),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    const ALL: [CmpOp; 6] = [
        CmpOp::Gt,
        CmpOp::GtEq,
        CmpOp::Lt,
        CmpOp::LtEq,
        CmpOp::Eq,
        CmpOp::NotEq,
    ];

    /// Whether `left OP right` holds when `left` compares to `right` as
    /// `ordering`.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering.is_eq(),
            CmpOp::NotEq => ordering.is_ne(),
            CmpOp::Lt => ordering.is_lt(),
            CmpOp::LtEq => ordering.is_le(),
            CmpOp::Gt => ordering.is_gt(),
            CmpOp::GtEq => ordering.is_ge(),
        }
    }

    /// `>`, `>=`, `<`, `<=`, `=`, `!=`.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Eq => "=",
            CmpOp::NotEq => "!=",
        }
    }
}

/// A filter: comparisons of columns and literals, combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Column(String),
    Literal(Scalar),
    Compare(Box<Expr>, CmpOp, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Scalar>,
        negated: bool,
    },
    /// `CASE WHEN c THEN v … [ELSE v] END`: the first branch whose
    /// condition holds, else the ELSE value (NULL without one).
    Case {
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
}

impl Expr {
    /// The value for `row` (SQL's three-valued logic), by the compiled
    /// evaluator ([`eval::Program`]) over this expression's own columns.
    /// Jobs compile once ([`eval::Program::compile`]); this one-off form is
    /// for the tests of the semantics.
    #[cfg(test)]
    pub(crate) fn eval(&self, row: &dyn Row) -> Scalar {
        let mut names = Vec::new();
        self.columns(&mut names);
        names.sort_unstable();
        names.dedup();
        let slots = eval::Slots::new(names.into_iter().map(str::to_string).collect());
        let program = eval::Program::compile(self, &slots);
        let mut values = vec![Value::Null; slots.len()];
        slots.read(row, &mut values);
        program.eval(&values).to_scalar()
    }

    /// The columns this expression reads.
    pub fn columns<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Column(name) => out.push(name),
            Expr::Literal(_) => {}
            Expr::Compare(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.columns(out);
                b.columns(out);
            }
            Expr::Not(inner)
            | Expr::IsNull { expr: inner, .. }
            | Expr::InList { expr: inner, .. } => inner.columns(out),
            Expr::Case {
                branches,
                otherwise,
            } => {
                for (condition, value) in branches {
                    condition.columns(out);
                    value.columns(out);
                }
                if let Some(value) = otherwise {
                    value.columns(out);
                }
            }
        }
    }

    /// Whether `row` passes the filter (NULL does not).
    #[cfg(test)]
    pub(crate) fn holds(&self, row: &dyn Row) -> bool {
        self.eval(row) == Scalar::Bool(true)
    }
}

/// One column's value in one record, text borrowed: what a job reads per
/// record without copying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
}

impl<'a> Value<'a> {
    pub fn of_scalar(scalar: &'a Scalar) -> Value<'a> {
        match scalar {
            Scalar::Null => Value::Null,
            Scalar::Bool(v) => Value::Bool(*v),
            Scalar::Int(v) => Value::Int(*v),
            Scalar::Float(v) => Value::Float(*v),
            Scalar::Text(v) => Value::Text(v),
        }
    }

    fn of_text(text: Option<&'a str>) -> Value<'a> {
        text.map_or(Value::Null, Value::Text)
    }

    pub fn to_scalar(self) -> Scalar {
        match self {
            Value::Null => Scalar::Null,
            Value::Bool(v) => Scalar::Bool(v),
            Value::Int(v) => Scalar::Int(v),
            Value::Float(v) => Scalar::Float(v),
            Value::Text(v) => Scalar::Text(v.to_string()),
        }
    }

    pub fn as_f64(self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(v as f64),
            Value::Float(v) => Some(v),
            _ => None,
        }
    }

    /// SQL comparison: `None` when either side is NULL or the types differ.
    pub fn compare(self, other: Value<'_>) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }
}

/// A column of the lake's `logs` or `events` table, its name resolved
/// once when a job is compiled, so a record's field is found per record
/// by a jump, not by comparing the name with each column's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordColumn {
    Timestamp,
    Level,
    Service,
    Host,
    Message,
    RequestId,
    ResponseTimeMs,
    StatusCode,
    Endpoint,
    Method,
    EventId,
    UserId,
    SessionId,
    EventType,
    Page,
    Element,
    PositionX,
    PositionY,
    DeviceType,
    DeviceOs,
    DeviceBrowser,
    /// A name no record has: NULL in every record.
    Other,
}

impl RecordColumn {
    pub fn of(name: &str) -> RecordColumn {
        use RecordColumn::*;
        match name {
            "timestamp" => Timestamp,
            "level" => Level,
            "service" => Service,
            "host" => Host,
            "message" => Message,
            "request_id" => RequestId,
            "response_time_ms" => ResponseTimeMs,
            "status_code" => StatusCode,
            "endpoint" => Endpoint,
            "method" => Method,
            "event_id" => EventId,
            "user_id" => UserId,
            "session_id" => SessionId,
            "event_type" => EventType,
            "page" => Page,
            "element" => Element,
            "position_x" => PositionX,
            "position_y" => PositionY,
            "device_type" => DeviceType,
            "device_os" => DeviceOs,
            "device_browser" => DeviceBrowser,
            _ => Other,
        }
    }
}

/// A record's columns by their lake name.
pub trait Row {
    /// Column `column`, text borrowed; NULL for a column the record does
    /// not have.
    fn value(&self, column: &str) -> Value<'_>;

    /// [`Row::value`] of the column `name`, resolved to `column` when the
    /// job was compiled (records answer by `column`; other rows by name).
    #[inline]
    fn value_of(&self, column: RecordColumn, name: &str) -> Value<'_> {
        let _ = column;
        self.value(name)
    }
}

impl Row for Record {
    fn value(&self, column: &str) -> Value<'_> {
        self.value_of(RecordColumn::of(column), column)
    }

    #[inline]
    fn value_of(&self, column: RecordColumn, _: &str) -> Value<'_> {
        use RecordColumn as C;
        let float = |v: Option<f64>| v.map_or(Value::Null, Value::Float);
        match self {
            Record::Log(log) => match column {
                C::Timestamp => Value::Int(log.timestamp_micros),
                C::Level => Value::Text(log.level.as_str()),
                C::Service => Value::Text(&log.service),
                C::Host => Value::of_text(log.host.as_deref()),
                C::Message => Value::Text(&log.message),
                C::RequestId => Value::of_text(log.metadata.request_id.as_deref()),
                C::ResponseTimeMs => float(log.metadata.response_time_ms),
                C::StatusCode => log
                    .metadata
                    .status_code
                    .map_or(Value::Null, |v| Value::Int(i64::from(v))),
                C::Endpoint => Value::of_text(log.metadata.endpoint.as_deref()),
                C::Method => Value::of_text(log.metadata.method.as_deref()),
                _ => Value::Null,
            },
            Record::Event(event) => match column {
                C::Timestamp => Value::Int(event.timestamp_micros),
                C::EventId => Value::Text(&event.event_id),
                C::UserId => Value::Text(&event.user_id),
                C::SessionId => Value::of_text(event.session_id.as_deref()),
                C::EventType => Value::Text(event.event_type.as_str()),
                C::Page => Value::of_text(event.page.as_deref()),
                C::Element => Value::of_text(event.element.as_deref()),
                C::PositionX => float(event.position_x),
                C::PositionY => float(event.position_y),
                C::DeviceType => Value::of_text(event.device.device_type.as_deref()),
                C::DeviceOs => Value::of_text(event.device.os.as_deref()),
                C::DeviceBrowser => Value::of_text(event.device.browser.as_deref()),
                _ => Value::Null,
            },
        }
    }
}

/// The columns of a log a window needs, read without parsing the whole
/// record (`crate::record::sample`): what the built-in window job reads.
impl Row for Sample<'_> {
    fn value(&self, column: &str) -> Value<'_> {
        self.value_of(RecordColumn::of(column), column)
    }

    #[inline]
    fn value_of(&self, column: RecordColumn, _: &str) -> Value<'_> {
        match column {
            RecordColumn::Timestamp => Value::Int(self.timestamp_micros),
            RecordColumn::Level => Value::Text(self.level.as_str()),
            RecordColumn::Service => Value::Text(&self.service),
            RecordColumn::ResponseTimeMs => self.response_time_ms.map_or(Value::Null, Value::Float),
            RecordColumn::StatusCode => self
                .status_code
                .map_or(Value::Null, |v| Value::Int(i64::from(v))),
            _ => Value::Null,
        }
    }
}

/// The columns a [`Sample`] has: a job reading only these can run on
/// samples.
pub const SAMPLE_COLUMNS: [&str; 5] = [
    "timestamp",
    "level",
    "service",
    "response_time_ms",
    "status_code",
];

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum AggregateKind {
    /// `count(*)` (no argument) or `count(col)` (non-NULL values).
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    /// `approx_percentile_cont(col, q)`: relative accuracy 1 %.
    Percentile(f64),
}

/// One aggregate column of the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub name: String,
    pub kind: AggregateKind,
    /// The column aggregated; `None` for `count(*)` or an expression.
    pub column: Option<String>,
    /// The expression aggregated when it is not a plain column
    /// (`avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument: Option<Expr>,
    /// `FILTER (WHERE …)`: only rows passing it count.
    pub filter: Option<Expr>,
    /// Whether the result is a whole number (counts, and sums of integer
    /// columns); else a double.
    pub integer: bool,
}

/// One output column, in SELECT order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputColumn {
    WindowStart(String),
    WindowEnd(String),
    /// A GROUP BY key (its index in `keys`), output as text.
    Key(usize),
    Aggregate(usize),
    /// An aggregate of the coarser grouping joined to each row (its index
    /// in `rollup.aggregates`).
    Rollup(usize),
}

/// Which lake table (and so which topic) a job reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamSource {
    Logs,
    Events,
}

impl StreamSource {
    pub fn table(self) -> &'static str {
        match self {
            StreamSource::Logs => "logs",
            StreamSource::Events => "events",
        }
    }

    /// The columns a job may name, and whether each is a whole number.
    pub fn columns(self) -> &'static [(&'static str, ColumnType)] {
        use ColumnType::{Float, Int, Text};
        match self {
            StreamSource::Logs => &[
                ("timestamp", Int),
                ("level", Text),
                ("service", Text),
                ("host", Text),
                ("message", Text),
                ("request_id", Text),
                ("response_time_ms", Float),
                ("status_code", Int),
                ("endpoint", Text),
                ("method", Text),
            ],
            StreamSource::Events => &[
                ("timestamp", Int),
                ("event_id", Text),
                ("user_id", Text),
                ("session_id", Text),
                ("event_type", Text),
                ("page", Text),
                ("element", Text),
                ("position_x", Float),
                ("position_y", Float),
                ("device_type", Text),
                ("device_os", Text),
                ("device_browser", Text),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    Int,
    Float,
    Text,
}

/// A windowed aggregation over a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamSpec {
    pub source: StreamSource,
    /// Window length; `slide_micros < size_micros` makes hopping windows.
    pub size_micros: i64,
    pub slide_micros: i64,
    pub keys: Vec<String>,
    pub aggregates: Vec<Aggregate>,
    pub filter: Option<Expr>,
    pub output: Vec<OutputColumn>,
    /// A second, coarser grouping of the same records joined to each row
    /// (a `WITH` of two groupings, docs/jobs.md): the built-in window job's
    /// rows are one per (window, service, level) and carry the figures of
    /// the whole service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup: Option<Rollup>,
}

/// The coarser grouping of a two-level job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Its keys, as indices into the job's keys (a subset of them).
    pub keys: Vec<usize>,
    pub aggregates: Vec<Aggregate>,
}

impl StreamSpec {
    /// The windows (their starts, ascending) a record at `micros` falls
    /// in: one for a tumbling window, `size / slide` for a hopping one.
    /// Nothing is allocated, so the hot path takes it per record.
    pub fn windows_of(&self, micros: i64) -> impl Iterator<Item = i64> + Clone + use<> {
        let slide = self.slide_micros.max(1);
        let last = micros.div_euclid(slide) * slide;
        // Starts are last, last - slide, … while start > micros - size.
        let room = last - (micros - self.size_micros);
        let count = if room <= 0 {
            0
        } else if slide >= self.size_micros {
            // Tumbling: one window, no division per record.
            1
        } else {
            (room - 1) / slide + 1
        };
        let first = last - (count - 1).max(0) * slide;
        (0..count).map(move |i| first + i * slide)
    }

    /// The name of output column `column`.
    pub fn column_name(&self, column: &OutputColumn) -> String {
        match column {
            OutputColumn::WindowStart(name) | OutputColumn::WindowEnd(name) => name.clone(),
            OutputColumn::Key(index) => self.keys[*index].clone(),
            OutputColumn::Aggregate(index) => self.aggregates[*index].name.clone(),
            OutputColumn::Rollup(index) => self.rollup_aggregates()[*index].name.clone(),
        }
    }

    /// The coarser grouping's aggregates (none for a one-level job).
    pub fn rollup_aggregates(&self) -> &[Aggregate] {
        self.rollup.as_ref().map_or(&[], |r| &r.aggregates)
    }

    /// Every column of the source the job reads, once each.
    pub fn columns_read(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec!["timestamp"];
        out.extend(self.keys.iter().map(String::as_str));
        for aggregate in self.aggregates.iter().chain(self.rollup_aggregates()) {
            out.extend(aggregate.column.as_deref());
            if let Some(argument) = &aggregate.argument {
                argument.columns(&mut out);
            }
            if let Some(filter) = &aggregate.filter {
                filter.columns(&mut out);
            }
        }
        if let Some(filter) = &self.filter {
            filter.columns(&mut out);
        }
        let mut seen = Vec::new();
        out.retain(|c| {
            let new = !seen.contains(c);
            seen.push(*c);
            new
        });
        out
    }
}

/// An alert rule over a streaming job's rows, from a header line
///
/// ```text
/// -- alert: ManyPurchases when purchases > 100 for 3 windows severity critical
/// ```
///
/// Per group (the job's keys), with the built-in detector's hysteresis: it
/// fires once after `windows` consecutive windows whose `column` passes the
/// comparison, and resolves once after `windows` consecutive windows that
/// do not (a window with no row for the group counts as not passing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub name: String,
    /// An aggregate column of the job's output.
    pub column: String,
    pub op: CmpOp,
    pub threshold: f64,
    pub windows: u32,
    /// `warning` (default) or `critical`.
    pub severity: String,
}

impl AlertRule {
    /// Parses `NAME when COLUMN OP NUMBER [for N window(s)] [severity S]`.
    /// On error: the 0-based byte offset in `text` of the part that is
    /// wrong, and what is expected there.
    pub fn parse(text: &str) -> Result<AlertRule, (usize, String)> {
        const FORM: &str =
            "an alert reads NAME when COLUMN > NUMBER [for N windows] [severity warning|critical]";
        let words: Vec<(usize, &str)> = text
            .split_whitespace()
            .map(|word| (word.as_ptr() as usize - text.as_ptr() as usize, word))
            .collect();
        let at = |i: usize| words.get(i).map_or(text.len(), |(offset, _)| *offset);
        let plain = |word: &str| {
            !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let word = |i: usize| words.get(i).map(|(_, w)| *w);
        let name = word(0)
            .filter(|w| plain(w))
            .ok_or((at(0), FORM.to_string()))?;
        if word(1) != Some("when") {
            return Err((
                at(1),
                format!("expected `when` after the alert's name; {FORM}"),
            ));
        }
        let column = word(2).filter(|w| plain(w)).ok_or((
            at(2),
            format!("expected the column the alert watches; {FORM}"),
        ))?;
        let op = word(3)
            .map(|text| if text == "<>" { "!=" } else { text })
            .and_then(|text| CmpOp::ALL.into_iter().find(|op| op.as_str() == text))
            .ok_or((at(3), format!("expected one of > >= < <= = != ; {FORM}")))?;
        let threshold: f64 = word(4)
            .and_then(|w| w.parse().ok())
            .filter(|v: &f64| v.is_finite())
            .ok_or((at(4), format!("expected a number to compare with; {FORM}")))?;
        let mut rule = AlertRule {
            name: name.to_string(),
            column: column.to_string(),
            op,
            threshold,
            windows: 1,
            severity: "warning".to_string(),
        };
        let mut i = 5;
        while let Some(next) = word(i) {
            match next {
                "for" => {
                    rule.windows = word(i + 1)
                        .and_then(|w| w.parse().ok())
                        .filter(|n: &u32| (1..=1000).contains(n))
                        .ok_or((
                            at(i + 1),
                            "expected a number of windows from 1 to 1000 after `for`".to_string(),
                        ))?;
                    if !matches!(word(i + 2), Some("window" | "windows")) {
                        return Err((at(i + 2), "expected `windows` after the number".to_string()));
                    }
                    i += 3;
                }
                "severity" => {
                    rule.severity = word(i + 1)
                        .filter(|w| matches!(*w, "warning" | "critical"))
                        .ok_or((at(i + 1), "severity is warning or critical".to_string()))?
                        .to_string();
                    i += 2;
                }
                _ => return Err((at(i), format!("unexpected {next:?}; {FORM}"))),
            }
        }
        Ok(rule)
    }

    /// Whether `value` is anomalous under this rule (never for NaN).
    pub fn passes(&self, value: f64) -> bool {
        value
            .partial_cmp(&self.threshold)
            .is_some_and(|ordering| self.op.holds(ordering))
    }

    /// `purchases > 100`.
    pub fn condition(&self) -> String {
        format!("{} {} {}", self.column, self.op.as_str(), self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fields(Vec<(&'static str, Scalar)>);

    impl Row for Fields {
        fn value(&self, column: &str) -> Value<'_> {
            self.0
                .iter()
                .find(|(name, _)| *name == column)
                .map_or(Value::Null, |(_, v)| Value::of_scalar(v))
        }
    }

    /// Every column of the `logs` and `events` tables is a record column
    /// by its name (a misspelt name in `RecordColumn::of` would read NULL),
    /// and a record with every field set answers each one.
    #[test]
    fn every_lake_column_resolves_and_reads() {
        use crate::record::ValidationLimits;
        let limits = ValidationLimits::now();
        let log = Record::Log(
            crate::record::LogRecord::parse(
                r#"{"timestamp": 1736645166.5, "level": "INFO", "service": "api", "host": "h",
                    "message": "m", "metadata": {"request_id": "r", "response_time_ms": 1.5,
                    "status_code": 200, "endpoint": "/", "method": "GET"}}"#,
                &limits,
            )
            .unwrap(),
        );
        let event = Record::Event(
            crate::record::ActivityEvent::parse(
                r#"{"event_id": "e", "timestamp": 1736645166.5, "user_id": "u",
                    "session_id": "s", "event_type": "CLICK", "event_data": {"page": "/p",
                    "element": "b", "position": {"x": 1.0, "y": 2.0}, "k": 1},
                    "device": {"type": "mobile", "os": "ios", "browser": "safari"}}"#,
                &limits,
            )
            .unwrap(),
        );
        for (record, schema, not_read) in [
            (&log, crate::tables::logs::schema(), ["metadata_extra"]),
            (&event, crate::tables::events::schema(), ["event_data"]),
        ] {
            for field in schema.fields() {
                let name = field.name().as_str();
                let column = RecordColumn::of(name);
                if not_read.contains(&name) {
                    assert_eq!(column, RecordColumn::Other, "{name}");
                    continue;
                }
                assert_ne!(column, RecordColumn::Other, "{name}");
                assert_ne!(record.value(name), Value::Null, "{name}");
                assert_eq!(record.value_of(column, name), record.value(name), "{name}");
            }
        }
    }

    #[test]
    fn filters_follow_sql_three_valued_logic() {
        let row = Fields(vec![
            ("level", Scalar::Text("ERROR".into())),
            ("status_code", Scalar::Int(503)),
        ]);
        let column = |name: &str| Box::new(Expr::Column(name.to_string()));
        let literal = |v: Scalar| Box::new(Expr::Literal(v));
        let error = Expr::Compare(
            column("level"),
            CmpOp::Eq,
            literal(Scalar::Text("ERROR".into())),
        );
        let server = Expr::Compare(
            column("status_code"),
            CmpOp::GtEq,
            literal(Scalar::Float(500.0)),
        );
        let missing = Expr::Compare(
            column("endpoint"),
            CmpOp::Eq,
            literal(Scalar::Text("/".into())),
        );
        assert!(error.holds(&row));
        assert!(Expr::And(Box::new(error.clone()), Box::new(server)).holds(&row));
        assert!(!missing.holds(&row));
        assert_eq!(missing.eval(&row), Scalar::Null);
        assert!(!Expr::Not(Box::new(missing.clone())).holds(&row));
        assert!(Expr::Or(Box::new(missing), Box::new(error)).holds(&row));
        let listed = Expr::InList {
            expr: column("level"),
            list: vec![Scalar::Text("WARN".into()), Scalar::Text("ERROR".into())],
            negated: false,
        };
        assert!(listed.holds(&row));
        assert!(
            Expr::IsNull {
                expr: column("endpoint"),
                negated: false
            }
            .holds(&row)
        );
    }

    #[test]
    fn a_record_falls_in_one_tumbling_and_size_over_slide_hopping_windows() {
        let mut spec = StreamSpec {
            source: StreamSource::Logs,
            size_micros: 60,
            slide_micros: 60,
            keys: vec![],
            aggregates: vec![],
            filter: None,
            output: vec![],
            rollup: None,
        };
        assert_eq!(spec.windows_of(125).collect::<Vec<_>>(), [120]);
        assert_eq!(spec.windows_of(-5).collect::<Vec<_>>(), [-60]);
        spec.slide_micros = 20;
        assert_eq!(spec.windows_of(125).collect::<Vec<_>>(), [80, 100, 120]);
        assert_eq!(spec.windows_of(120).collect::<Vec<_>>(), [80, 100, 120]);
    }

    #[test]
    fn alert_rules_parse_and_say_where_they_are_wrong() {
        let rule =
            AlertRule::parse("ManyPurchases when purchases >= 100 for 3 windows severity critical")
                .unwrap();
        assert_eq!(rule.name, "ManyPurchases");
        assert_eq!(rule.column, "purchases");
        assert_eq!(rule.op, CmpOp::GtEq);
        assert_eq!(rule.threshold, 100.0);
        assert_eq!(rule.windows, 3);
        assert_eq!(rule.severity, "critical");
        assert!(rule.passes(100.0) && !rule.passes(99.5));
        let simple = AlertRule::parse("Slow when p95 > 800.5").unwrap();
        assert_eq!((simple.windows, simple.severity.as_str()), (1, "warning"));
        let text = "Slow when p95 >> 800";
        let (at, why) = AlertRule::parse(text).unwrap_err();
        assert_eq!(&text[at..], ">> 800");
        assert!(why.contains("expected one of"), "{why}");
        let text = "Slow when p95 > 800 for three windows";
        assert_eq!(
            &text[AlertRule::parse(text).unwrap_err().0..],
            "three windows"
        );
        let text = "Slow when p95 > 800 severity page";
        assert_eq!(&text[AlertRule::parse(text).unwrap_err().0..], "page");
        assert_eq!(AlertRule::parse("Slow p95 > 1").unwrap_err().0, 5);
        assert_eq!(AlertRule::parse("Slow when p95 >").unwrap_err().0, 15);
    }
}
