use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

use serde::Deserialize;

use crate::config::registry::{parse_options, OptionProblem};
use crate::config::SourceConfig;
use crate::connectors::{ConnectorError, Received, RowStream, Scan, Source};

/// How long an empty queue is waited on before a run's detection ends.
const IDLE: Duration = Duration::from_millis(1000);
/// How long a batch waits for more once it has a message.
const GATHER: Duration = Duration::from_millis(50);

pub struct AmqpSource {
    url: String,
    queue: String,
    prefetch: u16,
    system: String,
    /// Opened at the first receive; closing it (the run ends) gives
    /// unacknowledged messages back to the queue.
    open: tokio::sync::Mutex<Option<Open>>,
}

/// `[source] type = "amqp"`: its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceOptions {
    /// Checked and kept by ferry as the source's `url`.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    /// The queue to consume.
    queue: String,
    /// Messages the broker sends ahead of their acks, 1 … 65535 (default:
    /// the batch size).
    prefetch: Option<u16>,
}

/// [`crate::config::registry::SourceSpec::options`] of the AMQP source.
pub fn check_source(options: &toml::Table) -> Vec<OptionProblem> {
    match parse_options::<AmqpSourceOptions>(options) {
        Err(p) if p.key.as_deref() == Some("prefetch") || p.message.contains("u16") => {
            vec![OptionProblem {
                key: Some("prefetch".into()),
                message: "`prefetch` must be between 1 and 65535".into(),
            }]
        }
        Err(p) => vec![p],
        Ok(o) if o.prefetch == Some(0) => vec![OptionProblem {
            key: Some("prefetch".into()),
            message: "`prefetch` = 0 must be between 1 and 65535".into(),
        }],
        Ok(_) => vec![],
    }
}

struct Open {
    _connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

impl AmqpSource {
    pub fn new(cfg: &SourceConfig, batch_size: usize) -> Result<AmqpSource, ConnectorError> {
        let url = cfg.url.clone().unwrap_or_default();
        let system = format!("amqp {}", crate::redact::url(&url));
        // Checked when the configuration loaded.
        let options = parse_options::<AmqpSourceOptions>(&cfg.options)
            .map_err(|p| ConnectorError::failed(&system, "config", p.message))?;
        Ok(AmqpSource {
            system,
            url,
            queue: options.queue,
            prefetch: options
                .prefetch
                .unwrap_or_else(|| batch_size.clamp(1, 65_535) as u16),
            open: tokio::sync::Mutex::new(None),
        })
    }

    fn object(&self) -> String {
        format!("queue `{}`", self.queue)
    }

    fn err(&self, e: lapin::Error) -> ConnectorError {
        super::error(&self.system, &self.object(), e)
    }

    async fn connect(&self) -> Result<Open, ConnectorError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| self.err(e))?;
        let channel = connection.create_channel().await.map_err(|e| self.err(e))?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| self.err(e))?;
        let consumer = channel
            .basic_consume(
                &self.queue,
                "ferry",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(Open {
            _connection: connection,
            channel,
            consumer,
        })
    }
}

#[async_trait]
impl Source for AmqpSource {
    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object())
    }

    async fn scan(&self, _scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        Err(ConnectorError::failed(
            &self.system,
            &self.object(),
            "a queue is read with strategy = \"outbox\"",
        ))
    }

    async fn receive(&self, max: usize) -> Result<Vec<Received>, ConnectorError> {
        let mut open = self.open.lock().await;
        if open.is_none() {
            *open = Some(self.connect().await?);
        }
        // Set just above.
        let Some(open) = open.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut wait = IDLE;
        while out.len() < max {
            match tokio::time::timeout(wait, open.consumer.next()).await {
                Ok(Some(delivery)) => {
                    let delivery = delivery.map_err(|e| self.err(e))?;
                    out.push(Received {
                        body: delivery.data,
                        ack: delivery.delivery_tag,
                    });
                    wait = GATHER;
                }
                Ok(None) => {
                    return Err(ConnectorError::Unreachable {
                        system: self.system.clone(),
                        detail: "the consumer was cancelled by the broker".to_string(),
                    })
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn acknowledge(&self, ack: u64) -> Result<(), ConnectorError> {
        let open = self.open.lock().await;
        let Some(open) = open.as_ref() else {
            return Ok(());
        };
        open.channel
            .basic_ack(ack, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| self.err(e))
    }
}
