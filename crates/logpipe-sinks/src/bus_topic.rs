//! Alerts published on a bus topic (`alerts.realtime`), keyed by service,
//! as [`AlertMessage`] JSON: any Kafka consumer can follow them.
//! Best effort: the lake table `alerts` holds every alert anyway.

use std::sync::Arc;

use logpipe_bus::{Bus, BusRecord};
use logpipe_core::tables::AlertMessage;

use crate::{Delivery, SinkError, StepOutput, StepSink};

pub struct BusTopicSink {
    bus: Arc<dyn Bus>,
    topic: String,
}

impl BusTopicSink {
    pub fn new(bus: Arc<dyn Bus>, topic: impl Into<String>) -> BusTopicSink {
        BusTopicSink {
            bus,
            topic: topic.into(),
        }
    }
}

fn record(message: &AlertMessage) -> BusRecord {
    BusRecord::new(
        message.service.clone().into_bytes(),
        serde_json::to_vec(message).unwrap_or_default(),
    )
}

#[async_trait::async_trait]
impl StepSink for BusTopicSink {
    fn name(&self) -> &'static str {
        "alerts topic"
    }

    fn delivery(&self) -> Delivery {
        Delivery::BestEffort
    }

    async fn deliver(&self, output: &StepOutput<'_>) -> Result<(), SinkError> {
        if output.alerts.is_empty() {
            return Ok(());
        }
        let records = output.alerts.iter().map(record).collect();
        self.bus.append(&self.topic, records).await?;
        Ok(())
    }
}
