//! Producing without transactions (`bus.kafka.transactions = false`, and
//! the alerts a `logpipe stream` process publishes): one idempotent
//! producer, every record to the partition its key hashes to, resolved once
//! every delivery report arrived.

use std::sync::Arc;

use logpipe_config::KafkaBusConfig;
use logpipe_core::partition::partition_for_key;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::context::{LogContext, client_config};
use super::headers::kafka_headers;
use super::{KafkaBus, kafka_error};
use crate::metrics::bus_metrics;
use crate::{BusError, BusRecord, Result};

pub(super) fn new_producer(
    options: &KafkaBusConfig,
    context: &LogContext,
) -> Result<FutureProducer<LogContext>> {
    client_config(
        options,
        &[
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            (
                "message.timeout.ms",
                options.delivery_timeout.as_millis().to_string(),
            ),
            ("linger.ms", "5".into()),
            ("client.id", "logpipe-collector".into()),
        ],
    )
    .create_with_context(context.clone())
    .map_err(|e| kafka_error("cannot create the Kafka producer", e))
}

impl KafkaBus {
    pub(super) async fn produce(
        &self,
        producer: &Arc<FutureProducer<LogContext>>,
        topic: &str,
        partitions: u32,
        records: &[BusRecord],
    ) -> Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let partition = partition_for_key(&record.key, partitions) as i32;
            let mut message = FutureRecord::to(topic)
                .partition(partition)
                .key(&record.key[..])
                .payload(&record.value[..]);
            if !record.headers.is_empty() {
                message = message.headers(kafka_headers(&record.headers));
            }
            match producer.send_result(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(BusError::Busy(
                        "the Kafka producer queue is full (the brokers are slower than the input)"
                            .into(),
                    ));
                }
                Err((error, _)) => {
                    self.inner.replace_producer_if_broken(producer, &error);
                    return Err(BusError::Busy(format!(
                        "the Kafka producer refused: {error}"
                    )));
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    self.inner.replace_producer_if_broken(producer, &error);
                    return Err(BusError::Busy(format!(
                        "the Kafka brokers did not confirm the records within {:?}: {error}",
                        self.inner.options.delivery_timeout
                    )));
                }
                Err(_) => return Err(BusError::Closed),
            }
        }
        bus_metrics()
            .records_appended
            .add(&[topic], records.len() as u64);
        Ok(())
    }
}
