use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::config::registry::parse_options;
use crate::config::Job;
use crate::connectors::{ConnectorError, Target, WriteBatch, Written};
use crate::model::{key_text, Envelope, Item, Op, Record};

pub struct AmqpTarget {
    url: String,
    exchange: String,
    routing_key: String,
    job: String,
    system: String,
    children: Vec<String>,
    ignore_deletes: bool,
    /// The connection and its confirming channel, opened at the first
    /// write and again after a failure.
    channel: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

/// `[target] type = "amqp"`: its own keys.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpOptions {
    /// Checked and kept by ferry as the target's `url`.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    /// `""` (the default): the default exchange, where the routing key
    /// names the queue.
    #[serde(default)]
    exchange: String,
    /// May use `{job}` and `{op}` (default `{job}`).
    #[serde(default = "default_routing_key")]
    routing_key: String,
}

fn default_routing_key() -> String {
    "{job}".to_string()
}

impl AmqpTarget {
    pub fn new(job: &Job) -> Result<AmqpTarget, ConnectorError> {
        let url = job.target.url.clone().unwrap_or_default();
        let system = format!("amqp {}", crate::redact::url(&url));
        let amqp: AmqpOptions = parse_options(&job.target.options)
            .map_err(|p| ConnectorError::failed(&system, "options", p.message))?;
        Ok(AmqpTarget {
            url,
            exchange: amqp.exchange,
            routing_key: amqp.routing_key,
            job: job.name.clone(),
            system,
            children: job.children.keys().cloned().collect(),
            ignore_deletes: crate::rules::keeps_deleted_rows(job),
            channel: tokio::sync::Mutex::new(None),
        })
    }

    fn object(&self) -> String {
        format!("exchange `{}`", self.exchange)
    }

    fn err(&self, e: lapin::Error) -> ConnectorError {
        super::error(&self.system, &self.object(), e)
    }

    async fn open(&self) -> Result<(Connection, Channel), ConnectorError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| self.err(e))?;
        let channel = connection.create_channel().await.map_err(|e| self.err(e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.err(e))?;
        Ok((connection, channel))
    }

    fn routing_key(&self, op: Op) -> String {
        self.routing_key
            .replace("{job}", &self.job)
            .replace("{op}", op.as_str())
    }

    /// Publishes every item, then waits for every confirm.
    async fn publish(
        &self,
        channel: &Channel,
        pairs: &[(&Record, &Item)],
    ) -> Result<(), ConnectorError> {
        let mut confirms = Vec::with_capacity(pairs.len());
        for (record, item) in pairs {
            let payload =
                serde_json::to_vec(&Envelope::new(&self.job, item, record, &self.children))
                    .map_err(|e| ConnectorError::failed(&self.system, &self.object(), e))?;
            let mut headers = FieldTable::default();
            for (name, value) in [
                ("job", self.job.clone()),
                ("key", key_text(&item.key)),
                ("op", item.op.as_str().to_string()),
                ("hash", item.hash.clone()),
                ("version", item.version.to_string()),
            ] {
                headers.insert(
                    ShortString::from(name),
                    AMQPValue::LongString(LongString::from(value)),
                );
            }
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(format!("{}-{}", self.job, item.version)))
                .with_headers(headers);
            let confirm = channel
                .basic_publish(
                    &self.exchange,
                    &self.routing_key(item.op),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    properties,
                )
                .await
                .map_err(|e| self.err(e))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            match confirm.await.map_err(|e| self.err(e))? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(returned)) => {
                    return Err(ConnectorError::Failed {
                        system: self.system.clone(),
                        object: self.object(),
                        detail: format!(
                            "unroutable: no queue is bound for routing key `{}` ({})",
                            returned.delivery.routing_key, returned.reply_text
                        ),
                    })
                }
                Confirmation::Nack(_) => {
                    return Err(ConnectorError::Transient {
                        system: self.system.clone(),
                        object: self.object(),
                        detail: "the broker refused to take a message (nack)".to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Target for AmqpTarget {
    fn describe(&self) -> String {
        format!("{} {}", self.system, self.object())
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        let pairs = batch.changes(!self.ignore_deletes);
        if pairs.is_empty() {
            return Ok(Written::default());
        }
        let mut open = self.channel.lock().await;
        if open
            .as_ref()
            .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected())
        {
            *open = Some(self.open().await?);
        }
        // Set just above.
        let Some((_, channel)) = open.as_ref() else {
            return Ok(Written::default());
        };
        let result = self.publish(channel, &pairs).await;
        if matches!(result, Err(ConnectorError::Unreachable { .. })) {
            *open = None;
        }
        result.map(|()| Written::default())
    }
}
