//! A request body to bus records: split the body (a JSON array or NDJSON),
//! validate each record, and give each valid one its bus form (binary or
//! canonical JSON, key, and the headers: window summary, record id).

use logpipe_bus::{BusRecord, HeadersBuilder};
use logpipe_core::dedup::{self, RecordId};
use logpipe_core::record::summary::{self, LogSummary};
use logpipe_core::record::view::RecordView;
use logpipe_core::record::{self, RecordKind, ValidationLimits, binary};

/// What a record carries on the bus besides its key.
#[derive(Debug, Clone, Copy)]
pub(super) struct BusForm {
    /// A log record's window fields as a header.
    pub(super) summaries: bool,
    /// The value in binary form, else canonical JSON.
    pub(super) binary: bool,
}

/// Valid records ready for the bus, and why the others were refused.
pub(super) struct ParsedBatch {
    pub(super) records: Vec<BusRecord>,
    pub(super) rejected: Vec<(usize, String)>,
}

/// `request`: the request id when the client sent an `Idempotency-Key`.
pub(super) fn parse_batch(
    kind: RecordKind,
    body: &[u8],
    limits: &ValidationLimits,
    form: BusForm,
    request: Option<u128>,
) -> Result<ParsedBatch, record::BodyError> {
    // Each record goes to its bus form as it is read, from a view of the
    // body: no owned record in between.
    let parsed = record::parse_body_with(kind, body, limits, |index, parsed| {
        let id = request.map(|request| RecordId {
            request,
            index: index as u32,
        });
        parsed
            .map(|record| bus_record(&record, form, id))
            .map_err(|error| (index, error.to_string()))
    })?;
    let mut records = Vec::with_capacity(parsed.len());
    let mut rejected = Vec::new();
    for parsed in parsed {
        match parsed {
            Ok(record) => records.push(record),
            Err(refused) => rejected.push(refused),
        }
    }
    Ok(ParsedBatch { records, rejected })
}

/// The bus form of a valid record. With `form.summaries`, a log record
/// also carries its window fields as a header; with `id`, the record
/// carries its id (see [`dedup`]).
pub(super) fn bus_record(
    record: &RecordView<'_>,
    form: BusForm,
    id: Option<RecordId>,
) -> BusRecord {
    let value = if form.binary {
        binary::encode_view(record)
    } else {
        record.to_json()
    };
    let mut out = BusRecord::new(record.key(), value);
    let summary = match (record, form.summaries) {
        (RecordView::Log(log), true) => Some(LogSummary::of_view(log)),
        _ => None,
    };
    if summary.is_none() && id.is_none() {
        return out;
    }
    let capacity = summary
        .as_ref()
        .map_or(0, |s| 8 + summary::HEADER.len() + s.encoded_len())
        + id.map_or(0, |_| 8 + dedup::HEADER.len() + dedup::ENCODED_LEN);
    let mut headers = HeadersBuilder::with_capacity(capacity);
    if let Some(summary) = &summary {
        headers = headers.push(summary::HEADER, summary.encoded_len(), |block| {
            summary.encode_into(block)
        });
    }
    if let Some(id) = id {
        headers = headers.push(dedup::HEADER, dedup::ENCODED_LEN, |block| {
            block.extend_from_slice(&id.encode())
        });
    }
    out.headers = headers.finish();
    out
}
