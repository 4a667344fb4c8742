use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_trait::async_trait;
use futures::StreamExt;

use super::{connect_error, system, unreachable};
use serde::Deserialize;

use crate::config::registry::parse_options;
use crate::config::SourceConfig;
use crate::connectors::{ConnectorError, Received, RowStream, Scan, Source};

/// How long a fetch waits on an empty stream before a run's detection ends.
const IDLE: Duration = Duration::from_millis(1000);

pub struct NatsSource {
    url: String,
    stream: String,
    consumer: String,
    subject: Option<String>,
    system: String,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    consumer: Option<PullConsumer>,
    /// Received and not yet acknowledged, by their ack number.
    pending: Vec<(u64, async_nats::jetstream::Message)>,
    next: u64,
}

/// `[source] type = "nats"`: its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceOptions {
    /// Checked and kept by ferry as the source's `url`.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    /// The JetStream stream.
    stream: String,
    /// Its durable pull consumer, created with explicit acks if missing.
    consumer: String,
    /// A subject filter.
    subject: Option<String>,
}

impl NatsSource {
    pub fn new(cfg: &SourceConfig) -> Result<NatsSource, ConnectorError> {
        let url = cfg.url.clone().unwrap_or_default();
        // Checked when the configuration loaded.
        let options = parse_options::<NatsSourceOptions>(&cfg.options)
            .map_err(|p| ConnectorError::failed(&system(&url), "config", p.message))?;
        Ok(NatsSource {
            system: system(&url),
            url,
            stream: options.stream,
            consumer: options.consumer,
            subject: options.subject,
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    fn object(&self) -> String {
        format!("stream `{}` consumer `{}`", self.stream, self.consumer)
    }

    /// The durable pull consumer, created on first use.
    async fn consumer(&self) -> Result<PullConsumer, ConnectorError> {
        let client = async_nats::connect(&self.url)
            .await
            .map_err(|e| connect_error(&self.system, e))?;
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream.get_stream(&self.stream).await.map_err(|e| {
            ConnectorError::MissingObject {
                system: self.system.clone(),
                object: self.object(),
                detail: e.to_string(),
            }
        })?;
        stream
            .get_or_create_consumer(
                &self.consumer,
                pull::Config {
                    durable_name: Some(self.consumer.clone()),
                    filter_subject: self.subject.clone().unwrap_or_default(),
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unreachable(&self.system, e))
    }
}

#[async_trait]
impl Source for NatsSource {
    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object())
    }

    async fn scan(&self, _scan: Scan<'_>) -> Result<RowStream, ConnectorError> {
        Err(ConnectorError::failed(
            &self.system,
            &self.object(),
            "a stream is read with strategy = \"outbox\"",
        ))
    }

    async fn receive(&self, max: usize) -> Result<Vec<Received>, ConnectorError> {
        let mut state = self.state.lock().await;
        if state.consumer.is_none() {
            state.consumer = Some(self.consumer().await?);
        }
        // Set just above.
        let Some(consumer) = state.consumer.clone() else {
            return Ok(Vec::new());
        };
        let mut messages = consumer
            .fetch()
            .max_messages(max)
            .expires(IDLE)
            .messages()
            .await
            .map_err(|e| unreachable(&self.system, e))?;
        let mut out = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| unreachable(&self.system, e))?;
            state.next += 1;
            let ack = state.next;
            out.push(Received {
                body: message.payload.to_vec(),
                ack,
            });
            state.pending.push((ack, message));
        }
        Ok(out)
    }

    async fn acknowledge(&self, ack: u64) -> Result<(), ConnectorError> {
        let mut state = self.state.lock().await;
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pending)
            .into_iter()
            .partition(|(n, _)| *n <= ack);
        state.pending = rest;
        for (_, message) in done {
            message
                .double_ack()
                .await
                .map_err(|e| unreachable(&self.system, e))?;
        }
        Ok(())
    }
}
